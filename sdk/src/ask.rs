//! Ask and tell: the user's own process runs the trials of a study, asking
//! the coordinator for configurations and telling it the results, with no
//! worker in between. It speaks the worker protocol under a worker id of its
//! own (`ask-<host>-<pid>`, one slot `client:0`).
//!
//! A background task owned by the `AskTell` heartbeats the trials it holds
//! (so their leases never expire while the user computes) and finishes the
//! trials dropped without a `tell` as failed ("dropped without tell"). It
//! stops when the `AskTell` is dropped or closed; from then on a held trial
//! can still be told, but nothing renews its lease, and one dropped untold
//! is left to lease expiry (the study runs it again, up to `max_retries`).

use crate::{Client, Registration, Result, SdkError, WorkerClient};
use hpo_proto::{
    Assignment, Decision, MetricValues, Outcome, PROTOCOL_VERSION, ParamValue, Params, StudyId,
    StudyState, TrialId, TrialState, WorkerId, pb,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// The one slot an ask-and-tell client registers.
pub const ASK_SLOT: &str = "client:0";
/// The longest wait between two acquires while the study has no trial.
const MAX_POLL: Duration = Duration::from_secs(1);
/// The first wait after an empty acquire.
const MIN_POLL: Duration = Duration::from_millis(20);
/// The reason a trial dropped without `tell` or `fail` fails with.
pub const DROPPED_REASON: &str = "dropped without tell";

impl WorkerClient {
    /// A trial of `study` only, of any trainer kind (an ask-and-tell
    /// client's acquire). None when it has none now, or has ended (its
    /// state says which); an unknown study is an error (NOT_FOUND).
    pub async fn acquire_from(&self, slot: &str, study: StudyId) -> Result<Option<Assignment>> {
        let r = self
            .inner
            .clone()
            .acquire_trial(pb::AcquireTrialRequest {
                worker_id: self.id.0.clone(),
                slot: slot.to_string(),
                study_id: Some(study.0),
            })
            .await?
            .into_inner();
        Ok(r.trial.map(Assignment::try_from).transpose()?)
    }
}

impl SdkError {
    /// What a refused `Register` becomes: `Incompatible` when the
    /// coordinator speaks another protocol version (its message kept as it
    /// is), the status otherwise.
    pub fn registration(status: tonic::Status) -> SdkError {
        let message = status.message();
        if status.code() == tonic::Code::FailedPrecondition && message.contains("protocol") {
            return SdkError::Incompatible {
                sdk: PROTOCOL_VERSION,
                coordinator: coordinator_version(message),
                message: message.to_string(),
            };
        }
        SdkError::Status(status)
    }
}

/// The number after "coordinator speaks" in the coordinator's refusal.
fn coordinator_version(message: &str) -> Option<u32> {
    let rest = message.split("coordinator speaks").nth(1)?;
    let rest = rest
        .trim_start()
        .trim_start_matches("protocol")
        .trim_start();
    let rest = rest.trim_start_matches("version").trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// This process's hostname, as workers name theirs.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// `ask-<host>-<pid>`, then `-2`, `-3`... for further clients of one process.
fn worker_id(host: &str) -> WorkerId {
    static CLIENTS: AtomicU32 = AtomicU32::new(0);
    let n = CLIENTS.fetch_add(1, Ordering::Relaxed);
    let base = format!("ask-{host}-{}", std::process::id());
    WorkerId(if n == 0 {
        base
    } else {
        format!("{base}-{}", n + 1)
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A trial dropped untold, for the background task to fail.
struct Dropped {
    trial: TrialId,
    attempt: u32,
}

/// What the client and its trials share with the background task.
struct Shared {
    worker: WorkerClient,
    hostname: String,
    /// Trials asked and not yet finished, with their stop flags.
    held: Mutex<HashMap<TrialId, Arc<AtomicBool>>>,
    dropped: mpsc::UnboundedSender<Dropped>,
}

impl Shared {
    async fn register(&self) -> Result<Registration> {
        self.worker
            .register(&self.hostname, &[ASK_SLOT.to_string()])
            .await
    }

    /// One heartbeat for every held trial. A failed beat is not fatal: a
    /// lease outlives three heartbeat intervals.
    async fn beat(&self) {
        let ids: Vec<TrialId> = lock(&self.held).keys().copied().collect();
        let Ok(beat) = self.worker.heartbeat(&ids).await else {
            return;
        };
        if !beat.known {
            // The coordinator restarted: introduce ourselves again.
            let _ = self.register().await;
        }
        let held = lock(&self.held);
        for t in beat.stop {
            if let Some(flag) = held.get(&t) {
                flag.store(true, Ordering::SeqCst);
            }
        }
    }

    async fn fail_dropped(&self, d: Dropped) {
        let outcome = Outcome::Failed(DROPPED_REASON.into());
        // Best effort: if the coordinator does not hear it, the lease ends.
        let _ = self.worker.finish(d.trial, d.attempt, &outcome).await;
    }
}

/// The background task: heartbeats, and failing dropped trials, until the
/// owner stops it (or is dropped).
async fn background(
    shared: Arc<Shared>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
    mut dropped: mpsc::UnboundedReceiver<Dropped>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => shared.beat().await,
            Some(d) = dropped.recv() => shared.fail_dropped(d).await,
            _ = stop.changed() => break,
        }
    }
    // Trials dropped before the stop are still failed.
    while let Ok(d) = dropped.try_recv() {
        shared.fail_dropped(d).await;
    }
}

/// An ask-and-tell client of one study: `ask` for a trial, evaluate it in
/// this process, `report` along the way, `tell` the result. Several trials
/// may be held at once (up to the study's `max_parallel`) and told in any
/// order; `ask` takes `&self`, so tasks may share one client.
///
/// The study may have any trainer kind: with `kind = "external"` no worker
/// takes its trials, with another kind workers and this client share them.
pub struct AskTell {
    study: StudyId,
    client: Client,
    shared: Arc<Shared>,
    registration: Registration,
    stop: Option<watch::Sender<bool>>,
    task: Option<JoinHandle<()>>,
}

impl AskTell {
    /// Connects to the coordinator at `url` and registers as a worker with
    /// one slot. A coordinator of another protocol version is refused with
    /// `SdkError::Incompatible`.
    pub async fn connect(url: &str, study: StudyId) -> Result<AskTell> {
        let channel = crate::connect(url).await?;
        AskTell::with_channel(channel, study).await
    }

    /// As `connect`, over a channel the caller made.
    pub async fn with_channel(
        channel: tonic::transport::Channel,
        study: StudyId,
    ) -> Result<AskTell> {
        let host = hostname();
        let client = Client::new(channel.clone());
        // Fail now on an unknown study rather than at the first ask.
        client.study(study).await?;
        let (dropped_tx, dropped_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            worker: WorkerClient::new(channel, worker_id(&host)),
            hostname: host,
            held: Mutex::new(HashMap::new()),
            dropped: dropped_tx,
        });
        let registration = shared.register().await?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(background(
            shared.clone(),
            registration.heartbeat_interval,
            stop_rx,
            dropped_rx,
        ));
        Ok(AskTell {
            study,
            client,
            shared,
            registration,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    pub fn study(&self) -> StudyId {
        self.study
    }

    /// The worker id this client registered under.
    pub fn worker_id(&self) -> &WorkerId {
        self.shared.worker.id()
    }

    /// The coordinator's answer to the registration (lease time, heartbeat
    /// interval).
    pub fn registration(&self) -> &Registration {
        &self.registration
    }

    /// The next trial of the study, waiting (polling with a backoff up to a
    /// second) while the study has none to give now; None once the study
    /// has ended. While this client holds `max_parallel` trials the study
    /// gives no more until one is told: tell them from other tasks, or use
    /// `try_ask` to fill a batch.
    pub async fn ask(&self) -> Result<Option<AskedTrial>> {
        let mut delay = MIN_POLL;
        loop {
            if let Some(t) = self.try_ask().await? {
                return Ok(Some(t));
            }
            if self.client.study(self.study).await?.state != StudyState::Running {
                return Ok(None);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_POLL);
        }
    }

    /// A trial if the study has one now, without waiting; None says nothing
    /// about whether the study has ended (`ask` does).
    pub async fn try_ask(&self) -> Result<Option<AskedTrial>> {
        let Some(a) = self
            .shared
            .worker
            .acquire_from(ASK_SLOT, self.study)
            .await?
        else {
            return Ok(None);
        };
        let stop = Arc::new(AtomicBool::new(false));
        lock(&self.shared.held).insert(a.trial, stop.clone());
        let last_step = a.resume.as_ref().map_or(0, |c| c.step);
        Ok(Some(AskedTrial {
            shared: self.shared.clone(),
            assignment: a,
            stop,
            last_step,
            last_objective: None,
            ended: false,
            finished: None,
        }))
    }

    /// Stops the background task after it has failed the trials dropped so
    /// far. Dropping the client stops it too, without waiting.
    pub async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for AskTell {
    fn drop(&mut self) {
        // Dropping the sender ends the task's `stop.changed()`.
        self.stop.take();
    }
}

/// One trial asked by an `AskTell`: its parameters, and the calls that
/// report on it and finish it. Heartbeated in the background until it is
/// told, failed or paused. Dropped without any of those, it is finished as
/// failed ("dropped without tell") by the client's background task.
pub struct AskedTrial {
    shared: Arc<Shared>,
    assignment: Assignment,
    stop: Arc<AtomicBool>,
    /// The highest step reported (the resumed step for a resumed trial).
    last_step: u32,
    /// The objective at `last_step`, if it was reported there.
    last_objective: Option<f64>,
    /// The coordinator has ended the trial (a scheduler's stop).
    ended: bool,
    finished: Option<TrialState>,
}

impl std::fmt::Debug for AskedTrial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AskedTrial")
            .field("trial", &self.assignment.trial)
            .field("attempt", &self.assignment.attempt)
            .field("params", &self.assignment.params)
            .field("last_step", &self.last_step)
            .field("finished", &self.finished)
            .finish()
    }
}

impl AskedTrial {
    pub fn id(&self) -> TrialId {
        self.assignment.trial
    }

    /// The trial's number in its study.
    pub fn number(&self) -> u32 {
        self.assignment.trial.number
    }

    /// Everything the coordinator sent: attempt, seed, budget, resume point.
    pub fn assignment(&self) -> &Assignment {
        &self.assignment
    }

    pub fn params(&self) -> &Params {
        &self.assignment.params
    }

    fn param(&self, name: &str) -> Result<&ParamValue> {
        self.assignment
            .params
            .get(name)
            .ok_or_else(|| SdkError::Param {
                name: name.to_string(),
                reason: format!(
                    "not in this trial (it has: {})",
                    self.assignment
                        .params
                        .keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }

    /// A float parameter (an integer one converts).
    pub fn param_f64(&self, name: &str) -> Result<f64> {
        match self.param(name)? {
            ParamValue::Float(v) => Ok(*v),
            ParamValue::Int(v) => Ok(*v as f64),
            ParamValue::Categorical(s) => Err(type_error(name, "a number", s)),
        }
    }

    pub fn param_i64(&self, name: &str) -> Result<i64> {
        match self.param(name)? {
            ParamValue::Int(v) => Ok(*v),
            other => Err(type_error(name, "an integer", other)),
        }
    }

    pub fn param_str(&self, name: &str) -> Result<&str> {
        match self.param(name)? {
            ParamValue::Categorical(s) => Ok(s),
            other => Err(type_error(name, "a string", other)),
        }
    }

    /// The coordinator asked this trial to stop (a heartbeat's answer: the
    /// study ended or was cancelled, or the lease was lost).
    pub fn should_stop(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn check_open(&self) -> Result<()> {
        match self.finished {
            Some(state) => Err(SdkError::Status(tonic::Status::failed_precondition(
                format!(
                    "trial {} is already finished ({state})",
                    self.assignment.trial
                ),
            ))),
            None => Ok(()),
        }
    }

    /// Reports one step's metrics (the study's objective among them for the
    /// scheduler to judge) and returns its decision. On `Stop` the trial has
    /// ended: `tell` then only finishes it. On `Pause` a checkpoint is
    /// expected (`pause`).
    pub async fn report<K: Into<String>>(
        &mut self,
        step: u32,
        values: impl IntoIterator<Item = (K, f64)>,
    ) -> Result<Decision> {
        self.check_open()?;
        let values: MetricValues = values.into_iter().map(|(k, v)| (k.into(), v)).collect();
        let a = &self.assignment;
        let decision = self
            .shared
            .worker
            .report(a.trial, a.attempt, step, &values)
            .await?;
        if step >= self.last_step {
            if step > self.last_step {
                self.last_objective = None;
            }
            self.last_step = step;
            if let Some(v) = values.get(&a.metric) {
                self.last_objective = Some(*v);
            }
        }
        if decision == Decision::Stop {
            self.ended = true;
        }
        Ok(decision)
    }

    /// Finishes the trial as completed with `value` as its objective: the
    /// value is reported at the next step first, unless it is what the last
    /// step reported (or the coordinator has already stopped the trial).
    /// Returns the trial's final state; on an error the trial is still held
    /// and the call may be repeated.
    pub async fn tell(&mut self, value: f64) -> Result<TrialState> {
        self.check_open()?;
        if !self.ended && self.last_objective != Some(value) {
            let metric = self.assignment.metric.clone();
            self.report(self.last_step + 1, [(metric, value)]).await?;
        }
        self.finish(Outcome::Completed).await
    }

    /// Finishes the trial as failed, with `reason`.
    pub async fn fail(&mut self, reason: &str) -> Result<TrialState> {
        self.check_open()?;
        self.finish(Outcome::Failed(reason.to_string())).await
    }

    /// After a `Pause` decision at `step`: stores the checkpoint to resume
    /// from and gives the trial back until the scheduler promotes it (a
    /// later `ask` may then return it, with `checkpoint` to load).
    pub async fn pause(&mut self, step: u32, checkpoint: &[u8]) -> Result<TrialState> {
        self.check_open()?;
        let a = &self.assignment;
        self.shared
            .worker
            .upload_checkpoint(a.trial, a.attempt, step, checkpoint)
            .await?;
        self.finish(Outcome::Paused { step }).await
    }

    /// The checkpoint a resumed (promoted) trial starts from, None for a
    /// fresh one.
    pub async fn checkpoint(&self) -> Result<Option<Vec<u8>>> {
        match &self.assignment.resume {
            None => Ok(None),
            Some(c) => Ok(Some(
                self.shared
                    .worker
                    .download_checkpoint(self.assignment.attempt, c)
                    .await?,
            )),
        }
    }

    async fn finish(&mut self, outcome: Outcome) -> Result<TrialState> {
        let a = &self.assignment;
        let state = self
            .shared
            .worker
            .finish(a.trial, a.attempt, &outcome)
            .await?;
        self.finished = Some(state);
        lock(&self.shared.held).remove(&a.trial);
        Ok(state)
    }
}

fn type_error(name: &str, expected: &str, got: impl std::fmt::Display) -> SdkError {
    SdkError::Param {
        name: name.to_string(),
        reason: format!("expected {expected}, got {got}"),
    }
}

impl Drop for AskedTrial {
    fn drop(&mut self) {
        if self.finished.is_some() {
            return;
        }
        lock(&self.shared.held).remove(&self.assignment.trial);
        // Closed once the client's task has stopped: the lease then ends.
        let _ = self.shared.dropped.send(Dropped {
            trial: self.assignment.trial,
            attempt: self.assignment.attempt,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_protocol_refusal_keeps_the_coordinators_message() {
        let msg = "worker speaks protocol version 2, this coordinator speaks 3: run the same hpo release on both";
        let e = SdkError::registration(tonic::Status::failed_precondition(msg));
        match &e {
            SdkError::Incompatible {
                sdk,
                coordinator,
                message,
            } => {
                assert_eq!(*sdk, PROTOCOL_VERSION);
                assert_eq!(*coordinator, Some(3));
                assert_eq!(message, msg);
            }
            other => panic!("{other:?}"),
        }
        let shown = e.to_string();
        assert!(shown.contains(msg), "{shown}");
        assert!(
            shown.contains(&format!(
                "this hpo-sdk speaks protocol version {PROTOCOL_VERSION}"
            )),
            "{shown}"
        );
        // Other refusals stay statuses.
        let e = SdkError::registration(tonic::Status::invalid_argument("a worker needs a slot"));
        assert_eq!(e.code(), Some(tonic::Code::InvalidArgument));
    }

    #[test]
    fn coordinator_versions_are_read_from_either_wording() {
        assert_eq!(
            coordinator_version("x, this coordinator speaks 3: y"),
            Some(3)
        );
        assert_eq!(
            coordinator_version("coordinator speaks protocol 12, this sdk 3"),
            Some(12)
        );
        assert_eq!(coordinator_version("protocol mismatch"), None);
    }
}
