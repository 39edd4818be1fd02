//! The `Trainer` seam: one trial, run to its end on a thread of its own.
//!
//! Trainers are blocking code (libtorch, a child process, a sleep) and never
//! run on the async runtime; the worker gives each slot a dedicated thread and
//! bridges reports to the coordinator through a `Reporter`.

mod cnn;
mod command;
mod function;
mod mlp;
mod models;
pub mod schedule;
mod simulated;
mod table;

pub use command::{CommandTrainer, pack_dir, unpack_dir};
pub use function::{FunctionTrainer, FunctionTrial};
pub use mlp::{CnnTrainer, MlpTrainer, ResNetTrainer, SAMPLES_PER_SEC};
pub use simulated::SimulatedTrainer;
pub use table::TableTrainer;

use crate::data::DataCache;
use crate::device::Device;
use hpo_proto::{Assignment, Decision, MetricValues};
use std::sync::Arc;

/// One trial as a trainer sees it: one segment of it, from the checkpoint it
/// resumes from (if any) up to `assignment.budget`.
#[derive(Debug, Clone)]
pub struct TrialJob {
    pub assignment: Assignment,
    /// The slot's device: the trainer must put its tensors there.
    pub device: Device,
    /// The bytes this trainer returned in `TrainEnd::Paused` for the step
    /// `assignment.resume` names; None for a fresh start.
    pub resume: Option<Vec<u8>>,
}

impl TrialJob {
    /// The step training resumes after (0 for a fresh start).
    pub fn start_step(&self) -> u32 {
        self.assignment.resume.as_ref().map_or(0, |c| c.step)
    }
}

/// The trainer's line to the coordinator.
pub trait Reporter {
    /// Sends the metrics of one step (an epoch; steps count from 1) and
    /// returns the coordinator's decision. Blocks until it is known.
    fn report(&mut self, step: u32, values: MetricValues) -> Decision;
    /// True once the trial must stop (cancelled, study ended, worker shutting
    /// down). Cheap: trainers poll it between batches.
    fn stop_requested(&self) -> bool;
    /// Appends to the trial's log (a program's stdout and stderr). Never
    /// blocks: the worker ships the text in the background, bounded.
    fn log(&mut self, _text: &str) {}
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A setting or parameter the trainer cannot use.
    #[error("invalid trial setting: {0}")]
    Invalid(String),
    #[error("data set: {0}")]
    Data(#[from] crate::data::DataError),
    #[error("libtorch: {0}")]
    Torch(String),
    #[error("{0}")]
    Other(String),
}

impl From<tch::TchError> for TrainError {
    fn from(e: tch::TchError) -> Self {
        TrainError::Torch(e.to_string())
    }
}

/// How a trainer's run ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrainEnd {
    /// Trained to `max_resource`.
    Finished,
    /// Trained to `max_resource`, with the final model the assignment asked
    /// for (`save_final`), in the checkpoint format a resume would read.
    FinishedSaved { checkpoint: Vec<u8> },
    /// A report was answered with stop, or a stop was requested.
    Stopped,
    /// A report was answered with pause, or the segment reached its budget
    /// below `max_resource`: `checkpoint` holds everything needed to go on
    /// from `step` exactly as if there had been no pause.
    Paused { step: u32, checkpoint: Vec<u8> },
}

pub trait Trainer: Send + Sync {
    /// Runs one segment of a trial on the calling thread: steps
    /// `job.start_step() + 1 ..= assignment.budget`, reporting each (for
    /// `Resource::DataFraction`, one report at step `budget`).
    fn train(&self, job: &TrialJob, reporter: &mut dyn Reporter) -> Result<TrainEnd, TrainError>;
}

/// The built-in trainers by the name a study file's `trainer.kind` uses.
pub struct Trainers {
    command: CommandTrainer,
    function: FunctionTrainer,
    mlp: MlpTrainer,
    cnn: CnnTrainer,
    resnet: ResNetTrainer,
    simulated: SimulatedTrainer,
    table: TableTrainer,
}

impl Trainers {
    pub fn new(data: Arc<DataCache>) -> Self {
        Trainers {
            command: CommandTrainer::default(),
            function: FunctionTrainer,
            mlp: MlpTrainer::new(Arc::clone(&data)),
            cnn: CnnTrainer::new(Arc::clone(&data)),
            resnet: ResNetTrainer::new(data),
            simulated: SimulatedTrainer,
            table: TableTrainer,
        }
    }

    pub fn get(&self, kind: &str) -> Option<&dyn Trainer> {
        match kind {
            "command" => Some(&self.command),
            "function" => Some(&self.function),
            "mlp" => Some(&self.mlp),
            "cnn" => Some(&self.cnn),
            "resnet" => Some(&self.resnet),
            "simulated" => Some(&self.simulated),
            "table" => Some(&self.table),
            _ => None,
        }
    }
}

/// How a segment that trained up to `budget` without being stopped ends:
/// paused below `max_resource`, else finished, with the final model when
/// the assignment asks for it. `checkpoint` saves the state after `budget`.
pub(crate) fn segment_end(
    job: &TrialJob,
    budget: u32,
    checkpoint: impl FnOnce() -> Result<Vec<u8>, TrainError>,
) -> Result<TrainEnd, TrainError> {
    let a = &job.assignment;
    if budget < a.max_resource {
        Ok(TrainEnd::Paused {
            step: budget,
            checkpoint: checkpoint()?,
        })
    } else if a.save_final {
        Ok(TrainEnd::FinishedSaved {
            checkpoint: checkpoint()?,
        })
    } else {
        Ok(TrainEnd::Finished)
    }
}

/// The checkpoint of a trainer whose whole state is the step it reached:
/// the text `{prefix}{step}`.
pub(crate) fn step_checkpoint(prefix: &str, step: u32) -> Vec<u8> {
    format!("{prefix}{step}").into_bytes()
}

/// The segment (start step, budget, max_resource) of a trainer that counts
/// steps only and checkpoints with `step_checkpoint`: refuses another
/// resource, a segment out of order, and a resume whose checkpoint is not
/// of the step it resumes after.
pub(crate) fn step_segment(
    job: &TrialJob,
    prefix: &str,
    trainer: &str,
) -> Result<(u32, u32, u32), TrainError> {
    let a = &job.assignment;
    if a.resource != hpo_proto::Resource::Epochs {
        return Err(TrainError::Invalid(format!(
            "the {trainer} trainer counts steps only; resource `{}` is not supported",
            a.resource.as_str()
        )));
    }
    let (start, budget, max) = (job.start_step(), a.budget, a.max_resource);
    if budget > max || start > budget {
        return Err(TrainError::Invalid(format!(
            "a segment from step {start} to budget {budget} of {max} is out of order"
        )));
    }
    check_step_checkpoint(job, prefix, trainer)?;
    Ok((start, budget, max))
}

/// Checks that `job.resume` is the step checkpoint of the step it resumes
/// after, so a mix-up of checkpoints fails as it would for a real trainer
/// instead of passing silently.
fn check_step_checkpoint(job: &TrialJob, prefix: &str, trainer: &str) -> Result<(), TrainError> {
    let start = job.start_step();
    match &job.resume {
        None if start == 0 => Ok(()),
        None => Err(TrainError::Invalid(format!(
            "resuming after step {start} needs the checkpoint's bytes"
        ))),
        Some(bytes) => {
            let saved = std::str::from_utf8(bytes)
                .ok()
                .and_then(|s| s.strip_prefix(prefix))
                .and_then(|s| s.parse::<u32>().ok())
                .ok_or_else(|| {
                    TrainError::Invalid(format!(
                        "the checkpoint is not one of the {trainer} trainer ({} bytes)",
                        bytes.len()
                    ))
                })?;
            if saved == start {
                Ok(())
            } else {
                Err(TrainError::Invalid(format!(
                    "the checkpoint is of step {saved}, the trial resumes after step {start}"
                )))
            }
        }
    }
}
