//! The `table` trainer: replays a learning curve from a table of
//! precomputed ones (LCBench, see [`crate::table`]) instead of training.
//!
//! The proposed configuration is snapped to the table's nearest one, whose
//! metrics are reported step by step, optionally sleeping for the step's
//! recorded training time (scaled) so that schedulers see realistic timing.
//! Studies thereby exercise samplers and schedulers against real learning
//! curves at a fraction of the cost.

use super::{Reporter, TrainEnd, TrainError, Trainer, TrialJob};
use crate::table::{DEFAULT_TIME_COLUMN, Table, TableError};
use hpo_proto::{Assignment, Decision, ParamValue, Params, Resource};
use std::time::{Duration, Instant};

/// The settings that configure the trainer, not the configuration: they are
/// not matched against the table's parameter columns.
const OWN_SETTINGS: [&str; 3] = ["configs", "time_column", "time_scale"];

/// Checkpoint header: what the bytes are and their layout's version.
const MAGIC: &[u8; 8] = b"hpo-tbl1";

/// Sleeps are cut into slices of this length so a stop request is noticed
/// within it even when a scaled step lasts minutes.
const SLEEP_SLICE: Duration = Duration::from_millis(50);

pub struct TableTrainer;

/// The trainer's settings, read from `trainer.settings`.
struct Settings {
    configs: String,
    time_column: String,
    time_scale: f64,
}

impl Settings {
    fn from_assignment(a: &Assignment) -> Result<Settings, TrainError> {
        let s = &a.trainer.settings;
        let text = |name: &str| match s.get(name) {
            None => Ok(None),
            Some(ParamValue::Categorical(v)) if !v.trim().is_empty() => Ok(Some(v.clone())),
            Some(other) => Err(TrainError::Invalid(format!(
                "{name} must be a non-empty string, got `{other}`"
            ))),
        };
        let configs = text("configs")?.ok_or_else(|| {
            TrainError::Invalid(
                "configs must name the table's configurations CSV (trainer.settings.configs)"
                    .to_string(),
            )
        })?;
        let time_column = text("time_column")?.unwrap_or_else(|| DEFAULT_TIME_COLUMN.to_string());
        let time_scale = match s.get("time_scale") {
            None => 0.0,
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && x >= 0.0 => x,
                _ => {
                    return Err(TrainError::Invalid(format!(
                        "time_scale must be a number >= 0, got `{v}`"
                    )));
                }
            },
        };
        if a.trainer.dataset.trim().is_empty() {
            return Err(TrainError::Invalid(
                "the table trainer needs the curves file as its data set (trainer.dataset)"
                    .to_string(),
            ));
        }
        Ok(Settings {
            configs,
            time_column,
            time_scale,
        })
    }
}

/// The configuration to look up: the searched values, and fixed settings
/// for parameters the study pins rather than searches.
fn proposed(a: &Assignment) -> Params {
    let mut params = a.params.clone();
    for (k, v) in &a.trainer.settings {
        if !OWN_SETTINGS.contains(&k.as_str()) {
            params.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    params
}

fn table_error(e: TableError) -> TrainError {
    match e {
        TableError::MissingParam(_) | TableError::NotNumeric { .. } => {
            TrainError::Invalid(e.to_string())
        }
        other => TrainError::Other(format!("table: {other}")),
    }
}

/// The checkpoint: the configuration's index and the last step reported.
/// The table itself is not saved: a resume loads it from the same files.
fn encode(config: usize, step: u32) -> Vec<u8> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&(config as u64).to_le_bytes());
    bytes.extend_from_slice(&step.to_le_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> Result<(usize, u32), TrainError> {
    let corrupt = || {
        TrainError::Invalid(format!(
            "the checkpoint is not one of the table trainer ({} bytes)",
            bytes.len()
        ))
    };
    if bytes.len() != MAGIC.len() + 12 || !bytes.starts_with(MAGIC) {
        return Err(corrupt());
    }
    let mut config = [0; 8];
    config.copy_from_slice(&bytes[8..16]);
    let mut step = [0; 4];
    step.copy_from_slice(&bytes[16..20]);
    let config = usize::try_from(u64::from_le_bytes(config)).map_err(|_| corrupt())?;
    Ok((config, u32::from_le_bytes(step)))
}

impl Trainer for TableTrainer {
    fn train(&self, job: &TrialJob, reporter: &mut dyn Reporter) -> Result<TrainEnd, TrainError> {
        let a = &job.assignment;
        let settings = Settings::from_assignment(a)?;
        if a.resource != Resource::Epochs {
            return Err(TrainError::Invalid(format!(
                "the table trainer's steps are the table's; resource `{}` is not supported",
                a.resource.as_str()
            )));
        }
        let table = Table::cached(&settings.configs, &a.trainer.dataset).map_err(table_error)?;
        let config = table.nearest(&proposed(a)).map_err(table_error)?;
        let time = if settings.time_scale > 0.0 {
            Some(
                table
                    .metric_index(&settings.time_column)
                    .ok_or_else(|| table_error(TableError::UnknownColumn(settings.time_column)))?,
            )
        } else {
            None
        };

        let steps = table.steps(config);
        let (start, budget, max) = (job.start_step(), a.budget, a.max_resource);
        if max > steps || budget > max {
            return Err(TrainError::Invalid(format!(
                "the table has {steps} steps for config {} (nearest to this trial), but the trial asks for budget {budget} of {max}",
                table.config_id(config)
            )));
        }
        if start > budget {
            return Err(TrainError::Invalid(format!(
                "resuming after step {start} is past this segment's budget {budget}"
            )));
        }
        match (&job.resume, start) {
            (None, 0) => {}
            (None, _) => {
                return Err(TrainError::Invalid(format!(
                    "resuming after step {start} needs the checkpoint's bytes"
                )));
            }
            (Some(bytes), _) => {
                let (saved_config, saved_step) = decode(bytes)?;
                if saved_step != start {
                    return Err(TrainError::Invalid(format!(
                        "the checkpoint is of step {saved_step}, the trial resumes after step {start}"
                    )));
                }
                if saved_config != config {
                    return Err(TrainError::Invalid(format!(
                        "the checkpoint replays table index {saved_config}, but this trial's nearest configuration is index {config} (another table or configuration?)"
                    )));
                }
            }
        }

        for step in start + 1..=budget {
            if reporter.stop_requested() {
                return Ok(TrainEnd::Stopped);
            }
            if let Some(t) = time {
                let seconds = settings.time_scale * table.step_cost_by(t, config, step);
                if sleep_unless_stopped(seconds, reporter) {
                    return Ok(TrainEnd::Stopped);
                }
            }
            let values = table.metrics(config, step).ok_or_else(|| {
                TrainError::Invalid(format!(
                    "step {step} is past the table's {steps} steps for config {}",
                    table.config_id(config)
                ))
            })?;
            match reporter.report(step, values) {
                Decision::Continue => {}
                Decision::Stop => return Ok(TrainEnd::Stopped),
                Decision::Pause => {
                    return Ok(TrainEnd::Paused {
                        step,
                        checkpoint: encode(config, step),
                    });
                }
            }
        }
        super::segment_end(job, budget, || Ok(encode(config, budget)))
    }
}

/// Sleeps `seconds`, polling for a stop between slices; true if stopped.
fn sleep_unless_stopped(seconds: f64, reporter: &dyn Reporter) -> bool {
    if seconds <= 0.0 || !seconds.is_finite() {
        return false;
    }
    let end = Instant::now() + Duration::from_secs_f64(seconds.min(1e9));
    loop {
        let now = Instant::now();
        if now >= end {
            return false;
        }
        std::thread::sleep(SLEEP_SLICE.min(end - now));
        if reporter.stop_requested() {
            return true;
        }
    }
}
