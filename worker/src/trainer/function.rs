//! The `function` trainer: each trial evaluates a standard test function of
//! global optimisation (`crate::functions`) at its parameters `x1` ..= `xd`,
//! so sampler benchmarks run through the whole coordinator–worker path with a
//! known optimum.
//!
//! Settings (in `[trainer]`, or searched in `[params]`):
//! - `function` (required): `branin`, `hartmann3`, `hartmann6`,
//!   `rosenbrock4`, `ackley5` or `levy4`; see `crate::functions` for each
//!   one's standard domain and global minimum.
//! - `noise` (default 0): the standard deviation of Gaussian noise added to
//!   each reported value, drawn from the trial's seed and the step, so a rerun
//!   or a resumed trial reports the same values.
//! - `offset` (default 0): a learning curve for multi-fidelity schedulers. At
//!   step s of E the value is f(x) + (1 − s/E)·offset, reaching f(x) at the
//!   last step. With the default every step reports f(x).
//!
//! Metrics per step: `value` (to be minimised: f(x) with the offset and the
//! noise) and `regret`, f(x) minus the function's global minimum: the
//! configuration's true regret, without the offset or the noise, so it is
//! `value` − minimum whenever both are 0 (and at the last step when `noise`
//! is 0).
//!
//! Checkpoints are the step: the values are a function of the parameters and
//! the step, so there is no other state.

use super::{Reporter, TrainEnd, TrainError, Trainer, TrialJob};
use crate::functions::{NAMES, TestFunction};
use hpo_proto::{Decision, MetricValues, ParamValue};

pub struct FunctionTrainer;

const CHECKPOINT_PREFIX: &str = "function step ";

/// Settings the trainer reads besides the inputs `x1` ..= `xd`.
const SETTINGS: &[&str] = &["function", "noise", "offset"];

/// One trial's reading of its settings and parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionTrial {
    pub function: TestFunction,
    /// `x1` ..= `xd`, in order.
    pub x: Vec<f64>,
    pub noise: f64,
    pub offset: f64,
}

impl FunctionTrial {
    /// Reads the function, its inputs and the options from `job`; each error
    /// names the setting or parameter at fault.
    pub fn from_job(job: &TrialJob) -> Result<Self, TrainError> {
        let a = &job.assignment;
        let get = |name: &str| a.params.get(name).or_else(|| a.trainer.settings.get(name));
        let function = match get("function") {
            None => {
                return Err(TrainError::Invalid(format!(
                    "the function trainer needs the setting `function` (one of: {})",
                    NAMES.join(", ")
                )));
            }
            Some(ParamValue::Categorical(name)) => TestFunction::parse(name).ok_or_else(|| {
                TrainError::Invalid(format!(
                    "unknown function \"{name}\" (expected one of: {})",
                    NAMES.join(", ")
                ))
            })?,
            Some(other) => {
                return Err(TrainError::Invalid(format!(
                    "`function` must be a name (one of: {}), got {other}",
                    NAMES.join(", ")
                )));
            }
        };
        let dim = function.dim();
        let name = function.name();
        let number = |key: &str| -> Result<Option<f64>, TrainError> {
            match get(key) {
                None => Ok(None),
                Some(v) => v
                    .as_f64()
                    .filter(|v| v.is_finite())
                    .map(Some)
                    .ok_or_else(|| {
                        TrainError::Invalid(format!("`{key}` must be a number, got {v}"))
                    }),
            }
        };
        let mut x = Vec::with_capacity(dim);
        for i in 1..=dim {
            let key = format!("x{i}");
            let v = number(&key)?.ok_or_else(|| {
                TrainError::Invalid(format!(
                    "missing parameter `{key}`: {name} has {dim} dimensions and needs x1..x{dim}"
                ))
            })?;
            x.push(v);
        }
        let is_input = |key: &str| {
            key.strip_prefix('x')
                .and_then(|i| i.parse::<usize>().ok())
                .is_some_and(|i| (1..=dim).contains(&i) && key == format!("x{i}"))
        };
        if let Some(extra) = a
            .params
            .keys()
            .chain(a.trainer.settings.keys())
            .find(|k| !is_input(k) && !SETTINGS.contains(&k.as_str()))
        {
            return Err(TrainError::Invalid(format!(
                "unknown parameter `{extra}`: {name} has {dim} dimensions and takes x1..x{dim} (settings: {})",
                SETTINGS.join(", ")
            )));
        }
        let non_negative = |key: &str| -> Result<f64, TrainError> {
            match number(key)? {
                None => Ok(0.0),
                Some(v) if v >= 0.0 => Ok(v),
                Some(v) => Err(TrainError::Invalid(format!(
                    "`{key}` must be >= 0, got {v}"
                ))),
            }
        };
        Ok(FunctionTrial {
            function,
            x,
            noise: non_negative("noise")?,
            offset: non_negative("offset")?,
        })
    }

    /// f(x), without the offset or the noise.
    pub fn exact(&self) -> f64 {
        self.function.eval(&self.x)
    }

    /// The reported `value` at `step` of `max_step` for a trial with `seed`.
    pub fn value(&self, seed: u64, step: u32, max_step: u32) -> f64 {
        let progress = f64::from(step) / f64::from(max_step.max(1));
        let mut v = self.exact() + (1.0 - progress).max(0.0) * self.offset;
        if self.noise > 0.0 {
            v += self.noise * gaussian(seed, step);
        }
        v
    }

    /// The metrics of `step`: `value` and `regret`.
    pub fn metrics(&self, seed: u64, step: u32, max_step: u32) -> MetricValues {
        [
            ("value".to_string(), self.value(seed, step, max_step)),
            ("regret".to_string(), self.exact() - self.function.optimum()),
        ]
        .into_iter()
        .collect()
    }
}

/// SplitMix64: a fixed, well-mixed hash, so the noise does not depend on a
/// library's generator staying the same across versions.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A standard normal draw determined by `seed` and `step` (Box–Muller).
fn gaussian(seed: u64, step: u32) -> f64 {
    let h1 = splitmix64(seed ^ splitmix64(u64::from(step)));
    let h2 = splitmix64(h1);
    // Uniform in (0, 1] and [0, 1) from the top 53 bits.
    let u1 = ((h1 >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let u2 = (h2 >> 11) as f64 / (1u64 << 53) as f64;
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn checkpoint(step: u32) -> Vec<u8> {
    super::step_checkpoint(CHECKPOINT_PREFIX, step)
}

impl Trainer for FunctionTrainer {
    fn train(&self, job: &TrialJob, reporter: &mut dyn Reporter) -> Result<TrainEnd, TrainError> {
        let a = &job.assignment;
        let (start, budget, max) = super::step_segment(job, CHECKPOINT_PREFIX, "function")?;
        let trial = FunctionTrial::from_job(job)?;
        for step in start + 1..=budget {
            if reporter.stop_requested() {
                return Ok(TrainEnd::Stopped);
            }
            match reporter.report(step, trial.metrics(a.seed, step, max)) {
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
