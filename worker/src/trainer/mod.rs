//! The `Trainer` seam: one trial, run to its end on a thread of its own.
//!
//! Trainers are blocking code (libtorch, a child process, a sleep) and never
//! run on the async runtime; the worker gives each slot a dedicated thread and
//! bridges reports to the coordinator through a `Reporter`.

mod mlp;
mod simulated;

pub use mlp::MlpTrainer;
pub use simulated::SimulatedTrainer;

use crate::data::DataCache;
use crate::device::Device;
use hpo_proto::{Assignment, Decision, MetricValues};
use std::sync::Arc;

/// One trial as a trainer sees it.
#[derive(Debug, Clone)]
pub struct TrialJob {
    pub assignment: Assignment,
    /// The slot's device: the trainer must put its tensors there.
    pub device: Device,
}

/// The trainer's line to the coordinator.
pub trait Reporter {
    /// Sends the metrics of one step (an epoch; steps count from 1) and
    /// returns the coordinator's decision. Blocks until it is known.
    fn report(&mut self, step: u32, values: MetricValues) -> Decision;
    /// True once the trial must stop (cancelled, study ended, worker shutting
    /// down). Cheap: trainers poll it between batches.
    fn stop_requested(&self) -> bool;
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainEnd {
    /// Every epoch ran.
    Finished,
    /// A report was answered with stop, or a stop was requested.
    Stopped,
}

pub trait Trainer: Send + Sync {
    /// Runs one trial on the calling thread, reporting each epoch.
    fn train(&self, job: &TrialJob, reporter: &mut dyn Reporter) -> Result<TrainEnd, TrainError>;
}

/// The built-in trainers by the name a study file's `trainer.kind` uses.
pub struct Trainers {
    mlp: MlpTrainer,
    simulated: SimulatedTrainer,
}

impl Trainers {
    pub fn new(data: Arc<DataCache>) -> Self {
        Trainers {
            mlp: MlpTrainer::new(data),
            simulated: SimulatedTrainer,
        }
    }

    pub fn get(&self, kind: &str) -> Option<&dyn Trainer> {
        match kind {
            "mlp" => Some(&self.mlp),
            "simulated" => Some(&self.simulated),
            _ => None,
        }
    }
}
