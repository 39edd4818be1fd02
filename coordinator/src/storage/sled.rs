//! The sled backend: one tree per record kind, JSON values, big-endian keys so
//! a study's trials and a trial's metrics are contiguous and ordered, and a
//! redo log in front of sled.
//!
//! Why a log: sled buffers writes in the process until its `flush`, which
//! also syncs the disk (about 150 µs here). Waiting for that before every
//! reply caps a coordinator at a few thousand acknowledged writes a second.
//! Instead each verb appends its tree operations to `hpo-wal.log` with one
//! `write(2)` before applying them to sled: once the verb returns, the write
//! survives `kill -9` of the process (it is in the OS page cache). Opening the
//! store replays the log over sled, which is idempotent because the log holds
//! the final bytes of each key in order. Every `CHECKPOINT_BYTES` of log, and
//! at `flush`, sled is flushed and the log emptied. With `Durability::Sync`
//! the log is also fdatasync'ed before replies (by group commit, in `sync`).
//!
//! Read-modify-write verbs hold the log's mutex: sled answers in microseconds,
//! so serialising them costs little and makes each verb atomic (sled's
//! transactions cannot scan, and `claim_trial` must).

use super::log::{self, LogHeader, Pieces};
use super::rules;
use super::*;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// Log size at which sled is flushed and the log emptied: bounds the replay
/// at start-up to a few milliseconds.
const CHECKPOINT_BYTES: u64 = 8 << 20;
const WAL_FILE: &str = "hpo-wal.log";

const STUDIES: u8 = 0;
const TRIALS: u8 = 1;
const METRICS: u8 = 2;
const LOGS: u8 = 3;
const LOG_TEXT: u8 = 4;

pub struct SledStorage {
    db: ::sled::Db,
    studies: ::sled::Tree,
    trials: ::sled::Tree,
    metrics: ::sled::Tree,
    /// Trial logs: the header per trial (trial key -> JSON `LogHeader`)
    /// and the text in pieces ((trial, logical start) -> UTF-8).
    logs: ::sled::Tree,
    log_text: ::sled::Tree,
    /// Index of waiting trials: (study, number) -> (), so a claim does not
    /// scan every trial of a long study. Derived data: rebuilt at open, never
    /// logged.
    waiting: ::sled::Tree,
    wal: Mutex<Wal>,
    /// A second handle on the log file, so `sync` does not take the mutex.
    wal_sync: File,
    durability: Durability,
}

struct Wal {
    file: File,
    len: u64,
    buf: Vec<u8>,
}

/// The tree operations of one verb, logged as one record.
#[derive(Default)]
struct Batch {
    ops: Vec<(u8, Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    fn put(&mut self, tree: u8, key: &[u8], value: Vec<u8>) {
        self.ops.push((tree, key.to_vec(), Some(value)));
    }
}

fn backend(e: ::sled::Error) -> StorageError {
    StorageError::Backend(e.to_string())
}

fn io(what: &str, e: std::io::Error) -> StorageError {
    StorageError::Backend(format!("{what}: {e}"))
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

fn be_u32(b: Option<&[u8]>, what: &str) -> Result<u32> {
    b.and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| StorageError::Corrupt(format!("short {what} key")))
}

fn trial_id_of(key: &[u8]) -> Result<TrialId> {
    let study = key
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .ok_or_else(|| StorageError::Corrupt("short trial key".into()))?;
    Ok(TrialId {
        study: StudyId(u64::from_be_bytes(study)),
        number: be_u32(key.get(8..12), "trial")?,
    })
}

fn attempt_prefix(id: TrialId, attempt: u32) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..12].copy_from_slice(&trial_key(id));
    k[12..].copy_from_slice(&attempt.to_be_bytes());
    k
}

fn metric_key(id: TrialId, attempt: u32, step: u32) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(&attempt_prefix(id, attempt));
    k[16..].copy_from_slice(&step.to_be_bytes());
    k
}

fn piece_key(id: TrialId, start: u64) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..12].copy_from_slice(&trial_key(id));
    k[12..].copy_from_slice(&start.to_be_bytes());
    k
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StorageError::Corrupt(format!("{what}: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StorageError::Backend(format!("encoding: {e}")))
}

/// Log record: payload length (u32 LE), CRC-32 of the payload (u32 LE), then
/// per operation: tree (u8), key length (u32 LE), key, value length (u32 LE,
/// u32::MAX for a removal), value.
fn encode_record(batch: &Batch, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0u8; 8]);
    for (tree, key, value) in &batch.ops {
        out.push(*tree);
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        match value {
            Some(v) => {
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
            None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
        }
    }
    let len = (out.len() - 8) as u32;
    let crc = crc32fast::hash(&out[8..]);
    out[..4].copy_from_slice(&len.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// The complete records of a log; a torn or corrupt tail (a crash in the
/// middle of a write) ends the replay there.
fn decode_records(bytes: &[u8]) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut at = 0usize;
    let word = |b: &[u8], i: usize| {
        b.get(i..i + 4)
            .and_then(|s| <[u8; 4]>::try_from(s).ok())
            .map(u32::from_le_bytes)
    };
    while let (Some(len), Some(crc)) = (word(bytes, at), word(bytes, at + 4)) {
        let Some(payload) = bytes.get(at + 8..at + 8 + len as usize) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let mut batch = Batch::default();
        let mut p = 0usize;
        let mut ok = true;
        while p < payload.len() {
            let Some(&tree) = payload.get(p) else {
                ok = false;
                break;
            };
            let Some(klen) = word(payload, p + 1) else {
                ok = false;
                break;
            };
            let kstart = p + 5;
            let Some(key) = payload.get(kstart..kstart + klen as usize) else {
                ok = false;
                break;
            };
            let vat = kstart + klen as usize;
            let Some(vlen) = word(payload, vat) else {
                ok = false;
                break;
            };
            if vlen == u32::MAX {
                batch.ops.push((tree, key.to_vec(), None));
                p = vat + 4;
            } else {
                let Some(v) = payload.get(vat + 4..vat + 4 + vlen as usize) else {
                    ok = false;
                    break;
                };
                batch.ops.push((tree, key.to_vec(), Some(v.to_vec())));
                p = vat + 4 + vlen as usize;
            }
        }
        if !ok {
            break;
        }
        out.push(batch);
        at += 8 + len as usize;
    }
    out
}

impl SledStorage {
    /// Opens (or creates) the store in `path`, replaying its log. Fails with a
    /// clear error when another process holds it or it was written by an
    /// incompatible release.
    pub fn open(path: &Path, durability: Durability) -> Result<Self> {
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
        let wal_path = path.join(WAL_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&wal_path)
            .map_err(|e| io(&format!("cannot open {}", wal_path.display()), e))?;
        let wal_sync = file.try_clone().map_err(|e| io("log handle", e))?;
        let mut pending = Vec::new();
        file.read_to_end(&mut pending)
            .map_err(|e| io("reading the log", e))?;
        let store = SledStorage {
            studies: db.open_tree("studies").map_err(backend)?,
            trials: db.open_tree("trials").map_err(backend)?,
            metrics: db.open_tree("metrics").map_err(backend)?,
            logs: db.open_tree("logs").map_err(backend)?,
            log_text: db.open_tree("log_text").map_err(backend)?,
            waiting: db.open_tree("waiting").map_err(backend)?,
            db,
            wal: Mutex::new(Wal {
                file,
                len: pending.len() as u64,
                buf: Vec::with_capacity(4096),
            }),
            wal_sync,
            durability,
        };
        let records = decode_records(&pending);
        if !records.is_empty() {
            tracing::info!(records = records.len(), "replaying the storage log");
        }
        for batch in &records {
            store.apply(batch)?;
        }
        {
            let mut wal = store.lock();
            store.checkpoint(&mut wal)?;
        }
        store.rebuild_waiting_index()?;
        Ok(store)
    }

    fn tree(&self, id: u8) -> Result<&::sled::Tree> {
        match id {
            STUDIES => Ok(&self.studies),
            TRIALS => Ok(&self.trials),
            METRICS => Ok(&self.metrics),
            LOGS => Ok(&self.logs),
            LOG_TEXT => Ok(&self.log_text),
            other => Err(StorageError::Corrupt(format!(
                "log names unknown tree {other}"
            ))),
        }
    }

    fn apply(&self, batch: &Batch) -> Result<()> {
        for (tree, key, value) in &batch.ops {
            let t = self.tree(*tree)?;
            match value {
                Some(v) => t.insert(key.as_slice(), v.as_slice()).map_err(backend)?,
                None => t.remove(key.as_slice()).map_err(backend)?,
            };
        }
        Ok(())
    }

    /// Logs a verb's writes, then applies them. Called with the mutex held.
    fn commit(&self, wal: &mut Wal, batch: Batch) -> Result<()> {
        let Wal { file, len, buf } = wal;
        encode_record(&batch, buf);
        file.write_all(buf).map_err(|e| io("writing the log", e))?;
        *len += buf.len() as u64;
        self.apply(&batch)?;
        if *len >= CHECKPOINT_BYTES {
            self.checkpoint(wal)?;
        }
        Ok(())
    }

    /// Flushes sled and empties the log. Called with the mutex held, so no
    /// write falls between the two.
    fn checkpoint(&self, wal: &mut Wal) -> Result<()> {
        self.db.flush().map_err(backend)?;
        wal.file.set_len(0).map_err(|e| io("emptying the log", e))?;
        if self.durability == Durability::Sync {
            wal.file.sync_all().map_err(|e| io("syncing the log", e))?;
        }
        wal.len = 0;
        Ok(())
    }

    /// The waiting index is derived data, rebuilt from the trial records at
    /// every open (one scan, milliseconds), so it can never disagree with them.
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

    fn lock(&self) -> MutexGuard<'_, Wal> {
        self.wal.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn load_trial(&self, id: TrialId) -> Result<TrialRecord> {
        match self.trials.get(trial_key(id)).map_err(backend)? {
            Some(v) => decode(&v, "trial"),
            None => Err(StorageError::NotFound(format!("trial {id}"))),
        }
    }

    /// Stores a trial and keeps the waiting index in step.
    fn save_trial(&self, wal: &mut Wal, t: &TrialRecord) -> Result<()> {
        let mut batch = Batch::default();
        batch.put(TRIALS, &trial_key(t.id), encode(t)?);
        self.commit(wal, batch)?;
        if t.state == TrialState::Waiting {
            self.waiting.insert(trial_key(t.id), &[]).map_err(backend)?;
        } else {
            self.waiting.remove(trial_key(t.id)).map_err(backend)?;
        }
        Ok(())
    }

    /// The last step stored for the trial's current attempt. Appending a
    /// report does not rewrite the trial record (that would double the work
    /// of the hottest verb); the step is read from the metric keys instead.
    fn last_step(&self, t: &TrialRecord) -> Result<Option<u32>> {
        match self
            .metrics
            .scan_prefix(attempt_prefix(t.id, t.attempt))
            .next_back()
        {
            Some(r) => Ok(Some(be_u32(r.map_err(backend)?.0.get(16..20), "metric")?)),
            None => Ok(None),
        }
    }

    /// A trial as readers see it: running trials get their live `last_step`.
    fn present(&self, mut t: TrialRecord) -> Result<TrialRecord> {
        if t.state == TrialState::Running {
            t.last_step = self.last_step(&t)?;
        }
        Ok(t)
    }

    fn load_study(&self, id: StudyId) -> Result<Option<StudyRecord>> {
        self.studies
            .get(study_key(id))
            .map_err(backend)?
            .map(|v| decode(&v, "study"))
            .transpose()
    }

    fn log_header(&self, id: TrialId) -> Result<Option<LogHeader>> {
        self.logs
            .get(trial_key(id))
            .map_err(backend)?
            .map(|v| decode(&v, "log header"))
            .transpose()
    }

    fn save_study(&self, wal: &mut Wal, s: &StudyRecord) -> Result<()> {
        let mut batch = Batch::default();
        batch.put(STUDIES, &study_key(s.id), encode(s)?);
        self.commit(wal, batch)
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
        let mut wal = self.lock();
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
        self.save_study(&mut wal, &record)?;
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
        let mut wal = self.lock();
        let mut s = self
            .load_study(id)?
            .ok_or_else(|| StorageError::NotFound(format!("study {id}")))?;
        rules::check_end_study(&s, state)?;
        s.state = state;
        s.end_reason = reason.to_string();
        s.ended_at_ms = now_ms;
        self.save_study(&mut wal, &s)?;
        Ok(s)
    }

    fn create_trial(
        &self,
        study: StudyId,
        params: Params,
        placement: Placement,
        now_ms: i64,
    ) -> Result<TrialRecord> {
        let mut wal = self.lock();
        if self.load_study(study)?.is_none() {
            return Err(StorageError::NotFound(format!("study {study}")));
        }
        let number = match self.trials.scan_prefix(study_key(study)).next_back() {
            Some(r) => trial_id_of(&r.map_err(backend)?.0)?.number + 1,
            None => 0,
        };
        let t = rules::new_trial(study, number, params, placement, now_ms);
        self.save_trial(&mut wal, &t)?;
        Ok(t)
    }

    fn claim_trial(
        &self,
        study: StudyId,
        worker: &WorkerId,
        slot: &str,
        now_ms: i64,
    ) -> Result<Option<TrialRecord>> {
        let mut wal = self.lock();
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
        rules::apply_claim(&mut t, worker, slot, now_ms);
        self.save_trial(&mut wal, &t)?;
        Ok(Some(t))
    }

    fn trial(&self, id: TrialId) -> Result<Option<TrialRecord>> {
        match self.load_trial(id) {
            Ok(t) => Ok(Some(self.present(t)?)),
            Err(StorageError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn trials(&self, study: StudyId) -> Result<Vec<TrialRecord>> {
        self.trials
            .scan_prefix(study_key(study))
            .map(|r| {
                let (_, v) = r.map_err(backend)?;
                self.present(decode(&v, "trial")?)
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
        let mut wal = self.lock();
        let t = self.load_trial(id)?;
        rules::check_append(&t, attempt)?;
        let key = metric_key(id, attempt, step);
        if self.metrics.contains_key(key).map_err(backend)? {
            return Ok(false);
        }
        let mut batch = Batch::default();
        batch.put(METRICS, &key, encode(values)?);
        self.commit(&mut wal, batch)?;
        Ok(true)
    }

    fn metrics(&self, id: TrialId) -> Result<Vec<MetricPoint>> {
        self.metrics
            .scan_prefix(trial_key(id))
            .map(|r| {
                let (k, v) = r.map_err(backend)?;
                Ok(MetricPoint {
                    attempt: be_u32(k.get(12..16), "metric")?,
                    step: be_u32(k.get(16..20), "metric")?,
                    values: decode(&v, "metrics")?,
                })
            })
            .collect()
    }

    fn requeue_trial(&self, id: TrialId, why: Requeue, reason: &str) -> Result<TrialRecord> {
        let mut wal = self.lock();
        let mut t = self.load_trial(id)?;
        rules::check_requeue(&t)?;
        t.last_step = self.last_step(&t)?;
        rules::apply_requeue(&mut t, why, reason);
        self.save_trial(&mut wal, &t)?;
        Ok(t)
    }

    fn pause_trial(
        &self,
        id: TrialId,
        attempt: u32,
        checkpoint: CheckpointRef,
        value: Option<f64>,
        reason: &str,
    ) -> Result<TrialRecord> {
        let mut wal = self.lock();
        let mut t = self.load_trial(id)?;
        rules::check_pause(&t, attempt, &checkpoint)?;
        rules::apply_pause(&mut t, checkpoint, value, reason);
        self.save_trial(&mut wal, &t)?;
        Ok(t)
    }

    fn promote_trial(&self, id: TrialId, placement: Placement) -> Result<TrialRecord> {
        let mut wal = self.lock();
        let mut t = self.load_trial(id)?;
        rules::check_promote(&t)?;
        rules::apply_promote(&mut t, placement);
        self.save_trial(&mut wal, &t)?;
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
        let mut wal = self.lock();
        let mut t = self.load_trial(id)?;
        rules::check_finish(&t, state)?;
        if t.state == TrialState::Running {
            t.last_step = self.last_step(&t)?;
        }
        rules::apply_finish(&mut t, state, value, reason, now_ms);
        self.save_trial(&mut wal, &t)?;
        Ok(t)
    }

    fn append_log(
        &self,
        trial: TrialId,
        attempt: u32,
        offset: u64,
        text: &str,
        max_bytes: u64,
    ) -> Result<()> {
        let mut wal = self.lock();
        if !self
            .trials
            .contains_key(trial_key(trial))
            .map_err(backend)?
        {
            return Err(StorageError::NotFound(format!("trial {trial}")));
        }
        let header = self.log_header(trial)?;
        let pieces = SledPieces {
            tree: &self.log_text,
            trial,
        };
        let Some(edit) = log::append(header.as_ref(), &pieces, attempt, offset, text, max_bytes)?
        else {
            return Ok(());
        };
        let mut batch = Batch::default();
        for start in edit.remove {
            batch
                .ops
                .push((LOG_TEXT, piece_key(trial, start).to_vec(), None));
        }
        for (start, text) in edit.put {
            batch.put(LOG_TEXT, &piece_key(trial, start), text.into_bytes());
        }
        batch.put(LOGS, &trial_key(trial), encode(&edit.header)?);
        self.commit(&mut wal, batch)
    }

    fn trial_log(&self, trial: TrialId, offset: u64) -> Result<TrialLogView> {
        if !self
            .trials
            .contains_key(trial_key(trial))
            .map_err(backend)?
        {
            return Err(StorageError::NotFound(format!("trial {trial}")));
        }
        // Under the mutex: header and pieces from the same moment.
        let _wal = self.lock();
        let header = self.log_header(trial)?;
        let pieces = SledPieces {
            tree: &self.log_text,
            trial,
        };
        log::read(header.as_ref(), &pieces, offset)
    }

    fn durable_on_return(&self) -> bool {
        self.durability == Durability::Process
    }

    fn sync(&self) -> Result<()> {
        if self.durability == Durability::Sync {
            self.wal_sync
                .sync_data()
                .map_err(|e| io("syncing the log", e))?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        let mut wal = self.lock();
        self.checkpoint(&mut wal)
    }
}

/// One trial's log pieces in sled.
struct SledPieces<'a> {
    tree: &'a ::sled::Tree,
    trial: TrialId,
}

fn piece_of(
    r: std::result::Result<(::sled::IVec, ::sled::IVec), ::sled::Error>,
) -> Result<(u64, String)> {
    let (k, v) = r.map_err(backend)?;
    let start = piece_start(&k)?;
    let text = String::from_utf8(v.to_vec())
        .map_err(|_| StorageError::Corrupt(format!("log piece at {start} is not UTF-8")))?;
    Ok((start, text))
}

fn piece_start(key: &[u8]) -> Result<u64> {
    key.get(12..20)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StorageError::Corrupt("short log piece key".into()))
}

impl Pieces for SledPieces<'_> {
    fn last(&self) -> Result<Option<(u64, String)>> {
        self.tree
            .scan_prefix(trial_key(self.trial))
            .next_back()
            .map(piece_of)
            .transpose()
    }

    fn scan(&self, pos: u64) -> Result<log::PieceIter<'_>> {
        let lo = piece_key(self.trial, 0);
        let from = match self.tree.range(lo..=piece_key(self.trial, pos)).next_back() {
            Some(r) => piece_start(&r.map_err(backend)?.0)?,
            None => 0,
        };
        Ok(Box::new(
            self.tree
                .range(piece_key(self.trial, from)..=piece_key(self.trial, u64::MAX))
                .map(piece_of),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn log_records_round_trip_and_a_torn_tail_is_dropped() {
        let mut a = Batch::default();
        a.put(TRIALS, b"k1", b"v1".to_vec());
        a.ops.push((METRICS, b"k2".to_vec(), None));
        let mut b = Batch::default();
        b.put(STUDIES, b"s", vec![7; 300]);
        let (mut ra, mut rb) = (Vec::new(), Vec::new());
        encode_record(&a, &mut ra);
        encode_record(&b, &mut rb);
        let mut log = [ra.clone(), rb.clone()].concat();
        let back = decode_records(&log);
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].ops, a.ops);
        assert_eq!(back[1].ops, b.ops);
        // A crash in the middle of the second write: only the first survives.
        log.truncate(ra.len() + rb.len() / 2);
        assert_eq!(decode_records(&log).len(), 1);
        // A flipped byte fails the checksum.
        let mut bad = ra.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(decode_records(&bad).is_empty());
    }
}
