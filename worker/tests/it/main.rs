//! Integration tests of the worker's data sets and trainers.
//!
//! One test binary (`cargo test -p hpo-worker --test it`) so libtorch is
//! linked once and the modules can share the helpers below.

#![allow(clippy::unwrap_used)]

mod cnn;
mod command;
mod data;
mod function;
mod mlp;
mod simulated;
mod table;

use hpo_proto::{
    Assignment, CheckpointRef, Decision, MetricValues, ParamValue, Params, Resource, StudyId,
    TrainerConfig, TrialId,
};
use hpo_worker::device::Device;
use hpo_worker::trainer::{Reporter, TrainEnd, Trainer, TrialJob};
use std::cell::Cell;
use std::path::PathBuf;
use std::time::Instant;

fn without_throughput(v: &MetricValues) -> MetricValues {
    let mut v = v.clone();
    v.remove(hpo_worker::trainer::SAMPLES_PER_SEC);
    v
}

/// A reporter that records what it is sent and can be told to stop in the
/// ways a coordinator or a shutting-down worker would.
#[derive(Default)]
pub struct TestReporter {
    /// Each report's step, values and arrival time.
    pub reports: Vec<(u32, MetricValues, Instant)>,
    /// Answer `Stop` to the report of this step.
    pub stop_at: Option<u32>,
    /// Answer `Pause` to the report of this step.
    pub pause_at: Option<u32>,
    /// `stop_requested` is true from the start.
    pub stop_now: bool,
    /// `stop_requested` turns true once this many reports arrived.
    pub stop_after_reports: Option<usize>,
    /// `stop_requested` turns true after it has been asked this many times.
    pub stop_after_polls: Option<u32>,
    polls: Cell<u32>,
    /// Everything the trainer logged.
    pub log: String,
}

impl TestReporter {
    pub fn polls(&self) -> u32 {
        self.polls.get()
    }

    /// Each report's values, without the throughput (a measurement that
    /// differs between two runs of the same seed).
    pub fn values(&self) -> Vec<MetricValues> {
        self.reports
            .iter()
            .map(|(_, v, _)| without_throughput(v))
            .collect()
    }

    /// The steps reported, in order.
    pub fn steps(&self) -> Vec<u32> {
        self.reports.iter().map(|(s, _, _)| *s).collect()
    }

    /// Each report's step and values, without the arrival times.
    pub fn history(&self) -> Vec<(u32, MetricValues)> {
        self.reports
            .iter()
            .map(|(s, v, _)| (*s, without_throughput(v)))
            .collect()
    }

    pub fn last(&self, key: &str) -> f64 {
        let (_, values, _) = self.reports.last().expect("at least one report");
        values[key]
    }
}

impl Reporter for TestReporter {
    fn report(&mut self, step: u32, values: MetricValues) -> Decision {
        self.reports.push((step, values, Instant::now()));
        if self.stop_at == Some(step) {
            Decision::Stop
        } else if self.pause_at == Some(step) {
            Decision::Pause
        } else {
            Decision::Continue
        }
    }

    fn stop_requested(&self) -> bool {
        let polls = self.polls.get() + 1;
        self.polls.set(polls);
        self.stop_now
            || self
                .stop_after_reports
                .is_some_and(|n| self.reports.len() >= n)
            || self.stop_after_polls.is_some_and(|n| polls > n)
    }

    fn log(&mut self, text: &str) {
        self.log.push_str(text);
    }
}

/// A CPU trial of the `mlp` trainer; `params` are the searched values.
pub fn job(dataset: &str, epochs: u32, seed: u64, params: &[(&str, ParamValue)]) -> TrialJob {
    job_with(dataset, epochs, seed, params, &[])
}

/// Like [`job`], with fixed `settings` too.
pub fn job_with(
    dataset: &str,
    epochs: u32,
    seed: u64,
    params: &[(&str, ParamValue)],
    settings: &[(&str, ParamValue)],
) -> TrialJob {
    let to_params = |kv: &[(&str, ParamValue)]| -> Params {
        kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    };
    TrialJob {
        assignment: Assignment {
            trial: TrialId {
                study: StudyId(1),
                number: 0,
            },
            attempt: 0,
            study_name: "test".to_string(),
            params: to_params(params),
            trainer: TrainerConfig {
                kind: "mlp".to_string(),
                dataset: dataset.to_string(),
                epochs,
                settings: to_params(settings),
                ..Default::default()
            },
            seed,
            metric: "val_accuracy".to_string(),
            resource: Resource::Epochs,
            budget: epochs,
            max_resource: epochs,
            resume: None,
            save_final: false,
        },
        device: Device::Cpu(0),
        resume: None,
    }
}

/// `job` as the next segment of a paused trial: resumed from `checkpoint`
/// (the bytes of `TrainEnd::Paused` at `step`) and trained up to `budget`.
pub fn resumed(job: &TrialJob, step: u32, checkpoint: &[u8], budget: u32) -> TrialJob {
    let mut next = job.clone();
    next.assignment.attempt += 1;
    next.assignment.budget = budget;
    next.assignment.resume = Some(CheckpointRef {
        trial: job.assignment.trial,
        attempt: job.assignment.attempt,
        step,
        size: checkpoint.len() as u64,
        crc32: 0,
    });
    next.resume = Some(checkpoint.to_vec());
    next
}

/// `job` with a segment budget below its maximum.
/// A run of `job` (6 steps) paused at step 2 and resumed from its checkpoint
/// reports what an uninterrupted run does: the step trainers' shared check.
pub fn pause_then_resume_matches_an_uninterrupted_run(trainer: &dyn Trainer, job: &TrialJob) {
    let mut whole = TestReporter::default();
    assert_eq!(trainer.train(job, &mut whole).unwrap(), TrainEnd::Finished);

    let mut first = TestReporter {
        pause_at: Some(2),
        ..Default::default()
    };
    let TrainEnd::Paused { step, checkpoint } = trainer.train(job, &mut first).unwrap() else {
        panic!("expected a pause at step 2");
    };
    assert_eq!((step, first.steps()), (2, vec![1, 2]));

    let mut rest = TestReporter::default();
    let end = trainer
        .train(&resumed(job, 2, &checkpoint, 6), &mut rest)
        .unwrap();
    assert_eq!(end, TrainEnd::Finished);
    assert_eq!(rest.steps(), [3, 4, 5, 6]);
    assert_eq!(rest.history(), whole.history()[2..]);
}

/// A run of `job` (2 epochs, `save_final`) ends with its final model, a
/// checkpoint starting with `magic`; a resume from it at the last step
/// trains nothing more and saves the same bytes again.
pub fn final_model_round_trips(trainer: &dyn Trainer, job: &TrialJob, magic: &[u8]) {
    let TrainEnd::FinishedSaved { checkpoint } =
        trainer.train(job, &mut TestReporter::default()).unwrap()
    else {
        panic!("expected the final model");
    };
    assert!(checkpoint.starts_with(magic));
    let mut again = TestReporter::default();
    let TrainEnd::FinishedSaved { checkpoint: same } = trainer
        .train(&resumed(job, 2, &checkpoint, 2), &mut again)
        .unwrap()
    else {
        panic!("expected the final model");
    };
    assert!(again.steps().is_empty());
    assert_eq!(same, checkpoint);
}

pub fn with_budget(job: &TrialJob, budget: u32) -> TrialJob {
    let mut next = job.clone();
    next.assignment.budget = budget;
    next
}

/// The folder holding Fashion-MNIST's IDX files: under `$HPO_TEST_DATA`,
/// else the repository's `shared/data` beside the workspace, else where
/// Debian installs it. `None` (and a note on stderr) when none has it.
pub fn fashion_mnist_dir() -> Option<PathBuf> {
    let mut roots = Vec::new();
    if let Some(root) = std::env::var_os("HPO_TEST_DATA").filter(|v| !v.is_empty()) {
        roots.push(PathBuf::from(root));
    }
    roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    roots.push(PathBuf::from("/usr/share/datasets"));
    let found = roots.iter().map(|r| r.join("fashion-mnist")).find(|d| {
        d.join("train-images-idx3-ubyte.gz").is_file()
            || d.join("train-images-idx3-ubyte").is_file()
    });
    if found.is_none() {
        let looked: Vec<String> = roots
            .iter()
            .map(|r| r.join("fashion-mnist").display().to_string())
            .collect();
        eprintln!(
            "skipping: fashion-mnist not found in {} (set HPO_TEST_DATA to a folder holding fashion-mnist/)",
            looked.join(", ")
        );
    }
    found
}
