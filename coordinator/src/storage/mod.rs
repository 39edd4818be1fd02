//! The `Storage` seam: every study, trial and metric record, behind domain
//! verbs whose atomicity is part of the contract.
//!
//! Verbs are synchronous: sled answers in microseconds, and the engine calls
//! them from the one task that owns a study. What an acknowledged write
//! survives is the backend's `Durability`: where a verb's writes are not yet
//! that durable when it returns, the engine's group commit
//! (`engine::durable`) calls `sync` before any reply that acknowledges them.

pub mod log;
mod memory;
mod sled;

pub use self::memory::MemoryStorage;
pub use self::sled::SledStorage;

/// A trial's log as read: what is kept from a position on.
pub type TrialLogView = hpo_proto::TrialLog;

use hpo_proto::study::StudySpec;
use hpo_proto::{
    CheckpointRef, MetricPoint, MetricValues, Params, StudyId, StudyState, TrialId, TrialState,
    WorkerId,
};
use serde::{Deserialize, Serialize};

/// Version of the stored record layout; records carry it so a later release
/// can migrate or refuse old data instead of misreading it.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0} not found")]
    NotFound(String),
    /// The verb does not apply to the record's current state.
    #[error("{0}")]
    Conflict(String),
    #[error("storage: {0}")]
    Backend(String),
    #[error("stored record is unreadable: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// A study as stored: the validated spec and what was decided at submit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyRecord {
    pub schema: u32,
    pub id: StudyId,
    pub spec: StudySpec,
    /// The study file as submitted, kept for reproducibility.
    pub study_toml: String,
    /// The effective seed (the spec's, or one picked at submit).
    pub seed: u64,
    pub state: StudyState,
    pub end_reason: String,
    pub created_at_ms: i64,
    pub ended_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    pub schema: u32,
    pub id: TrialId,
    pub state: TrialState,
    pub params: Params,
    /// Times the trial was claimed by a worker (1 for the first run).
    pub attempt: u32,
    /// Times its worker vanished while running it (counts against retries).
    pub lost_leases: u32,
    /// The worker running it, or that ran it last.
    pub worker: Option<WorkerId>,
    pub value: Option<f64>,
    pub last_step: Option<u32>,
    pub reason: String,
    pub created_at_ms: i64,
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    /// Where the scheduler put it (absent in records of older releases,
    /// which ran every trial at full budget: all zero then).
    #[serde(default)]
    pub placement: Placement,
    /// The checkpoint a paused (or requeued after a pause) trial resumes from.
    #[serde(default)]
    pub checkpoint: Option<CheckpointRef>,
    /// What happened to the trial, oldest first (absent in records of older
    /// releases). Kept in the record so the dashboard can show a trial's
    /// story after the coordinator restarts.
    #[serde(default)]
    pub events: Vec<TrialEvent>,
}

/// One change of a trial's state, as the dashboard shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialEvent {
    pub at_ms: i64,
    pub kind: TrialEventKind,
    /// The attempt it happened in (0 before the first claim).
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerId>,
    /// The worker's slot (device), for starts and resumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    /// The step reached, for pauses and ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    /// The rung and budget, for creation, pauses and promotions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rung: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialEventKind {
    Created,
    /// Claimed by a worker, from the start.
    Started,
    /// Claimed by a worker, from a checkpoint.
    Resumed,
    /// Given back to the queue (lease lost, worker interrupted).
    Requeued,
    Paused,
    Promoted,
    Completed,
    Stopped,
    Failed,
    Cancelled,
}

impl TrialEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TrialEventKind::Created => "created",
            TrialEventKind::Started => "started",
            TrialEventKind::Resumed => "resumed",
            TrialEventKind::Requeued => "requeued",
            TrialEventKind::Paused => "paused",
            TrialEventKind::Promoted => "promoted",
            TrialEventKind::Completed => "completed",
            TrialEventKind::Stopped => "stopped",
            TrialEventKind::Failed => "failed",
            TrialEventKind::Cancelled => "cancelled",
        }
    }
}

impl TrialEvent {
    fn new(kind: TrialEventKind, t: &TrialRecord, at_ms: i64) -> TrialEvent {
        TrialEvent {
            at_ms,
            kind,
            attempt: t.attempt,
            worker: None,
            slot: None,
            step: None,
            rung: None,
            budget: None,
            reason: String::new(),
        }
    }
}

/// A trial's place in its scheduler: bracket, rung index, and the resource
/// level it trains to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub bracket: u32,
    pub rung: u32,
    pub budget: u32,
}

/// What an acknowledged write survives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// The coordinator process dying (kill -9, out of memory, a panic): the
    /// write has reached the operating system before the reply.
    #[default]
    Process,
    /// Also the machine losing power: the write is on the disk (fdatasync)
    /// before the reply. Group commit shares one sync between waiting replies.
    Sync,
}

/// How `requeue_trial` came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// The worker stopped heartbeating: counts against the retry budget.
    LeaseLost,
    /// The worker gave the trial back on its way out: does not count.
    Interrupted,
}

pub trait Storage: Send + Sync + 'static {
    /// Stores a new study in state running and returns it with its new id.
    fn create_study(
        &self,
        spec: StudySpec,
        study_toml: String,
        seed: u64,
        now_ms: i64,
    ) -> Result<StudyRecord>;

    fn study(&self, id: StudyId) -> Result<Option<StudyRecord>>;

    /// All studies, oldest first.
    fn studies(&self) -> Result<Vec<StudyRecord>>;

    /// Running -> completed or cancelled. Refuses a study that already ended.
    fn end_study(
        &self,
        id: StudyId,
        state: StudyState,
        reason: &str,
        now_ms: i64,
    ) -> Result<StudyRecord>;

    /// Adds a waiting trial numbered one past the study's highest.
    fn create_trial(
        &self,
        study: StudyId,
        params: Params,
        placement: Placement,
        now_ms: i64,
    ) -> Result<TrialRecord>;

    /// Atomically moves the study's lowest-numbered waiting trial to running
    /// for `worker`, incrementing its attempt. Two concurrent callers never get
    /// the same trial. None when nothing waits.
    /// `slot` names the worker's device it will run on (kept in the
    /// trial's events).
    fn claim_trial(
        &self,
        study: StudyId,
        worker: &WorkerId,
        slot: &str,
        now_ms: i64,
    ) -> Result<Option<TrialRecord>>;

    fn trial(&self, id: TrialId) -> Result<Option<TrialRecord>>;

    /// All trials of a study, by number.
    fn trials(&self, study: StudyId) -> Result<Vec<TrialRecord>>;

    /// Stores one step's metrics of the trial's current attempt. Idempotent:
    /// a second report of the same (attempt, step) keeps the first and returns
    /// false. Refuses a trial that is not running or an attempt that is not
    /// its current one. Updates the trial's `last_step`.
    fn append_metrics(
        &self,
        id: TrialId,
        attempt: u32,
        step: u32,
        values: &MetricValues,
    ) -> Result<bool>;

    /// Every stored metric point of a trial, by (attempt, step).
    fn metrics(&self, id: TrialId) -> Result<Vec<MetricPoint>>;

    /// Running -> waiting, so another worker can claim it. A trial with a
    /// checkpoint keeps it: the next attempt resumes from there.
    fn requeue_trial(&self, id: TrialId, why: Requeue, reason: &str) -> Result<TrialRecord>;

    /// Running (on `attempt`) -> paused at a rung, with the checkpoint the
    /// worker uploaded and the objective so far.
    fn pause_trial(
        &self,
        id: TrialId,
        attempt: u32,
        checkpoint: CheckpointRef,
        value: Option<f64>,
        reason: &str,
    ) -> Result<TrialRecord>;

    /// Paused -> waiting with a larger budget: the next claim resumes it from
    /// its checkpoint.
    fn promote_trial(&self, id: TrialId, placement: Placement) -> Result<TrialRecord>;

    /// Moves a waiting or running trial to a terminal `state`. Refuses a trial
    /// that is already terminal, so a late or duplicated finish changes nothing.
    fn finish_trial(
        &self,
        id: TrialId,
        state: TrialState,
        value: Option<f64>,
        reason: &str,
        now_ms: i64,
    ) -> Result<TrialRecord>;

    /// Appends a chunk of `attempt`'s output stream, at byte `offset` of
    /// that stream, to the trial's log (every attempt's streams in turn),
    /// keeping it within `max_bytes`. Idempotent: a chunk of an older
    /// attempt or a duplicate changes nothing, an overlapping one adds its
    /// new suffix, and one past what was received adds a gap marker first.
    /// The oldest text is dropped (with a marker) past the bound. Accepted
    /// in any trial state. The rules are `log`'s.
    fn append_log(
        &self,
        trial: TrialId,
        attempt: u32,
        offset: u64,
        text: &str,
        max_bytes: u64,
    ) -> Result<()>;

    /// The trial's kept log from logical position `offset` on
    /// (`start + text.len() == total`); empty with total 0 when it has none.
    fn trial_log(&self, trial: TrialId, offset: u64) -> Result<TrialLogView>;

    /// True when every verb's writes already have the backend's promised
    /// durability when it returns, so replies need not wait for `sync`.
    fn durable_on_return(&self) -> bool;

    /// Makes every write so far as durable as the backend promises. Cheap
    /// enough for the reply path (called once per group commit).
    fn sync(&self) -> Result<()>;

    /// Makes every write so far durable on disk and compacts any log: for
    /// shutdown and tests, not the reply path.
    fn flush(&self) -> Result<()>;
}

/// The state-machine rules every backend applies the same way.
pub(crate) mod rules {
    use super::*;

    pub fn check_finish(t: &TrialRecord, state: TrialState) -> Result<()> {
        if !state.is_terminal() {
            return Err(StorageError::Conflict(format!(
                "trial {} cannot be finished as {state}",
                t.id
            )));
        }
        if t.state.is_terminal() {
            return Err(StorageError::Conflict(format!(
                "trial {} has already ended ({})",
                t.id, t.state
            )));
        }
        Ok(())
    }

    pub fn check_pause(t: &TrialRecord, attempt: u32, c: &CheckpointRef) -> Result<()> {
        check_append(t, attempt)?;
        if c.trial != t.id || c.attempt != attempt {
            return Err(StorageError::Conflict(format!(
                "checkpoint of trial {} attempt {} does not belong to trial {} attempt {attempt}",
                c.trial, c.attempt, t.id
            )));
        }
        Ok(())
    }

    pub fn apply_pause(t: &mut TrialRecord, c: CheckpointRef, value: Option<f64>, reason: &str) {
        t.state = TrialState::Paused;
        t.last_step = Some(c.step);
        let mut e = TrialEvent::new(TrialEventKind::Paused, t, hpo_proto::now_ms());
        e.worker = t.worker.clone();
        e.step = Some(c.step);
        e.rung = Some(t.placement.rung);
        e.budget = Some(t.placement.budget);
        e.reason = reason.to_string();
        t.events.push(e);
        t.checkpoint = Some(c);
        t.value = value;
        t.reason = reason.to_string();
    }

    pub fn check_promote(t: &TrialRecord) -> Result<()> {
        if t.state != TrialState::Paused {
            return Err(StorageError::Conflict(format!(
                "trial {} is {}, not paused",
                t.id, t.state
            )));
        }
        Ok(())
    }

    pub fn apply_promote(t: &mut TrialRecord, placement: Placement) {
        t.state = TrialState::Waiting;
        t.placement = placement;
        t.reason = String::new();
        let mut e = TrialEvent::new(TrialEventKind::Promoted, t, hpo_proto::now_ms());
        e.rung = Some(placement.rung);
        e.budget = Some(placement.budget);
        t.events.push(e);
    }

    pub fn check_requeue(t: &TrialRecord) -> Result<()> {
        if t.state != TrialState::Running {
            return Err(StorageError::Conflict(format!(
                "trial {} is {}, not running",
                t.id, t.state
            )));
        }
        Ok(())
    }

    pub fn check_append(t: &TrialRecord, attempt: u32) -> Result<()> {
        if t.state != TrialState::Running {
            return Err(StorageError::Conflict(format!(
                "trial {} is {}, not running",
                t.id, t.state
            )));
        }
        if t.attempt != attempt {
            return Err(StorageError::Conflict(format!(
                "trial {} is on attempt {}, not {attempt}",
                t.id, t.attempt
            )));
        }
        Ok(())
    }

    pub fn apply_claim(t: &mut TrialRecord, worker: &WorkerId, slot: &str, now_ms: i64) {
        t.state = TrialState::Running;
        t.attempt += 1;
        t.worker = Some(worker.clone());
        t.started_at_ms = now_ms;
        t.last_step = None;
        let kind = match &t.checkpoint {
            Some(_) => TrialEventKind::Resumed,
            None => TrialEventKind::Started,
        };
        let mut e = TrialEvent::new(kind, t, now_ms);
        e.worker = Some(worker.clone());
        e.slot = (!slot.is_empty()).then(|| slot.to_string());
        e.step = t.checkpoint.as_ref().map(|c| c.step);
        e.budget = Some(t.placement.budget);
        t.events.push(e);
    }

    pub fn apply_requeue(t: &mut TrialRecord, why: Requeue, reason: &str) {
        t.state = TrialState::Waiting;
        if why == Requeue::LeaseLost {
            t.lost_leases += 1;
        }
        t.reason = reason.to_string();
        let mut e = TrialEvent::new(TrialEventKind::Requeued, t, hpo_proto::now_ms());
        e.worker = t.worker.clone();
        e.step = t.last_step;
        e.reason = reason.to_string();
        t.events.push(e);
    }

    pub fn apply_finish(
        t: &mut TrialRecord,
        state: TrialState,
        value: Option<f64>,
        reason: &str,
        now_ms: i64,
    ) {
        t.state = state;
        t.value = value;
        t.reason = reason.to_string();
        t.ended_at_ms = now_ms;
        let kind = match state {
            TrialState::Completed => TrialEventKind::Completed,
            TrialState::Stopped => TrialEventKind::Stopped,
            TrialState::Failed => TrialEventKind::Failed,
            _ => TrialEventKind::Cancelled,
        };
        let mut e = TrialEvent::new(kind, t, now_ms);
        e.worker = t.worker.clone().filter(|_| t.attempt > 0);
        e.step = t.last_step;
        e.reason = reason.to_string();
        t.events.push(e);
    }

    pub fn new_trial(
        study: StudyId,
        number: u32,
        params: Params,
        placement: Placement,
        now_ms: i64,
    ) -> TrialRecord {
        let mut t = TrialRecord {
            schema: SCHEMA_VERSION,
            id: TrialId { study, number },
            state: TrialState::Waiting,
            params,
            attempt: 0,
            lost_leases: 0,
            worker: None,
            value: None,
            last_step: None,
            reason: String::new(),
            created_at_ms: now_ms,
            started_at_ms: 0,
            ended_at_ms: 0,
            placement,
            checkpoint: None,
            events: Vec::new(),
        };
        let mut e = TrialEvent::new(TrialEventKind::Created, &t, now_ms);
        e.rung = Some(placement.rung);
        e.budget = Some(placement.budget);
        t.events.push(e);
        t
    }

    pub fn check_end_study(s: &StudyRecord, state: StudyState) -> Result<()> {
        if state == StudyState::Running {
            return Err(StorageError::Conflict(format!(
                "study {} cannot be ended as running",
                s.id
            )));
        }
        if s.state != StudyState::Running {
            return Err(StorageError::Conflict(format!(
                "study {} has already ended ({})",
                s.id, s.state
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod conformance;
