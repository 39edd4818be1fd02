//! The sled backend: one tree per record kind, JSON values, big-endian keys so
//! a study's trials and a trial's metrics are contiguous and ordered.
//!
//! Read-modify-write verbs hold one mutex: sled answers in microseconds, so
//! serialising them costs little and makes each verb trivially atomic (sled's
//! transactions cannot scan, and `claim_trial` must). Metric appends do not
//! need it: compare-and-swap on the (trial, attempt, step) key is atomic.

use super::rules;
use super::*;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

pub struct SledStorage {
    db: ::sled::Db,
    studies: ::sled::Tree,
    trials: ::sled::Tree,
    metrics: ::sled::Tree,
    /// Index of waiting trials: (study, number) -> (), so a claim does not
    /// scan every trial of a long study.
    waiting: ::sled::Tree,
    write: Mutex<()>,
}

fn backend(e: ::sled::Error) -> StorageError {
    StorageError::Backend(e.to_string())
}

fn study_key(id: StudyId) -> [u8; 8] {
    id.0.to_be_bytes()
}

fn trial_key(id: TrialId) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&id.study.0.to_be_bytes());
    k[8..].copy_from_slice(&id.number.to_be_bytes());
    k
}

fn trial_id_of(key: &[u8]) -> Result<TrialId> {
    let study = key
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .ok_or_else(|| StorageError::Corrupt("short trial key".into()))?;
    let number = key
        .get(8..12)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .ok_or_else(|| StorageError::Corrupt("short trial key".into()))?;
    Ok(TrialId {
        study: StudyId(u64::from_be_bytes(study)),
        number: u32::from_be_bytes(number),
    })
}

fn metric_key(id: TrialId, attempt: u32, step: u32) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..12].copy_from_slice(&trial_key(id));
    k[12..16].copy_from_slice(&attempt.to_be_bytes());
    k[16..].copy_from_slice(&step.to_be_bytes());
    k
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StorageError::Corrupt(format!("{what}: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StorageError::Backend(format!("encoding: {e}")))
}

impl SledStorage {
    /// Opens (or creates) the store in `path`. Fails with a clear error when
    /// another process holds it or it was written by an incompatible release.
    pub fn open(path: &Path) -> Result<Self> {
        let db = ::sled::Config::new().path(path).open().map_err(|e| {
            StorageError::Backend(format!(
                "cannot open data dir {}: {e} (is another hpo server using it?)",
                path.display()
            ))
        })?;
        let meta = db.open_tree("meta").map_err(backend)?;
        match meta.get("schema").map_err(backend)? {
            Some(v) => {
                let found: u32 = decode(&v, "schema version")?;
                if found != SCHEMA_VERSION {
                    return Err(StorageError::Corrupt(format!(
                        "data dir {} holds schema version {found}; this hpo reads version {SCHEMA_VERSION}",
                        path.display()
                    )));
                }
            }
            None => {
                meta.insert("schema", encode(&SCHEMA_VERSION)?)
                    .map_err(backend)?;
            }
        }
        let store = SledStorage {
            studies: db.open_tree("studies").map_err(backend)?,
            trials: db.open_tree("trials").map_err(backend)?,
            metrics: db.open_tree("metrics").map_err(backend)?,
            waiting: db.open_tree("waiting").map_err(backend)?,
            db,
            write: Mutex::new(()),
        };
        store.rebuild_waiting_index()?;
        Ok(store)
    }

    /// The waiting index is derived data: a crash between writing a trial and
    /// its index entry must not leave them disagreeing, so it is rebuilt from
    /// the trial records at every open (one scan, milliseconds).
    fn rebuild_waiting_index(&self) -> Result<()> {
        self.waiting.clear().map_err(backend)?;
        for r in self.trials.iter() {
            let (k, v) = r.map_err(backend)?;
            let t: TrialRecord = decode(&v, "trial")?;
            if t.state == TrialState::Waiting {
                self.waiting.insert(k, &[]).map_err(backend)?;
            }
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn load_trial(&self, id: TrialId) -> Result<TrialRecord> {
        match self.trials.get(trial_key(id)).map_err(backend)? {
            Some(v) => decode(&v, "trial"),
            None => Err(StorageError::NotFound(format!("trial {id}"))),
        }
    }

    fn save_trial(&self, t: &TrialRecord) -> Result<()> {
        self.trials
            .insert(trial_key(t.id), encode(t)?)
            .map_err(backend)?;
        if t.state == TrialState::Waiting {
            self.waiting.insert(trial_key(t.id), &[]).map_err(backend)?;
        } else {
            self.waiting.remove(trial_key(t.id)).map_err(backend)?;
        }
        Ok(())
    }

    fn load_study(&self, id: StudyId) -> Result<Option<StudyRecord>> {
        self.studies
            .get(study_key(id))
            .map_err(backend)?
            .map(|v| decode(&v, "study"))
            .transpose()
    }
}

impl Storage for SledStorage {
    fn create_study(
        &self,
        spec: StudySpec,
        study_toml: String,
        seed: u64,
        now_ms: i64,
    ) -> Result<StudyRecord> {
        let _g = self.lock();
        let next = match self.studies.last().map_err(backend)? {
            Some((k, _)) => {
                let b = <[u8; 8]>::try_from(k.as_ref())
                    .map_err(|_| StorageError::Corrupt("study key".into()))?;
                u64::from_be_bytes(b) + 1
            }
            None => 1,
        };
        let record = StudyRecord {
            schema: SCHEMA_VERSION,
            id: StudyId(next),
            spec,
            study_toml,
            seed,
            state: StudyState::Running,
            end_reason: String::new(),
            created_at_ms: now_ms,
            ended_at_ms: 0,
        };
        self.studies
            .insert(study_key(record.id), encode(&record)?)
            .map_err(backend)?;
        Ok(record)
    }

    fn study(&self, id: StudyId) -> Result<Option<StudyRecord>> {
        self.load_study(id)
    }

    fn studies(&self) -> Result<Vec<StudyRecord>> {
        self.studies
            .iter()
            .map(|r| {
                let (_, v) = r.map_err(backend)?;
                decode(&v, "study")
            })
            .collect()
    }

    fn end_study(
        &self,
        id: StudyId,
        state: StudyState,
        reason: &str,
        now_ms: i64,
    ) -> Result<StudyRecord> {
        let _g = self.lock();
        let mut s = self
            .load_study(id)?
            .ok_or_else(|| StorageError::NotFound(format!("study {id}")))?;
        rules::check_end_study(&s, state)?;
        s.state = state;
        s.end_reason = reason.to_string();
        s.ended_at_ms = now_ms;
        self.studies
            .insert(study_key(id), encode(&s)?)
            .map_err(backend)?;
        Ok(s)
    }

    fn create_trial(&self, study: StudyId, params: Params, now_ms: i64) -> Result<TrialRecord> {
        let _g = self.lock();
        if self.load_study(study)?.is_none() {
            return Err(StorageError::NotFound(format!("study {study}")));
        }
        let number = match self.trials.scan_prefix(study_key(study)).next_back() {
            Some(r) => trial_id_of(&r.map_err(backend)?.0)?.number + 1,
            None => 0,
        };
        let t = rules::new_trial(study, number, params, now_ms);
        self.save_trial(&t)?;
        Ok(t)
    }

    fn claim_trial(
        &self,
        study: StudyId,
        worker: &WorkerId,
        now_ms: i64,
    ) -> Result<Option<TrialRecord>> {
        let _g = self.lock();
        let Some(first) = self.waiting.scan_prefix(study_key(study)).next() else {
            return Ok(None);
        };
        let id = trial_id_of(&first.map_err(backend)?.0)?;
        let mut t = self.load_trial(id)?;
        if t.state != TrialState::Waiting {
            return Err(StorageError::Corrupt(format!(
                "trial {id} is indexed as waiting but is {}",
                t.state
            )));
        }
        rules::apply_claim(&mut t, worker, now_ms);
        self.save_trial(&t)?;
        Ok(Some(t))
    }

    fn trial(&self, id: TrialId) -> Result<Option<TrialRecord>> {
        match self.load_trial(id) {
            Ok(t) => Ok(Some(t)),
            Err(StorageError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn trials(&self, study: StudyId) -> Result<Vec<TrialRecord>> {
        self.trials
            .scan_prefix(study_key(study))
            .map(|r| {
                let (_, v) = r.map_err(backend)?;
                decode(&v, "trial")
            })
            .collect()
    }

    fn append_metrics(
        &self,
        id: TrialId,
        attempt: u32,
        step: u32,
        values: &MetricValues,
    ) -> Result<bool> {
        let _g = self.lock();
        let mut t = self.load_trial(id)?;
        rules::check_append(&t, attempt)?;
        let fresh = self
            .metrics
            .compare_and_swap(
                metric_key(id, attempt, step),
                None as Option<&[u8]>,
                Some(encode(values)?),
            )
            .map_err(backend)?
            .is_ok();
        let last = Some(t.last_step.map_or(step, |s| s.max(step)));
        if last != t.last_step {
            t.last_step = last;
            self.save_trial(&t)?;
        }
        Ok(fresh)
    }

    fn metrics(&self, id: TrialId) -> Result<Vec<MetricPoint>> {
        self.metrics
            .scan_prefix(trial_key(id))
            .map(|r| {
                let (k, v) = r.map_err(backend)?;
                let attempt = k
                    .get(12..16)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .ok_or_else(|| StorageError::Corrupt("short metric key".into()))?;
                let step = k
                    .get(16..20)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .ok_or_else(|| StorageError::Corrupt("short metric key".into()))?;
                Ok(MetricPoint {
                    attempt: u32::from_be_bytes(attempt),
                    step: u32::from_be_bytes(step),
                    values: decode(&v, "metrics")?,
                })
            })
            .collect()
    }

    fn requeue_trial(&self, id: TrialId, why: Requeue, reason: &str) -> Result<TrialRecord> {
        let _g = self.lock();
        let mut t = self.load_trial(id)?;
        rules::check_requeue(&t)?;
        rules::apply_requeue(&mut t, why, reason);
        self.save_trial(&t)?;
        Ok(t)
    }

    fn finish_trial(
        &self,
        id: TrialId,
        state: TrialState,
        value: Option<f64>,
        reason: &str,
        now_ms: i64,
    ) -> Result<TrialRecord> {
        let _g = self.lock();
        let mut t = self.load_trial(id)?;
        rules::check_finish(&t, state)?;
        rules::apply_finish(&mut t, state, value, reason, now_ms);
        self.save_trial(&t)?;
        Ok(t)
    }

    fn flush(&self) -> Result<()> {
        self.db.flush().map_err(backend)?;
        Ok(())
    }
}
