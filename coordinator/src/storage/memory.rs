//! An in-memory backend: the reference for the conformance suite and the
//! store for throwaway studies. One mutex makes every verb atomic.

use super::log::BoundedLog;
use super::rules;
use super::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

#[derive(Default)]
pub struct MemoryStorage {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_study: u64,
    studies: BTreeMap<StudyId, StudyRecord>,
    trials: BTreeMap<TrialId, TrialRecord>,
    metrics: BTreeMap<(TrialId, u32, u32), MetricValues>,
    /// Waiting trials, so a claim does not scan a long study.
    waiting: BTreeSet<TrialId>,
    logs: HashMap<TrialId, BoundedLog>,
}

impl Inner {
    /// Keeps the waiting index in step with a trial's state.
    fn index(&mut self, t: &TrialRecord) {
        if t.state == TrialState::Waiting {
            self.waiting.insert(t.id);
        } else {
            self.waiting.remove(&t.id);
        }
    }
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied verb:
        // each verb mutates only after all its checks pass.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn trial_mut(inner: &mut Inner, id: TrialId) -> Result<&mut TrialRecord> {
    inner
        .trials
        .get_mut(&id)
        .ok_or_else(|| StorageError::NotFound(format!("trial {id}")))
}

impl Storage for MemoryStorage {
    fn create_study(
        &self,
        spec: StudySpec,
        study_toml: String,
        seed: u64,
        now_ms: i64,
    ) -> Result<StudyRecord> {
        let mut inner = self.lock();
        inner.next_study += 1;
        let id = StudyId(inner.next_study);
        let record = StudyRecord {
            schema: SCHEMA_VERSION,
            id,
            spec,
            study_toml,
            seed,
            state: StudyState::Running,
            end_reason: String::new(),
            created_at_ms: now_ms,
            ended_at_ms: 0,
        };
        inner.studies.insert(id, record.clone());
        Ok(record)
    }

    fn study(&self, id: StudyId) -> Result<Option<StudyRecord>> {
        Ok(self.lock().studies.get(&id).cloned())
    }

    fn studies(&self) -> Result<Vec<StudyRecord>> {
        Ok(self.lock().studies.values().cloned().collect())
    }

    fn end_study(
        &self,
        id: StudyId,
        state: StudyState,
        reason: &str,
        now_ms: i64,
    ) -> Result<StudyRecord> {
        let mut inner = self.lock();
        let s = inner
            .studies
            .get_mut(&id)
            .ok_or_else(|| StorageError::NotFound(format!("study {id}")))?;
        rules::check_end_study(s, state)?;
        s.state = state;
        s.end_reason = reason.to_string();
        s.ended_at_ms = now_ms;
        Ok(s.clone())
    }

    fn create_trial(
        &self,
        study: StudyId,
        params: Params,
        placement: Placement,
        now_ms: i64,
    ) -> Result<TrialRecord> {
        let mut inner = self.lock();
        if !inner.studies.contains_key(&study) {
            return Err(StorageError::NotFound(format!("study {study}")));
        }
        let number = inner
            .trials
            .range(
                TrialId { study, number: 0 }..=TrialId {
                    study,
                    number: u32::MAX,
                },
            )
            .next_back()
            .map(|(id, _)| id.number + 1)
            .unwrap_or(0);
        let t = rules::new_trial(study, number, params, placement, now_ms);
        inner.trials.insert(t.id, t.clone());
        inner.index(&t);
        Ok(t)
    }

    fn claim_trial(
        &self,
        study: StudyId,
        worker: &WorkerId,
        slot: &str,
        now_ms: i64,
    ) -> Result<Option<TrialRecord>> {
        let mut inner = self.lock();
        let first = inner
            .waiting
            .range(
                TrialId { study, number: 0 }..=TrialId {
                    study,
                    number: u32::MAX,
                },
            )
            .next()
            .copied();
        let Some(id) = first else {
            return Ok(None);
        };
        let t = trial_mut(&mut inner, id)?;
        rules::apply_claim(t, worker, slot, now_ms);
        let t = t.clone();
        inner.index(&t);
        Ok(Some(t))
    }

    fn trial(&self, id: TrialId) -> Result<Option<TrialRecord>> {
        Ok(self.lock().trials.get(&id).cloned())
    }

    fn trials(&self, study: StudyId) -> Result<Vec<TrialRecord>> {
        Ok(self
            .lock()
            .trials
            .range(
                TrialId { study, number: 0 }..=TrialId {
                    study,
                    number: u32::MAX,
                },
            )
            .map(|(_, t)| t.clone())
            .collect())
    }

    fn append_metrics(
        &self,
        id: TrialId,
        attempt: u32,
        step: u32,
        values: &MetricValues,
    ) -> Result<bool> {
        let mut inner = self.lock();
        let t = trial_mut(&mut inner, id)?;
        rules::check_append(t, attempt)?;
        t.last_step = Some(t.last_step.map_or(step, |s| s.max(step)));
        if inner.metrics.contains_key(&(id, attempt, step)) {
            return Ok(false);
        }
        inner.metrics.insert((id, attempt, step), values.clone());
        Ok(true)
    }

    fn metrics(&self, id: TrialId) -> Result<Vec<MetricPoint>> {
        Ok(self
            .lock()
            .metrics
            .range((id, 0, 0)..=(id, u32::MAX, u32::MAX))
            .map(|((_, attempt, step), values)| MetricPoint {
                attempt: *attempt,
                step: *step,
                values: values.clone(),
            })
            .collect())
    }

    fn requeue_trial(&self, id: TrialId, why: Requeue, reason: &str) -> Result<TrialRecord> {
        let mut inner = self.lock();
        let t = trial_mut(&mut inner, id)?;
        rules::check_requeue(t)?;
        rules::apply_requeue(t, why, reason);
        let t = t.clone();
        inner.index(&t);
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
        let mut inner = self.lock();
        let t = trial_mut(&mut inner, id)?;
        rules::check_pause(t, attempt, &checkpoint)?;
        rules::apply_pause(t, checkpoint, value, reason);
        Ok(t.clone())
    }

    fn promote_trial(&self, id: TrialId, placement: Placement) -> Result<TrialRecord> {
        let mut inner = self.lock();
        let t = trial_mut(&mut inner, id)?;
        rules::check_promote(t)?;
        rules::apply_promote(t, placement);
        let t = t.clone();
        inner.index(&t);
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
        let mut inner = self.lock();
        let t = trial_mut(&mut inner, id)?;
        rules::check_finish(t, state)?;
        rules::apply_finish(t, state, value, reason, now_ms);
        let t = t.clone();
        inner.index(&t);
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
        let mut inner = self.lock();
        trial_mut(&mut inner, trial)?;
        inner
            .logs
            .entry(trial)
            .or_default()
            .apply(attempt, offset, text, max_bytes)?;
        Ok(())
    }

    fn trial_log(&self, trial: TrialId, offset: u64) -> Result<TrialLogView> {
        let inner = self.lock();
        if !inner.trials.contains_key(&trial) {
            return Err(StorageError::NotFound(format!("trial {trial}")));
        }
        match inner.logs.get(&trial) {
            Some(log) => log.read(offset),
            None => Ok(TrialLogView::default()),
        }
    }

    /// Memory promises nothing beyond the process, and has it at once.
    fn durable_on_return(&self) -> bool {
        true
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }
}
