//! Domain types shared by the coordinator, workers and clients. They are plain
//! Rust values, never prost messages, so the rest of the code cannot depend on
//! the wire format by accident.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A study's id: allocated by the coordinator's storage, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StudyId(pub u64);

impl fmt::Display for StudyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A trial is numbered 0, 1, 2, ... within its study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TrialId {
    pub study: StudyId,
    pub number: u32,
}

impl fmt::Display for TrialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.study, self.number)
    }
}

/// Chosen by the worker process and kept across its reconnects, so the
/// coordinator can hand a reconnecting worker its own trials back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WorkerId(pub String);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ParamValue {
    Float(f64),
    Int(i64),
    Categorical(String),
}

impl ParamValue {
    /// The value as a number, for trainers and samplers that need one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ParamValue::Float(v) => Some(*v),
            ParamValue::Int(v) => Some(*v as f64),
            ParamValue::Categorical(_) => None,
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Float(v) => write!(f, "{v}"),
            ParamValue::Int(v) => write!(f, "{v}"),
            ParamValue::Categorical(v) => f.write_str(v),
        }
    }
}

/// A configuration: parameter name to value, in name order.
pub type Params = BTreeMap<String, ParamValue>;
/// One step's metrics: metric name to value.
pub type MetricValues = BTreeMap<String, f64>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TrialState {
    Waiting,
    Running,
    /// Reached a rung of its scheduler and gave its slot back; its checkpoint
    /// is kept so a promotion resumes it where it stopped.
    Paused,
    Completed,
    Failed,
    /// Ended early by a study rule or a scheduler; its metrics are kept.
    Stopped,
    Cancelled,
}

impl TrialState {
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            TrialState::Waiting | TrialState::Running | TrialState::Paused
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TrialState::Waiting => "waiting",
            TrialState::Running => "running",
            TrialState::Paused => "paused",
            TrialState::Completed => "completed",
            TrialState::Failed => "failed",
            TrialState::Stopped => "stopped",
            TrialState::Cancelled => "cancelled",
        }
    }

    pub const ALL: [TrialState; 7] = [
        TrialState::Waiting,
        TrialState::Running,
        TrialState::Paused,
        TrialState::Completed,
        TrialState::Failed,
        TrialState::Stopped,
        TrialState::Cancelled,
    ];

    /// The state named `s` (as `as_str` writes it).
    pub fn parse(s: &str) -> Option<TrialState> {
        TrialState::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for TrialState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StudyState {
    Running,
    Completed,
    Cancelled,
}

impl StudyState {
    pub fn as_str(self) -> &'static str {
        match self {
            StudyState::Running => "running",
            StudyState::Completed => "completed",
            StudyState::Cancelled => "cancelled",
        }
    }

    /// The state named `s` (as `as_str` writes it).
    pub fn parse(s: &str) -> Option<StudyState> {
        [
            StudyState::Running,
            StudyState::Completed,
            StudyState::Cancelled,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }
}

impl fmt::Display for StudyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    Maximize,
    Minimize,
}

impl Direction {
    /// True when `a` is strictly better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Direction::Maximize => a > b,
            Direction::Minimize => a < b,
        }
    }

    /// True when `value` reaches `target` (at least as good).
    pub fn reaches(self, value: f64, target: f64) -> bool {
        match self {
            Direction::Maximize => value >= target,
            Direction::Minimize => value <= target,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Maximize => "maximize",
            Direction::Minimize => "minimize",
        }
    }
}

/// The answer to a metric report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Decision {
    Continue,
    /// Ends the trial for good (it is not promising).
    Stop,
    /// The trial reached a rung: save a checkpoint, upload it, give the slot
    /// back (`Outcome::Paused`). A promotion resumes it later, on any worker.
    Pause,
}

/// How a worker says a trial's attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The trainer ran to its end, or stopped when told to.
    Completed,
    /// The trainer failed.
    Failed(String),
    /// The worker is going away: the trial goes back in the queue.
    Interrupted,
    /// The trainer stopped at `step` after a pause decision (or at the end of
    /// its budget) and the checkpoint of that step was uploaded.
    Paused { step: u32 },
}

/// What a worker needs to run one trial.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub trial: TrialId,
    pub attempt: u32,
    pub study_name: String,
    pub params: Params,
    pub trainer: TrainerConfig,
    pub seed: u64,
    pub metric: String,
    /// What the trainer's steps count and how far this segment may go.
    pub resource: Resource,
    /// Train up to this resource level (a step for `Epochs`), then pause
    /// unless it is `max_resource`.
    pub budget: u32,
    pub max_resource: u32,
    /// Where a promoted or requeued trial starts again: its checkpoint.
    pub resume: Option<CheckpointRef>,
    /// Upload a checkpoint at `max_resource` before finishing (the study
    /// keeps its best trial's final model).
    pub save_final: bool,
}

/// What a trial's budget is measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Resource {
    /// Epochs: one step per epoch; a budget of `b` trains epochs 1..=b.
    #[default]
    Epochs,
    /// A fraction of the training set: a budget of `b` trains the trainer's
    /// `epochs` on the first `b / max_resource` of a fixed shuffle of the
    /// training set, and reports once, at step `b`.
    DataFraction,
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Epochs => "epochs",
            Resource::DataFraction => "data_fraction",
        }
    }
}

/// A stored checkpoint: the state of a trial after `step`, saved by the worker
/// that ran `attempt`. `crc32` and `size` let the receiver check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRef {
    pub trial: TrialId,
    pub attempt: u32,
    pub step: u32,
    pub size: u64,
    pub crc32: u32,
}

/// The `[trainer]` table: which trainer, on what data, for how long, and the
/// fixed (not searched) settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerConfig {
    pub kind: String,
    pub dataset: String,
    pub epochs: u32,
    pub settings: Params,
    /// `kind = "command"`: the program and its arguments, placeholders
    /// (`{budget}`, `{trial}`, ...) unfilled: the worker fills them per
    /// segment.
    #[serde(default)]
    pub command: Vec<String>,
    /// `kind = "command"`: extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `kind = "command"`: the program's directory on the worker ("" for
    /// the worker's own).
    #[serde(default)]
    pub working_dir: String,
    /// `kind = "command"`: pass the parameters as `--name value` too.
    #[serde(default)]
    pub param_flags: bool,
}

/// Milliseconds since the Unix epoch, the one clock format stored and sent.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One step's metrics of one attempt of a trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    pub attempt: u32,
    pub step: u32,
    pub values: MetricValues,
}

/// A trial as clients see it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialInfo {
    pub id: TrialId,
    pub state: TrialState,
    pub params: Params,
    pub value: Option<f64>,
    pub last_step: Option<u32>,
    pub attempt: u32,
    pub worker: Option<WorkerId>,
    pub reason: String,
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    /// The scheduler's placement: Hyperband bracket, rung index, and the
    /// resource level the trial is (or was last) trained to.
    pub bracket: u32,
    pub rung: u32,
    pub budget: u32,
    /// Filled only when asked for.
    pub metrics: Vec<MetricPoint>,
}

/// A study as clients see it: its state, counts and best trial.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyInfo {
    pub id: StudyId,
    pub name: String,
    pub state: StudyState,
    pub end_reason: String,
    pub metric: String,
    pub direction: Direction,
    pub max_trials: u32,
    /// The early-stopping scheduler ("none", "asha", ...).
    pub scheduler: String,
    /// Resource units (epochs) trained by all trials; resumes do not count
    /// twice.
    pub resource_used: u64,
    pub counts: TrialCounts,
    pub best: Option<TrialInfo>,
    pub created_at_ms: i64,
    pub ended_at_ms: i64,
    pub study_toml: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrialCounts {
    pub waiting: u32,
    pub running: u32,
    pub paused: u32,
    pub completed: u32,
    pub failed: u32,
    pub stopped: u32,
    pub cancelled: u32,
}

impl TrialCounts {
    pub fn add(&mut self, state: TrialState) {
        match state {
            TrialState::Waiting => self.waiting += 1,
            TrialState::Running => self.running += 1,
            TrialState::Paused => self.paused += 1,
            TrialState::Completed => self.completed += 1,
            TrialState::Failed => self.failed += 1,
            TrialState::Stopped => self.stopped += 1,
            TrialState::Cancelled => self.cancelled += 1,
        }
    }

    /// Trials that reached a terminal state.
    pub fn finished(&self) -> u32 {
        self.completed + self.failed + self.stopped + self.cancelled
    }
}

/// What is kept of a trial's log from `start` on (its program's stdout and
/// stderr, every attempt's in turn). `start + text.len() == total`; read
/// on from `total`. `start` is past the offset asked for when older output
/// was dropped to keep the log within its bound (`dropped` bytes so far),
/// and the text then begins with a marker line saying so.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialLog {
    pub text: String,
    /// Position of `text` in the trial's whole log.
    pub start: u64,
    /// Bytes logged so far: the offset to read on from.
    pub total: u64,
    /// Bytes dropped so far to keep the log within its bound.
    pub dropped: u64,
}
