//! A trainer that trains nothing: each step's metric is a closed-form function
//! of the numeric parameters, so tests and benchmarks exercise the whole
//! coordinator–worker path in milliseconds and with known answers.

use super::{Reporter, TrainEnd, TrainError, Trainer, TrialJob};
use hpo_proto::{Decision, MetricValues, ParamValue};
use std::time::Duration;

pub struct SimulatedTrainer;

/// Checkpoints are this prefix and the step in decimal: the metrics are a
/// function of the step, so the step is all the state there is.
const CHECKPOINT_PREFIX: &str = "simulated step ";

impl SimulatedTrainer {
    fn setting(job: &TrialJob, name: &str) -> Option<i64> {
        let a = &job.assignment;
        match a.params.get(name).or_else(|| a.trainer.settings.get(name)) {
            Some(ParamValue::Int(v)) => Some(*v),
            _ => None,
        }
    }
}

fn checkpoint(step: u32) -> Vec<u8> {
    super::step_checkpoint(CHECKPOINT_PREFIX, step)
}

/// The loss of a configuration after `step` of `max_resource` steps: the
/// squared distance of the numeric parameters from 0.5, decaying with
/// training. A study that minimises `loss` or maximises `score` should find
/// values near 0.5.
pub fn simulated_loss(job: &TrialJob, step: u32) -> f64 {
    let a = &job.assignment;
    let dist: f64 = a
        .params
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "step_ms" | "fail_at_step"))
        .filter_map(|(_, v)| v.as_f64())
        .map(|x| (x - 0.5) * (x - 0.5))
        .sum();
    let progress = step as f64 / a.max_resource.max(1) as f64;
    dist + (1.0 - progress) * 0.1
}

impl Trainer for SimulatedTrainer {
    fn train(&self, job: &TrialJob, reporter: &mut dyn Reporter) -> Result<TrainEnd, TrainError> {
        let (start, budget, _) = super::step_segment(job, CHECKPOINT_PREFIX, "simulated")?;
        let step_ms = Self::setting(job, "step_ms").unwrap_or(0).max(0) as u64;
        let fail_at = Self::setting(job, "fail_at_step");
        for step in start + 1..=budget {
            if reporter.stop_requested() {
                return Ok(TrainEnd::Stopped);
            }
            if step_ms > 0 {
                std::thread::sleep(Duration::from_millis(step_ms));
            }
            if fail_at == Some(step as i64) {
                return Err(TrainError::Other(format!(
                    "simulated failure at step {step}"
                )));
            }
            let loss = simulated_loss(job, step);
            let values: MetricValues = [
                ("loss".to_string(), loss),
                ("score".to_string(), 1.0 / (1.0 + loss)),
            ]
            .into_iter()
            .collect();
            match reporter.report(step, values) {
                Decision::Continue => {}
                Decision::Stop => return Ok(TrainEnd::Stopped),
                Decision::Pause => {
                    return Ok(TrainEnd::Paused {
                        step,
                        checkpoint: checkpoint(step),
                    });
                }
            }
        }
        super::segment_end(job, budget, || Ok(checkpoint(budget)))
    }
}
