//! The worker process: register, then one task per slot asks for trials and
//! runs each on a thread of its own, while a heartbeat task keeps the leases
//! alive and relays stop orders. Training never runs on the async runtime,
//! so a heartbeat is never late because an epoch is slow.

use crate::data::DataCache;
use crate::device::{Device, DeviceSpec};
use crate::logs::LogShipper;
use crate::trainer::{Reporter, TrainEnd, Trainers, TrialJob};
use hpo_proto::{Assignment, Decision, MetricValues, Outcome, TrialId, WorkerId};
use hpo_sdk::{SdkError, WorkerClient};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub coordinator: String,
    pub devices: DeviceSpec,
    /// Stable id; None picks `host-pid-random`.
    pub worker_id: Option<String>,
    /// Longest wait between asks when no trial is available.
    pub max_poll_interval: Duration,
}

impl WorkerConfig {
    pub fn new(coordinator: impl Into<String>, devices: DeviceSpec) -> Self {
        WorkerConfig {
            coordinator: coordinator.into(),
            devices,
            worker_id: None,
            max_poll_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{0}")]
    Devices(String),
    #[error("coordinator refused this worker: {0}")]
    Refused(String),
    #[error(transparent)]
    Sdk(#[from] SdkError),
}

/// A running trial's stop flag, shared with its training thread.
#[derive(Clone)]
struct RunningTrial {
    stop: Arc<AtomicBool>,
}

struct Shared {
    client: WorkerClient,
    hostname: String,
    slots: Vec<String>,
    running: Mutex<HashMap<TrialId, RunningTrial>>,
    /// Set on shutdown: trainers stop and their trials go back in the queue.
    interrupt: Arc<AtomicBool>,
    trainers: Trainers,
    runtime: tokio::runtime::Handle,
    max_poll: Duration,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Runs a worker until `shutdown` resolves. On shutdown, running trials are
/// interrupted and handed back to the queue.
pub async fn run(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let devices = config.devices.resolve().map_err(WorkerError::Devices)?;
    let host = hostname();
    let id = config.worker_id.clone().unwrap_or_else(|| {
        format!(
            "{host}-{}-{:04x}",
            std::process::id(),
            rand::random::<u16>()
        )
    });
    let channel = hpo_sdk::connect_lazy(&config.coordinator)?;
    let client = WorkerClient::new(channel, WorkerId(id.clone()));
    configure_threads(&devices);
    let shared = Arc::new(Shared {
        client,
        hostname: host,
        slots: devices.iter().map(|d| d.to_string()).collect(),
        running: Mutex::new(HashMap::new()),
        interrupt: Arc::new(AtomicBool::new(false)),
        trainers: Trainers::new(Arc::new(DataCache::new())),
        runtime: tokio::runtime::Handle::current(),
        max_poll: config.max_poll_interval,
    });

    let mut shutdown = std::pin::pin!(shutdown);
    let reg = tokio::select! {
        r = register(&shared, &config.coordinator) => r?,
        _ = &mut shutdown => return Ok(()),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    tracing::info!(worker = %id, slots = ?shared.slots, coordinator = %config.coordinator, "worker ready");

    let heartbeat = tokio::spawn(heartbeat_loop(
        shared.clone(),
        reg.heartbeat_interval,
        stop_rx.clone(),
    ));
    let mut slots = tokio::task::JoinSet::new();
    for device in devices {
        slots.spawn(slot_loop(shared.clone(), device, stop_rx.clone()));
    }

    shutdown.await;
    tracing::info!(worker = %id, "shutting down: interrupting running trials");
    shared.interrupt.store(true, Ordering::SeqCst);
    let _ = stop_tx.send(true);
    while slots.join_next().await.is_some() {}
    let _ = heartbeat.await;
    tracing::info!(worker = %id, "worker stopped");
    Ok(())
}

/// With several CPU slots, each trial gets its share of the cores instead of
/// every trial fighting over all of them.
fn configure_threads(devices: &[Device]) {
    let cpu_slots = devices
        .iter()
        .filter(|d| matches!(d, Device::Cpu(_)))
        .count();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Some(per) = cores.checked_div(cpu_slots) {
        tch::set_num_threads(per.max(1) as i32);
        // libtorch accepts this once per process, before any parallel work.
        static INTEROP: std::sync::Once = std::sync::Once::new();
        INTEROP.call_once(|| tch::set_num_interop_threads(1));
    }
}

/// Registers, retrying while the coordinator is unreachable.
async fn register(shared: &Shared, url: &str) -> Result<hpo_sdk::Registration, WorkerError> {
    let mut delay = Duration::from_millis(200);
    loop {
        match shared
            .client
            .register(&shared.hostname, &shared.slots)
            .await
        {
            Ok(r) => return Ok(r),
            Err(e) if e.is_transient() => {
                tracing::warn!(coordinator = url, error = %e, "coordinator not reachable, retrying");
            }
            Err(e) => return Err(WorkerError::Refused(e.to_string())),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn heartbeat_loop(shared: Arc<Shared>, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let ids: Vec<TrialId> = lock(&shared.running).keys().copied().collect();
        match shared.client.heartbeat(&ids).await {
            Ok(beat) => {
                if !beat.known {
                    // The coordinator restarted: introduce ourselves again.
                    if let Err(e) = shared
                        .client
                        .register(&shared.hostname, &shared.slots)
                        .await
                    {
                        tracing::warn!(worker = %shared.client.id(), error = %e, "re-registration failed");
                    } else {
                        tracing::info!(worker = %shared.client.id(), "re-registered with restarted coordinator");
                    }
                }
                let running = lock(&shared.running);
                for t in beat.stop {
                    if let Some(r) = running.get(&t) {
                        tracing::info!(study = %t.study, trial = t.number, "coordinator asked to stop");
                        r.stop.store(true, Ordering::SeqCst);
                    }
                }
            }
            Err(e) => tracing::warn!(worker = %shared.client.id(), error = %e, "heartbeat failed"),
        }
    }
}

async fn slot_loop(shared: Arc<Shared>, device: Device, mut stop: watch::Receiver<bool>) {
    let slot = device.to_string();
    let min_poll = Duration::from_millis(50);
    let mut idle = min_poll;
    loop {
        if *stop.borrow() {
            return;
        }
        let got = shared.client.acquire(&slot).await;
        let assignment = match got {
            Ok(Some(a)) => Some(a),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(worker = %shared.client.id(), slot, error = %e, "cannot get a trial");
                None
            }
        };
        let Some(assignment) = assignment else {
            tokio::select! {
                _ = tokio::time::sleep(idle) => {}
                _ = stop.changed() => return,
            }
            idle = (idle * 2).min(shared.max_poll);
            continue;
        };
        idle = min_poll;
        run_trial(&shared, device, assignment).await;
    }
}

/// Runs one trial on its own thread and tells the coordinator how it ended.
async fn run_trial(shared: &Arc<Shared>, device: Device, assignment: Assignment) {
    let trial = assignment.trial;
    let attempt = assignment.attempt;
    let stop = Arc::new(AtomicBool::new(false));
    lock(&shared.running).insert(trial, RunningTrial { stop: stop.clone() });
    tracing::info!(worker = %shared.client.id(), study = %trial.study, trial = trial.number, attempt, %device, params = ?assignment.params, "trial started");

    let assignment_max = assignment.max_resource;
    // A promoted or requeued trial resumes from its checkpoint.
    let resume = match &assignment.resume {
        None => Ok(None),
        Some(c) => download(shared, attempt, c).await.map(Some),
    };
    let max_log = match assignment.trainer.settings.get("max_log_kib") {
        Some(hpo_proto::ParamValue::Int(k)) if *k > 0 => *k as u64,
        _ => crate::logs::DEFAULT_MAX_LOG_KIB,
    } * 1024;
    let log = LogShipper::new(max_log);
    let shipping = tokio::spawn(log.clone().run(shared.client.clone(), trial, attempt));
    let result = match resume {
        Ok(resume) => train(shared, device, assignment, resume, stop, log.clone()).await,
        Err(reason) => Err(reason),
    };
    // The log's tail (a failure's reason is in it) lands before the finish.
    log.close();
    let mut shipping = shipping;
    if tokio::time::timeout(Duration::from_secs(10), &mut shipping)
        .await
        .is_err()
    {
        tracing::warn!(study = %trial.study, trial = trial.number, "coordinator did not take the rest of the log in 10 s");
        shipping.abort();
    }
    let interrupted = shared.interrupt.load(Ordering::SeqCst);
    let outcome = match result {
        // A trial that ran to its end is kept, shutdown or not.
        Ok(TrainEnd::Finished) => Outcome::Completed,
        Ok(TrainEnd::FinishedSaved { checkpoint }) => {
            let step = assignment_max;
            if let Err(reason) = upload(shared, trial, attempt, step, &checkpoint).await {
                // The trial's result stands; only its model is lost.
                tracing::warn!(study = %trial.study, trial = trial.number, %reason, "final model not uploaded");
            }
            Outcome::Completed
        }
        // So is a paused one, once its checkpoint is stored.
        Ok(TrainEnd::Paused { step, checkpoint }) => {
            match upload(shared, trial, attempt, step, &checkpoint).await {
                Ok(()) => Outcome::Paused { step },
                Err(_) if interrupted => Outcome::Interrupted,
                Err(reason) => Outcome::Failed(reason),
            }
        }
        _ if interrupted => Outcome::Interrupted,
        Ok(TrainEnd::Stopped) => Outcome::Completed,
        Err(reason) => Outcome::Failed(reason),
    };
    finish(shared, trial, attempt, &outcome).await;
    lock(&shared.running).remove(&trial);
}

/// Runs the trainer on a thread of its own and waits for it without
/// blocking the runtime.
async fn train(
    shared: &Arc<Shared>,
    device: Device,
    assignment: Assignment,
    resume: Option<Vec<u8>>,
    stop: Arc<AtomicBool>,
    log: LogShipper,
) -> Result<TrainEnd, String> {
    let trial = assignment.trial;
    let attempt = assignment.attempt;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread_shared = shared.clone();
    let job = TrialJob {
        assignment,
        device,
        resume,
    };
    let spawned = std::thread::Builder::new()
        .name(format!("trial-{trial}"))
        .spawn(move || {
            let mut reporter = RemoteReporter {
                shared: thread_shared.clone(),
                trial,
                attempt,
                stop: stop.clone(),
                log,
            };
            let kind = job.assignment.trainer.kind.clone();
            let result = match thread_shared.trainers.get(&kind) {
                None => Err(format!("this worker has no trainer `{kind}`")),
                Some(trainer) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    trainer.train(&job, &mut reporter)
                }))
                .map_err(|p| {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "unknown panic".into());
                    format!("trainer panicked: {msg}")
                })
                .and_then(|r| r.map_err(|e| e.to_string())),
            };
            let _ = tx.send(result);
        });
    match spawned {
        Ok(_) => rx
            .await
            .unwrap_or_else(|_| Err("training thread vanished".into())),
        Err(e) => Err(format!("cannot start training thread: {e}")),
    }
}

/// Retries a call while the coordinator is unreachable, up to about five
/// minutes, so a restart does not cost a trial its checkpoint.
async fn retry<T, F, Fut>(what: &str, trial: TrialId, mut call: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError>>,
{
    let mut delay = Duration::from_millis(100);
    for _ in 0..60 {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() => {
                tracing::warn!(study = %trial.study, trial = trial.number, error = %e, "{what} failed, retrying");
            }
            Err(e) => return Err(format!("{what}: {e}")),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    Err(format!("{what}: coordinator unreachable"))
}

async fn download(
    shared: &Shared,
    attempt: u32,
    checkpoint: &hpo_proto::CheckpointRef,
) -> Result<Vec<u8>, String> {
    let bytes = retry("checkpoint download", checkpoint.trial, || {
        shared.client.download_checkpoint(attempt, checkpoint)
    })
    .await?;
    tracing::info!(study = %checkpoint.trial.study, trial = checkpoint.trial.number, step = checkpoint.step, size = bytes.len(), "resuming from checkpoint");
    Ok(bytes)
}

async fn upload(
    shared: &Shared,
    trial: TrialId,
    attempt: u32,
    step: u32,
    bytes: &[u8],
) -> Result<(), String> {
    retry("checkpoint upload", trial, || {
        shared.client.upload_checkpoint(trial, attempt, step, bytes)
    })
    .await?;
    tracing::info!(study = %trial.study, trial = trial.number, step, size = bytes.len(), "checkpoint uploaded");
    Ok(())
}

/// Tells the coordinator how a trial ended, retrying while it is unreachable
/// (a finished trial must never be lost to a blip or a restart).
async fn finish(shared: &Shared, trial: TrialId, attempt: u32, outcome: &Outcome) {
    let mut delay = Duration::from_millis(100);
    for _ in 0..60 {
        match shared.client.finish(trial, attempt, outcome).await {
            Ok(state) => {
                tracing::info!(worker = %shared.client.id(), study = %trial.study, trial = trial.number, %state, "trial finished");
                return;
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(study = %trial.study, trial = trial.number, error = %e, "finish not delivered, retrying");
            }
            Err(e) => {
                tracing::warn!(study = %trial.study, trial = trial.number, error = %e, "coordinator refused finish");
                return;
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    tracing::error!(study = %trial.study, trial = trial.number, "gave up delivering finish; the lease will expire");
}

/// Bridges a training thread to the coordinator: each report blocks the
/// thread (not the runtime) until the answer arrives.
struct RemoteReporter {
    shared: Arc<Shared>,
    trial: TrialId,
    attempt: u32,
    stop: Arc<AtomicBool>,
    log: LogShipper,
}

impl Reporter for RemoteReporter {
    fn report(&mut self, step: u32, values: MetricValues) -> Decision {
        let shared = self.shared.clone();
        let (trial, attempt) = (self.trial, self.attempt);
        let stop = self.stop.clone();
        let interrupt = self.shared.interrupt.clone();
        let decision = self.shared.runtime.block_on(async move {
            let mut delay = Duration::from_millis(100);
            loop {
                match shared.client.report(trial, attempt, step, &values).await {
                    Ok(d) => return d,
                    Err(e) if e.is_transient() => {
                        // Keep the report until the coordinator is back: it
                        // must not be lost, and reports are idempotent.
                        tracing::warn!(study = %trial.study, trial = trial.number, step, error = %e, "report not delivered, retrying");
                    }
                    Err(e) => {
                        tracing::warn!(study = %trial.study, trial = trial.number, step, error = %e, "report refused; stopping trial");
                        return Decision::Stop;
                    }
                }
                if stop.load(Ordering::SeqCst) || interrupt.load(Ordering::SeqCst) {
                    return Decision::Stop;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        });
        if decision == Decision::Stop {
            self.stop.store(true, Ordering::SeqCst);
        }
        decision
    }

    fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.shared.interrupt.load(Ordering::Relaxed)
    }

    fn log(&mut self, text: &str) {
        self.log.push(text);
    }
}
