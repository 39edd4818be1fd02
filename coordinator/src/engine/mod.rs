//! The engine: one task per running study (see `study.rs`), a registry of
//! those tasks, worker bookkeeping and group commit.
//!
//! Handlers call the async methods here; each converts the call into an event
//! for the study's task, awaits the reply and, for writes, waits for group
//! commit before returning, so an answer always means "stored durably".

mod durable;
mod study;
mod workers;

pub use workers::{RunningSlot, WorkerView};

use crate::checkpoints::{CheckpointError, CheckpointStore};
use crate::storage::{Storage, StorageError, StudyRecord, TrialLogView, TrialRecord};
use crate::telemetry::Telemetry;
use durable::Durable;
use hpo_proto::study::StudySpec;
use hpo_proto::{
    Assignment, CheckpointRef, Decision, MetricValues, Outcome, StudyId, StudyInfo, StudyState,
    TrialCounts, TrialId, TrialInfo, TrialState, WorkerId, now_ms,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use study::StudyActor;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use workers::Workers;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("coordinator is shutting down")]
    Unavailable,
    #[error("internal error: {0}")]
    Internal(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// A trial whose worker is silent this long goes back in the queue.
    pub lease_ttl: Duration,
    /// How often each study checks leases and its time budget.
    pub tick: Duration,
    /// Where paused trials' checkpoints are kept (may be a shared file
    /// system); None keeps them in memory.
    pub checkpoint_dir: Option<PathBuf>,
    /// Largest checkpoint accepted.
    pub max_checkpoint_bytes: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            lease_ttl: Duration::from_secs(30),
            tick: Duration::from_millis(500),
            checkpoint_dir: None,
            max_checkpoint_bytes: crate::checkpoints::DEFAULT_MAX_BYTES,
        }
    }
}

/// Bound on queued events per study: back-pressure, not a limit users meet.
const STUDY_QUEUE: usize = 1024;

/// The trainer kind of studies run by ask-and-tell clients, not workers.
const EXTERNAL_TRAINER: &str = "external";

pub(crate) enum Event {
    Acquire {
        worker: WorkerId,
        /// The worker's slot (device) the trial will run on.
        slot: String,
        reply: oneshot::Sender<Result<Option<Assignment>, EngineError>>,
    },
    Report {
        worker: WorkerId,
        number: u32,
        attempt: u32,
        step: u32,
        values: MetricValues,
        reply: oneshot::Sender<Result<Decision, EngineError>>,
    },
    Heartbeat {
        worker: WorkerId,
        numbers: Vec<u32>,
        reply: oneshot::Sender<Vec<u32>>,
    },
    Finish {
        worker: WorkerId,
        number: u32,
        attempt: u32,
        outcome: Outcome,
        reply: oneshot::Sender<Result<TrialState, EngineError>>,
    },
    Cancel {
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    /// A user stops one trial (the dashboard).
    StopTrial {
        number: u32,
        reason: String,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
}

/// A change the dashboard shows live: sent on a broadcast channel that any
/// number of subscribers (server-sent event streams) read; nobody listening
/// costs nothing, and a slow listener only loses events (it refetches).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LiveEvent {
    pub study: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trial: Option<u32>,
    #[serde(skip)]
    pub kind: LiveKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveKind {
    /// A study was submitted or ended.
    Study,
    /// A trial was created or changed state.
    Trial,
    /// A trial reported its objective at a step.
    Report,
    /// A trial's log grew (read on from the last total).
    Log,
}

impl LiveKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LiveKind::Study => "study",
            LiveKind::Trial => "trial",
            LiveKind::Report => "report",
            LiveKind::Log => "log",
        }
    }
}

/// Events buffered per subscriber before it starts losing them.
const LIVE_BUFFER: usize = 4096;

#[derive(Clone)]
struct StudyHandle {
    tx: mpsc::Sender<Event>,
    priority: i32,
    /// The trainer kind is "external": only an ask-and-tell client naming
    /// the study takes its trials, never a worker's plain acquire.
    external: bool,
}

struct Inner {
    storage: Arc<dyn Storage>,
    config: EngineConfig,
    studies: RwLock<BTreeMap<StudyId, StudyHandle>>,
    /// Round-robin position for sharing slots between studies.
    cursor: AtomicUsize,
    /// Workers registered since this coordinator started. A heartbeat from
    /// a worker missing here tells it that the coordinator restarted, so it
    /// registers again.
    workers: Workers,
    live: broadcast::Sender<LiveEvent>,
    telemetry: Arc<Telemetry>,
    durable: Durable,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    checkpoints: Arc<CheckpointStore>,
    /// Each study's bound on a trial's log, in bytes (its spec's, which
    /// never changes), so an append does not decode the study record.
    log_bounds: RwLock<BTreeMap<StudyId, u64>>,
}

/// Largest text one `append_log` may carry.
pub const MAX_LOG_CHUNK: usize = 1 << 20;

/// A trial's log bound when its study file sets no `[trainer] max_log_kib`.
pub const DEFAULT_MAX_LOG_KIB: u64 = 1024;

/// Cheap to clone; every clone drives the same engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Starts the engine over `storage`, resuming every study that was running.
    pub fn start(storage: Arc<dyn Storage>, config: EngineConfig) -> Result<Engine, EngineError> {
        let checkpoints = Arc::new(match &config.checkpoint_dir {
            Some(dir) => CheckpointStore::open(dir, config.max_checkpoint_bytes)?,
            None => CheckpointStore::memory(config.max_checkpoint_bytes),
        });
        let durable = Durable::start(storage.clone());
        let engine = Engine {
            inner: Arc::new(Inner {
                storage: storage.clone(),
                config,
                studies: RwLock::new(BTreeMap::new()),
                cursor: AtomicUsize::new(0),
                workers: Workers::default(),
                live: broadcast::channel(LIVE_BUFFER).0,
                telemetry: Arc::new(Telemetry::default()),
                durable,
                tasks: Mutex::new(Vec::new()),
                checkpoints,
                log_bounds: RwLock::new(BTreeMap::new()),
            }),
        };
        for record in storage.studies()? {
            if record.state == StudyState::Running {
                tracing::info!(study = %record.id, name = %record.spec.name, "resuming study");
                engine.spawn_study(record)?;
            }
        }
        Ok(engine)
    }

    pub fn lease_ttl(&self) -> Duration {
        self.inner.config.lease_ttl
    }

    fn spawn_study(&self, record: StudyRecord) -> Result<(), EngineError> {
        let priority = record.spec.search.priority;
        let external = record.spec.trainer.kind == EXTERNAL_TRAINER;
        let actor = StudyActor::load(
            record,
            self.inner.storage.clone(),
            self.inner.checkpoints.clone(),
            self.inner.config.lease_ttl,
            self.inner.live.clone(),
            self.inner.telemetry.clone(),
        )?;
        let id = actor.id();
        let (tx, rx) = mpsc::channel(STUDY_QUEUE);
        let task = tokio::spawn(actor.run(rx, self.inner.config.tick));
        write(&self.inner.studies).insert(
            id,
            StudyHandle {
                tx,
                priority,
                external,
            },
        );
        lock(&self.inner.tasks).push(task);
        Ok(())
    }

    fn handle(&self, id: StudyId) -> Option<StudyHandle> {
        read(&self.inner.studies)
            .get(&id)
            .filter(|h| !h.tx.is_closed())
            .cloned()
    }

    async fn sync(&self) -> Result<(), EngineError> {
        self.inner
            .durable
            .sync()
            .await
            .map_err(EngineError::Internal)
    }

    /// Sends an event to a running study and awaits its answer.
    async fn ask<T>(
        &self,
        id: StudyId,
        make: impl FnOnce(oneshot::Sender<T>) -> Event,
    ) -> Result<T, EngineError> {
        let handle = self.handle(id).ok_or_else(|| self.not_running(id))?;
        let (tx, rx) = oneshot::channel();
        handle
            .tx
            .send(make(tx))
            .await
            .map_err(|_| self.not_running(id))?;
        rx.await.map_err(|_| self.not_running(id))
    }

    fn not_running(&self, id: StudyId) -> EngineError {
        match self.inner.storage.study(id) {
            Ok(Some(s)) if s.state != StudyState::Running => EngineError::FailedPrecondition(
                format!("study {id} has already ended ({})", s.state),
            ),
            Ok(Some(_)) => EngineError::Unavailable,
            Ok(None) => EngineError::NotFound(format!("study {id} not found")),
            Err(e) => e.into(),
        }
    }

    // ----- clients -----

    /// Validates, stores and starts a study.
    pub async fn submit(
        &self,
        study_toml: &str,
        source_name: &str,
    ) -> Result<StudyId, EngineError> {
        let _timer = self.inner.telemetry.grpc.time("submit");
        let source = if source_name.is_empty() {
            "study"
        } else {
            source_name
        };
        let spec = StudySpec::parse(study_toml, source)
            .map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
        warm_start_studies(&*self.inner.storage, &spec, None).map_err(|e| match e {
            EngineError::InvalidArgument(m) => {
                EngineError::InvalidArgument(format!("{source}: search.warm_start: {m}"))
            }
            other => other,
        })?;
        // Seeds are kept so a study can be reproduced: pick one if none given.
        let seed = spec.seed.unwrap_or_else(|| rand::random::<u32>() as u64);
        let record =
            self.inner
                .storage
                .create_study(spec, study_toml.to_string(), seed, now_ms())?;
        self.sync().await?;
        let id = record.id;
        tracing::info!(study = %id, name = %record.spec.name, seed, "study submitted");
        self.spawn_study(record)?;
        let _ = self.inner.live.send(LiveEvent {
            study: id.0,
            trial: None,
            kind: LiveKind::Study,
            state: Some(StudyState::Running.to_string()),
            step: None,
            value: None,
        });
        Ok(id)
    }

    pub async fn cancel(&self, id: StudyId) -> Result<StudyInfo, EngineError> {
        self.ask(id, |reply| Event::Cancel { reply }).await??;
        self.sync().await?;
        self.study_info(id)
    }

    pub fn study_info(&self, id: StudyId) -> Result<StudyInfo, EngineError> {
        let record = self
            .inner
            .storage
            .study(id)?
            .ok_or_else(|| EngineError::NotFound(format!("study {id} not found")))?;
        let trials = self.inner.storage.trials(id)?;
        Ok(summarize(&record, &trials))
    }

    /// A study's state, read without summarising its trials.
    pub fn study_state(&self, id: StudyId) -> Result<StudyState, EngineError> {
        self.inner
            .storage
            .study(id)?
            .map(|s| s.state)
            .ok_or_else(|| EngineError::NotFound(format!("study {id} not found")))
    }

    pub fn list_studies(&self) -> Result<Vec<StudyInfo>, EngineError> {
        let storage = &self.inner.storage;
        storage
            .studies()?
            .iter()
            .map(|r| Ok(summarize(r, &storage.trials(r.id)?)))
            .collect()
    }

    pub fn list_trials(
        &self,
        id: StudyId,
        with_metrics: bool,
    ) -> Result<Vec<TrialInfo>, EngineError> {
        let storage = &self.inner.storage;
        if storage.study(id)?.is_none() {
            return Err(EngineError::NotFound(format!("study {id} not found")));
        }
        storage
            .trials(id)?
            .iter()
            .map(|t| {
                let mut info = trial_info(t);
                if with_metrics {
                    info.metrics = storage.metrics(t.id)?;
                }
                Ok(info)
            })
            .collect()
    }

    // ----- workers -----

    /// Records a worker and returns the trials the coordinator believes it
    /// runs, so a worker that reconnects after a restart keeps them.
    pub fn register(
        &self,
        worker: &WorkerId,
        hostname: &str,
        slots: Vec<String>,
    ) -> Result<Vec<TrialId>, EngineError> {
        if slots.is_empty() {
            return Err(EngineError::InvalidArgument(
                "a worker needs at least one slot".into(),
            ));
        }
        self.inner
            .workers
            .register(worker, hostname, &slots, now_ms());
        let mut running = Vec::new();
        let ids: Vec<StudyId> = read(&self.inner.studies).keys().copied().collect();
        for id in ids {
            for t in self.inner.storage.trials(id)? {
                if t.state == TrialState::Running && t.worker.as_ref() == Some(worker) {
                    running.push(t.id);
                }
            }
        }
        tracing::info!(worker = %worker, ?slots, running = running.len(), "worker registered");
        Ok(running)
    }

    pub fn is_known(&self, worker: &WorkerId) -> bool {
        self.inner.workers.seen(worker, now_ms())
    }

    /// Every worker heard from since this coordinator started.
    pub fn workers(&self) -> Vec<WorkerView> {
        let ttl = self.inner.config.lease_ttl.as_millis() as i64;
        self.inner.workers.snapshot(now_ms(), ttl)
    }

    /// Live changes of every study, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.inner.live.subscribe()
    }

    pub fn telemetry(&self) -> Arc<Telemetry> {
        self.inner.telemetry.clone()
    }

    /// The records, for read-only views (the dashboard). Writes go through
    /// the study tasks.
    pub fn storage(&self) -> Arc<dyn Storage> {
        self.inner.storage.clone()
    }

    /// Stops one trial on a user's request: a waiting or paused trial ends
    /// now, a running one at its next report (told to stop there).
    pub async fn stop_trial(
        &self,
        trial: TrialId,
        reason: &str,
    ) -> Result<TrialRecord, EngineError> {
        let reason = reason.to_string();
        self.ask(trial.study, |reply| Event::StopTrial {
            number: trial.number,
            reason,
            reply,
        })
        .await
        .map_err(|e| self.ended_trial(trial, e))??;
        self.sync().await?;
        self.inner
            .storage
            .trial(trial)?
            .ok_or_else(|| EngineError::NotFound(format!("trial {trial} not found")))
    }

    /// A trial for one free slot, from the studies in priority order and
    /// round-robin among equals, or None when no study has one now.
    ///
    /// `only`: an ask-and-tell client's acquire, from that study alone (of
    /// any trainer kind). An unknown study is not found; an ended one gives
    /// None, and its state says why. Without it, studies whose trainer kind
    /// is "external" are skipped: no worker runs them.
    pub async fn acquire(
        &self,
        worker: &WorkerId,
        slot: &str,
        only: Option<StudyId>,
    ) -> Result<Option<Assignment>, EngineError> {
        let _timer = self.inner.telemetry.grpc.time("acquire");
        let mut handles: Vec<(StudyId, StudyHandle)> = read(&self.inner.studies)
            .iter()
            .filter(|(id, h)| {
                !h.tx.is_closed()
                    && match only {
                        Some(only) => **id == only,
                        None => !h.external,
                    }
            })
            .map(|(id, h)| (*id, h.clone()))
            .collect();
        if let Some(id) = only
            && handles.is_empty()
        {
            // Not running: unknown (an error) or ended (nothing, ever).
            self.study_state(id)?;
            return Ok(None);
        }
        if handles.is_empty() {
            return Ok(None);
        }
        let start = self.inner.cursor.fetch_add(1, Ordering::Relaxed) % handles.len();
        handles.rotate_left(start);
        // Stable: equal priorities keep their rotated (round-robin) order.
        handles.sort_by_key(|(_, h)| std::cmp::Reverse(h.priority));
        let worker_id = worker;
        for (id, _) in handles {
            let worker = worker.clone();
            let slot_name = slot.to_string();
            match self
                .ask(id, |reply| Event::Acquire {
                    worker,
                    slot: slot_name,
                    reply,
                })
                .await
            {
                Ok(Ok(Some(a))) => {
                    self.sync().await?;
                    self.inner
                        .workers
                        .started(worker_id, slot, a.trial, now_ms());
                    Telemetry::inc(&self.inner.telemetry.trials_started);
                    return Ok(Some(a));
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => return Err(e),
                // The study ended between listing and asking.
                Err(_) => {}
            }
        }
        self.prune();
        Ok(None)
    }

    /// Forgets the handles of studies whose task has ended.
    fn prune(&self) {
        write(&self.inner.studies).retain(|_, h| !h.tx.is_closed());
    }

    pub async fn heartbeat(
        &self,
        worker: &WorkerId,
        trials: Vec<TrialId>,
    ) -> Result<Vec<TrialId>, EngineError> {
        let _timer = self.inner.telemetry.grpc.time("heartbeat");
        self.inner.workers.heartbeat(worker, &trials, now_ms());
        let mut by_study: BTreeMap<StudyId, Vec<u32>> = BTreeMap::new();
        for t in trials {
            by_study.entry(t.study).or_default().push(t.number);
        }
        let mut stop = Vec::new();
        for (study, numbers) in by_study {
            let worker = worker.clone();
            let all = numbers.clone();
            match self
                .ask(study, |reply| Event::Heartbeat {
                    worker,
                    numbers,
                    reply,
                })
                .await
            {
                Ok(s) => stop.extend(s.into_iter().map(|number| TrialId { study, number })),
                // The study is gone: nothing of it should run.
                Err(_) => stop.extend(all.into_iter().map(|number| TrialId { study, number })),
            }
        }
        Ok(stop)
    }

    pub async fn report(
        &self,
        worker: &WorkerId,
        trial: TrialId,
        attempt: u32,
        step: u32,
        values: MetricValues,
    ) -> Result<Decision, EngineError> {
        let _timer = self.inner.telemetry.grpc.time("report");
        let worker = worker.clone();
        let decision = self
            .ask(trial.study, |reply| Event::Report {
                worker,
                number: trial.number,
                attempt,
                step,
                values,
                reply,
            })
            .await
            .map_err(|e| self.ended_trial(trial, e))??;
        self.sync().await?;
        Telemetry::inc(&self.inner.telemetry.reports);
        Ok(decision)
    }

    pub async fn finish(
        &self,
        worker: &WorkerId,
        trial: TrialId,
        attempt: u32,
        outcome: Outcome,
    ) -> Result<TrialState, EngineError> {
        let _timer = self.inner.telemetry.grpc.time("finish");
        let w = worker.clone();
        let result = self
            .ask(trial.study, |reply| Event::Finish {
                worker: w,
                number: trial.number,
                attempt,
                outcome,
                reply,
            })
            .await;
        self.inner.workers.ended(worker, trial, now_ms());
        let state = match result {
            Ok(r) => r?,
            Err(e) => {
                // The study has ended: a finish that repeats what is stored is
                // answered; anything else is refused.
                match self.inner.storage.trial(trial)? {
                    Some(t)
                        if t.state.is_terminal()
                            && t.worker.as_ref() == Some(worker)
                            && t.attempt == attempt =>
                    {
                        return Ok(t.state);
                    }
                    _ => return Err(self.ended_trial(trial, e)),
                }
            }
        };
        self.sync().await?;
        Ok(state)
    }

    /// The trial as stored, running on `worker` in `attempt`: the only
    /// state in which it may upload or download a checkpoint.
    fn leased_trial(
        &self,
        worker: &WorkerId,
        trial: TrialId,
        attempt: u32,
    ) -> Result<TrialRecord, EngineError> {
        let t = self
            .inner
            .storage
            .trial(trial)?
            .ok_or_else(|| EngineError::NotFound(format!("trial {trial} not found")))?;
        if t.state != TrialState::Running
            || t.worker.as_ref() != Some(worker)
            || t.attempt != attempt
        {
            return Err(EngineError::FailedPrecondition(format!(
                "trial {trial} attempt {attempt} is not running on worker {worker} (it is {}, attempt {})",
                t.state, t.attempt
            )));
        }
        Ok(t)
    }

    /// The size limit a checkpoint upload must respect.
    pub fn check_checkpoint_size(&self, trial: TrialId, size: u64) -> Result<(), EngineError> {
        Ok(self.inner.checkpoints.check_size(trial, size)?)
    }

    /// Stores the checkpoint a worker uploads before pausing its trial. Only
    /// the worker running that attempt may; size and CRC-32 are checked.
    pub async fn put_checkpoint(
        &self,
        worker: &WorkerId,
        checkpoint: CheckpointRef,
        bytes: Vec<u8>,
    ) -> Result<CheckpointRef, EngineError> {
        self.leased_trial(worker, checkpoint.trial, checkpoint.attempt)?;
        let store = self.inner.checkpoints.clone();
        if store.is_memory() {
            // No file I/O: also keeps the simulator's paused clock exact.
            store.put(&checkpoint, &bytes)?;
        } else {
            let c = checkpoint.clone();
            tokio::task::spawn_blocking(move || store.put(&c, &bytes))
                .await
                .map_err(|e| EngineError::Internal(format!("checkpoint writer: {e}")))??;
        }
        tracing::debug!(study = %checkpoint.trial.study, trial = checkpoint.trial.number, step = checkpoint.step, size = checkpoint.size, "checkpoint stored");
        Ok(checkpoint)
    }

    /// The checkpoint a resumed trial starts from: only the worker it is
    /// leased to may read it, and only the one its assignment names.
    pub async fn get_checkpoint(
        &self,
        worker: &WorkerId,
        attempt: u32,
        checkpoint: &CheckpointRef,
    ) -> Result<Vec<u8>, EngineError> {
        let t = self.leased_trial(worker, checkpoint.trial, attempt)?;
        if t.checkpoint.as_ref() != Some(checkpoint) {
            return Err(EngineError::FailedPrecondition(format!(
                "trial {} resumes from another checkpoint than step {} of attempt {}",
                checkpoint.trial, checkpoint.step, checkpoint.attempt
            )));
        }
        let store = self.inner.checkpoints.clone();
        let c = checkpoint.clone();
        Ok(tokio::task::spawn_blocking(move || store.get(&c))
            .await
            .map_err(|e| EngineError::Internal(format!("checkpoint reader: {e}")))??)
    }

    /// The final model of the study's best trial, kept by `keep_best`.
    pub async fn best_model(&self, id: StudyId) -> Result<(CheckpointRef, Vec<u8>), EngineError> {
        let record = self
            .inner
            .storage
            .study(id)?
            .ok_or_else(|| EngineError::NotFound(format!("study {id} not found")))?;
        if !record.spec.schedule.keep_best {
            return Err(EngineError::FailedPrecondition(format!(
                "study {id} keeps no model (its study file has no `[schedule] keep_best = true`)"
            )));
        }
        let info = self.study_info(id)?;
        let best = info.best.ok_or_else(|| {
            EngineError::NotFound(format!("study {id} has no completed trial yet"))
        })?;
        let store = self.inner.checkpoints.clone();
        let max = record.spec.schedule.max_resource;
        let found = store.find(best.id, best.attempt, max)?.ok_or_else(|| {
            EngineError::NotFound(format!(
                "the final model of trial {} (the best) was not uploaded",
                best.id
            ))
        })?;
        let c = found.clone();
        let bytes = if store.is_memory() {
            store.get(&c)?
        } else {
            tokio::task::spawn_blocking(move || store.get(&c))
                .await
                .map_err(|e| EngineError::Internal(format!("checkpoint reader: {e}")))??
        };
        Ok((found, bytes))
    }

    /// Checkpoints stored for a study (tests, the dashboard).
    pub fn checkpoint_count(&self, study: StudyId) -> usize {
        self.inner.checkpoints.count(study)
    }

    // ----- logs -----

    /// Appends a chunk of a trial's output (its program's stdout and
    /// stderr, at byte `offset` of `attempt`'s stream) to the trial's log,
    /// kept within the study's `[trainer] max_log_kib`.
    ///
    /// Logs bypass the study task: nothing about them is decided (no
    /// sampler, scheduler or lease reads them) and each storage verb is
    /// atomic, so appends and reads run beside the task instead of queueing
    /// behind reports. A trial that has ended still takes chunks (the tail
    /// of a crashed program arrives after its finish), and chunks of an
    /// older attempt are ignored; chunks of an attempt the trial has not
    /// reached, or of its current attempt from another worker, are refused.
    pub async fn append_log(
        &self,
        worker: &WorkerId,
        trial: TrialId,
        attempt: u32,
        offset: u64,
        text: &str,
    ) -> Result<(), EngineError> {
        let _timer = self.inner.telemetry.grpc.time("append_log");
        if text.len() > MAX_LOG_CHUNK {
            return Err(EngineError::InvalidArgument(format!(
                "a log chunk of {} bytes is over the limit of {MAX_LOG_CHUNK}: send it in parts",
                text.len()
            )));
        }
        let max_bytes = self.log_bound(trial.study)?;
        let t = self
            .inner
            .storage
            .trial(trial)?
            .ok_or_else(|| EngineError::NotFound(format!("trial {trial} not found")))?;
        if attempt > t.attempt || (attempt == t.attempt && t.worker.as_ref() != Some(worker)) {
            return Err(EngineError::FailedPrecondition(format!(
                "trial {trial} attempt {attempt} did not run on worker {worker} (it is {}, attempt {})",
                t.state, t.attempt
            )));
        }
        self.inner
            .storage
            .append_log(trial, attempt, offset, text, max_bytes)?;
        self.sync().await?;
        self.inner
            .telemetry
            .log_bytes
            .fetch_add(text.len() as u64, Ordering::Relaxed);
        let _ = self.inner.live.send(LiveEvent {
            study: trial.study.0,
            trial: Some(trial.number),
            kind: LiveKind::Log,
            state: None,
            step: None,
            value: None,
        });
        Ok(())
    }

    /// What is kept of a trial's log from logical position `offset` on
    /// (`start + text.len() == total`; read on from `total`). Read straight
    /// from storage, like every other read.
    pub fn trial_log(&self, trial: TrialId, offset: u64) -> Result<TrialLogView, EngineError> {
        match self.inner.storage.trial_log(trial, offset) {
            Ok(log) => Ok(log),
            Err(StorageError::NotFound(_)) => Err(match self.inner.storage.study(trial.study)? {
                None => EngineError::NotFound(format!("study {} not found", trial.study)),
                Some(_) => EngineError::NotFound(format!("trial {trial} not found")),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// The study's bound on each trial's log in bytes: `[trainer]
    /// max_log_kib`, or `DEFAULT_MAX_LOG_KIB`.
    fn log_bound(&self, study: StudyId) -> Result<u64, EngineError> {
        if let Some(b) = read(&self.inner.log_bounds).get(&study) {
            return Ok(*b);
        }
        let record = self
            .inner
            .storage
            .study(study)?
            .ok_or_else(|| EngineError::NotFound(format!("study {study} not found")))?;
        let kib = match record.spec.trainer.settings.get("max_log_kib") {
            Some(hpo_proto::ParamValue::Int(k)) if *k > 0 => *k as u64,
            Some(hpo_proto::ParamValue::Float(k)) if *k >= 1.0 => *k as u64,
            _ => DEFAULT_MAX_LOG_KIB,
        };
        let bound = kib.saturating_mul(1024);
        write(&self.inner.log_bounds).insert(study, bound);
        Ok(bound)
    }

    /// A precise error for a call about a trial of a study that is not running.
    fn ended_trial(&self, trial: TrialId, e: EngineError) -> EngineError {
        match self.inner.storage.trial(trial) {
            Ok(None) if matches!(e, EngineError::FailedPrecondition(_)) => {
                EngineError::NotFound(format!("trial {trial} not found"))
            }
            Ok(Some(t)) if t.state.is_terminal() => EngineError::FailedPrecondition(format!(
                "trial {trial} has already ended ({})",
                t.state
            )),
            _ => e,
        }
    }

    /// Stops every study task and the flusher, and flushes storage. Studies
    /// stay "running" in storage and resume at the next start.
    pub async fn shutdown(&self) {
        write(&self.inner.studies).clear();
        let tasks: Vec<JoinHandle<()>> = lock(&self.inner.tasks).drain(..).collect();
        for t in tasks {
            let _ = t.await;
        }
        self.inner.durable.stop();
        if let Err(e) = self.inner.storage.flush() {
            tracing::error!(error = %e, "final flush failed");
        }
    }
}

/// The studies `[search] warm_start` names: each the latest study of that
/// name (or with that id) created before `before` (any, at submit), with the
/// same parameters and objective. Resolved the same way at every start, so
/// a restarted study learns from the same trials.
pub(crate) fn warm_start_studies(
    storage: &dyn Storage,
    spec: &StudySpec,
    before: Option<StudyId>,
) -> Result<Vec<StudyRecord>, EngineError> {
    if spec.search.warm_start.is_empty() {
        return Ok(Vec::new());
    }
    let all: Vec<StudyRecord> = storage
        .studies()?
        .into_iter()
        .filter(|s| before.is_none_or(|b| s.id < b))
        .collect();
    let mut out = Vec::new();
    for name in &spec.search.warm_start {
        let by_id = name.parse::<u64>().ok().map(StudyId);
        let found = all
            .iter()
            .rev()
            .find(|s| Some(s.id) == by_id || &s.spec.name == name)
            .ok_or_else(|| {
                EngineError::InvalidArgument(format!("no earlier study named `{name}`"))
            })?;
        if found.spec.params != spec.params {
            return Err(EngineError::InvalidArgument(format!(
                "study `{name}` (id {}) searched other parameters; warm starts need the same [params]",
                found.id
            )));
        }
        if found.spec.objective.metric != spec.objective.metric
            || found.spec.objective.direction != spec.objective.direction
        {
            return Err(EngineError::InvalidArgument(format!(
                "study `{name}` (id {}) had another objective ({} {})",
                found.id,
                found.spec.objective.direction.as_str(),
                found.spec.objective.metric
            )));
        }
        if !out.iter().any(|s: &StudyRecord| s.id == found.id) {
            out.push(found.clone());
        }
    }
    Ok(out)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

pub fn trial_info(t: &TrialRecord) -> TrialInfo {
    TrialInfo {
        id: t.id,
        state: t.state,
        params: t.params.clone(),
        value: t.value,
        last_step: t.last_step,
        attempt: t.attempt,
        worker: t.worker.clone(),
        reason: t.reason.clone(),
        started_at_ms: t.started_at_ms,
        ended_at_ms: t.ended_at_ms,
        bracket: t.placement.bracket,
        rung: t.placement.rung,
        budget: t.placement.budget,
        metrics: Vec::new(),
    }
}

/// A study's counts and best completed trial.
pub fn summarize(record: &StudyRecord, trials: &[TrialRecord]) -> StudyInfo {
    let dir = record.spec.objective.direction;
    let mut counts = TrialCounts::default();
    let mut best: Option<&TrialRecord> = None;
    let mut resource_used = 0u64;
    for t in trials {
        counts.add(t.state);
        resource_used += u64::from(t.last_step.unwrap_or(0));
        if t.state == TrialState::Completed
            && let Some(v) = t.value
            && best.and_then(|b| b.value).is_none_or(|b| dir.better(v, b))
        {
            best = Some(t);
        }
    }
    StudyInfo {
        id: record.id,
        name: record.spec.name.clone(),
        state: record.state,
        end_reason: record.end_reason.clone(),
        metric: record.spec.objective.metric.clone(),
        direction: dir,
        max_trials: record.spec.search.max_trials,
        scheduler: record.spec.schedule.algorithm.as_str().to_string(),
        resource_used,
        counts,
        best: best.map(trial_info),
        created_at_ms: record.created_at_ms,
        ended_at_ms: record.ended_at_ms,
        study_toml: record.study_toml.clone(),
    }
}
