//! Learning-rate schedules, with an optional linear warm-up.
//!
//! A [`Schedule`] maps the number of an optimiser update (0-based, counted
//! over the whole run: `epoch_index * steps_per_epoch + batch_index`) to a
//! learning rate. It is pure arithmetic: trainers call [`Schedule::lr_at`]
//! before each update and set the optimiser's rate to it, so resuming from a
//! checkpoint needs nothing but the step number.
//!
//! [`parse_schedule`] reads the kind and its options from a trial's
//! parameters; it is used both when a study is submitted (to reject bad
//! settings early) and by the worker.

use hpo_proto::ParamValue;
use std::f64::consts::PI;

/// The names `lr_schedule` accepts, in the order error messages list them:
/// the submit-time check's list, so the two cannot disagree.
pub use hpo_proto::trainers::SCHEDULES;

/// The shape of a learning-rate schedule; the peak (or starting) rate is
/// [`Schedule::base_lr`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LrSchedule {
    /// The base rate throughout.
    Constant,
    /// lr × gamma^(floor(epoch / step_size)) (PyTorch `StepLR`, per epoch).
    /// A `step_size` of 0 is read as 1.
    Step { step_size: u32, gamma: f64 },
    /// lr × gamma^epoch (per epoch, PyTorch `ExponentialLR` semantics).
    Exponential { gamma: f64 },
    /// Cosine from lr to min_lr over the whole run, per batch step:
    /// min_lr + (lr − min_lr)(1 + cos(π·step/total))/2 with
    /// total = steps_per_epoch × total_epochs. Steps at or past `total`
    /// stay at `min_lr`.
    Cosine { min_lr: f64 },
    /// SGDR (Loshchilov & Hutter 2017): cosine from lr to min_lr over `t0`
    /// epochs, then a restart at lr; each period is `t_mult` times longer
    /// than the one before (per batch step, so epochs are fractional).
    /// Periods repeat for as long as steps come; `t0` and `t_mult` of 0 are
    /// read as 1.
    CosineRestarts { t0: u32, t_mult: u32, min_lr: f64 },
    /// One-cycle (Smith 2018; PyTorch `OneCycleLR` with cosine annealing and
    /// `three_phase=False`): starts at lr/div_factor, rises to lr (the
    /// maximum) by step `pct_start·total − 1`, then anneals to
    /// lr/(div_factor·final_div_factor) at the last step (`total − 1`), where
    /// it stays. It has a warm-up of its own: [`Schedule::warmup_steps`] is
    /// ignored.
    OneCycle {
        pct_start: f64,
        div_factor: f64,
        final_div_factor: f64,
    },
}

impl LrSchedule {
    /// The name `lr_schedule` gives this kind (one of [`SCHEDULES`]).
    pub fn name(&self) -> &'static str {
        match self {
            LrSchedule::Constant => "constant",
            LrSchedule::Step { .. } => "step",
            LrSchedule::Exponential { .. } => "exponential",
            LrSchedule::Cosine { .. } => "cosine",
            LrSchedule::CosineRestarts { .. } => "cosine_restarts",
            LrSchedule::OneCycle { .. } => "one_cycle",
        }
    }
}

/// A schedule bound to one run's shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub kind: LrSchedule,
    /// The rate the kind scales: the starting rate, or one-cycle's maximum.
    pub base_lr: f64,
    /// Linear warm-up length in optimiser steps (0 for none).
    pub warmup_steps: u64,
    /// Optimiser updates per epoch; 0 is read as 1.
    pub steps_per_epoch: u64,
    /// Epochs in the whole run; 0 is read as 1.
    pub total_epochs: u32,
}

impl Schedule {
    /// A schedule whose warm-up is given in (possibly fractional) epochs, as
    /// [`parse_schedule`] returns it.
    pub fn new(
        kind: LrSchedule,
        base_lr: f64,
        warmup_epochs: f64,
        steps_per_epoch: u64,
        total_epochs: u32,
    ) -> Self {
        Schedule {
            kind,
            base_lr,
            warmup_steps: warmup_steps(warmup_epochs, steps_per_epoch),
            steps_per_epoch,
            total_epochs,
        }
    }

    /// Optimiser steps in the whole run (at least 1).
    pub fn total_steps(&self) -> u64 {
        self.steps_per_epoch
            .max(1)
            .saturating_mul(u64::from(self.total_epochs.max(1)))
    }

    /// The learning rate for optimiser update number `step` (0-based,
    /// counted over the whole run across epochs: step = epoch_index ×
    /// steps_per_epoch + batch_index).
    ///
    /// For step < warmup_steps (any kind but one-cycle) the scheduled rate
    /// is scaled by (step + 1)/warmup_steps. Past the end of the run the
    /// kinds that depend on its length (cosine, one-cycle) hold their final
    /// value; the others keep following their formula.
    pub fn lr_at(&self, step: u64) -> f64 {
        let lr = self.scheduled(step);
        let warms = !matches!(self.kind, LrSchedule::OneCycle { .. });
        if warms && step < self.warmup_steps {
            lr * (step + 1) as f64 / self.warmup_steps as f64
        } else {
            lr
        }
    }

    /// The rate before warm-up.
    fn scheduled(&self, step: u64) -> f64 {
        let lr = self.base_lr;
        let per_epoch = self.steps_per_epoch.max(1);
        let epoch = step / per_epoch;
        match self.kind {
            LrSchedule::Constant => lr,
            LrSchedule::Step { step_size, gamma } => {
                let drops = epoch / u64::from(step_size.max(1));
                lr * gamma.powf(drops as f64)
            }
            LrSchedule::Exponential { gamma } => lr * gamma.powf(epoch as f64),
            LrSchedule::Cosine { min_lr } => {
                let total = self.total_steps();
                let t = step.min(total) as f64 / total as f64;
                cosine_between(lr, min_lr, t)
            }
            LrSchedule::CosineRestarts { t0, t_mult, min_lr } => {
                // Work in whole steps so restart points are exact.
                let mut start = 0u64;
                let mut len = u64::from(t0.max(1)).saturating_mul(per_epoch);
                let mult = u64::from(t_mult.max(1));
                let into = if mult == 1 {
                    step % len
                } else {
                    // Periods grow geometrically: at most ~64 turns.
                    while step - start >= len && len < u64::MAX {
                        start += len;
                        len = len.saturating_mul(mult);
                    }
                    step - start
                };
                cosine_between(lr, min_lr, into as f64 / len as f64)
            }
            LrSchedule::OneCycle {
                pct_start,
                div_factor,
                final_div_factor,
            } => {
                let initial = lr / div_factor;
                let last_lr = initial / final_div_factor;
                let total = self.total_steps();
                let last = (total - 1) as f64;
                let peak = pct_start * total as f64 - 1.0;
                let s = step.min(total - 1) as f64;
                if s <= peak {
                    let t = if peak > 0.0 { s / peak } else { 1.0 };
                    cosine_between(initial, lr, t)
                } else {
                    let span = last - peak;
                    let t = if span > 0.0 {
                        ((s - peak) / span).clamp(0.0, 1.0)
                    } else {
                        1.0
                    };
                    cosine_between(lr, last_lr, t)
                }
            }
        }
    }
}

/// Cosine annealing from `from` (t = 0) to `to` (t = 1).
fn cosine_between(from: f64, to: f64, t: f64) -> f64 {
    to + (from - to) * (1.0 + (PI * t).cos()) / 2.0
}

/// A warm-up in epochs as optimiser steps: rounded to the nearest step, so
/// any positive warm-up shorter than half a step is none. Negative or
/// non-finite values give 0.
pub fn warmup_steps(warmup_epochs: f64, steps_per_epoch: u64) -> u64 {
    let steps = warmup_epochs * steps_per_epoch.max(1) as f64;
    if steps.is_finite() && steps > 0.0 {
        // `as` saturates: absurd warm-ups become u64::MAX, never a panic.
        steps.round() as u64
    } else {
        0
    }
}

/// Reads `lr_schedule` ("constant" | "step" | "exponential" | "cosine" |
/// "cosine_restarts" | "one_cycle"; default "constant") and its options from
/// a parameter lookup:
///
/// - `lr_step_size` (int ≥ 1, default 10) — step
/// - `lr_gamma` (float in (0, 1], default 0.1 for step, 0.95 for
///   exponential) — step, exponential
/// - `lr_min` (float ≥ 0, default 0) — cosine, cosine_restarts
/// - `sgdr_t0` (int ≥ 1, default 10), `sgdr_t_mult` (int ≥ 1, default 1) —
///   cosine_restarts
/// - `one_cycle_pct` (float in (0, 1), default 0.3), `one_cycle_div`
///   (float > 1, default 25), `one_cycle_final_div` (float > 1, default
///   1e4) — one_cycle
/// - `warmup_epochs` (float ≥ 0, default 0), for every kind (one-cycle
///   ignores it); [`Schedule::new`] converts it to steps.
///
/// Only the options of the chosen kind are read and checked. Integers are
/// accepted where floats are expected, and floats with no fractional part
/// where integers are.
pub fn parse_schedule(
    get: &dyn Fn(&str) -> Option<ParamValue>,
) -> Result<(LrSchedule, f64), String> {
    let name = match get("lr_schedule") {
        None => "constant".to_string(),
        Some(ParamValue::Categorical(s)) => s,
        Some(other) => return Err(choice_error(&shown(&other))),
    };
    let kind = match name.as_str() {
        "constant" => LrSchedule::Constant,
        "step" => LrSchedule::Step {
            step_size: int(get, "lr_step_size", 10)?,
            gamma: gamma(get, 0.1)?,
        },
        "exponential" => LrSchedule::Exponential {
            gamma: gamma(get, 0.95)?,
        },
        "cosine" => LrSchedule::Cosine {
            min_lr: min_lr(get)?,
        },
        "cosine_restarts" => LrSchedule::CosineRestarts {
            t0: int(get, "sgdr_t0", 10)?,
            t_mult: int(get, "sgdr_t_mult", 1)?,
            min_lr: min_lr(get)?,
        },
        "one_cycle" => LrSchedule::OneCycle {
            pct_start: float(get, "one_cycle_pct", 0.3, "a number in (0, 1)", |v| {
                v > 0.0 && v < 1.0
            })?,
            div_factor: float(get, "one_cycle_div", 25.0, "a number > 1", |v| v > 1.0)?,
            final_div_factor: float(get, "one_cycle_final_div", 1e4, "a number > 1", |v| v > 1.0)?,
        },
        _ => return Err(choice_error(&format!("{name:?}"))),
    };
    let warmup = float(get, "warmup_epochs", 0.0, "a number ≥ 0", |v| v >= 0.0)?;
    Ok((kind, warmup))
}

fn choice_error(got: &str) -> String {
    format!(
        "lr_schedule: expected one of {}, got {got}",
        SCHEDULES.join(", ")
    )
}

/// A value as error messages show it: text quoted, numbers bare.
fn shown(value: &ParamValue) -> String {
    match value {
        ParamValue::Categorical(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn gamma(get: &dyn Fn(&str) -> Option<ParamValue>, default: f64) -> Result<f64, String> {
    float(get, "lr_gamma", default, "a number in (0, 1]", |v| {
        v > 0.0 && v <= 1.0
    })
}

fn min_lr(get: &dyn Fn(&str) -> Option<ParamValue>) -> Result<f64, String> {
    float(get, "lr_min", 0.0, "a number ≥ 0", |v| v >= 0.0)
}

/// A finite number accepted by `valid`, or `default` when unset.
fn float(
    get: &dyn Fn(&str) -> Option<ParamValue>,
    name: &str,
    default: f64,
    expected: &str,
    valid: impl Fn(f64) -> bool,
) -> Result<f64, String> {
    let Some(value) = get(name) else {
        return Ok(default);
    };
    match value.as_f64() {
        Some(v) if v.is_finite() && valid(v) => Ok(v),
        _ => Err(format!(
            "{name}: expected {expected}, got {}",
            shown(&value)
        )),
    }
}

/// An integer ≥ 1 (and within u32), or `default` when unset.
fn int(get: &dyn Fn(&str) -> Option<ParamValue>, name: &str, default: u32) -> Result<u32, String> {
    let Some(value) = get(name) else {
        return Ok(default);
    };
    let whole = match value {
        ParamValue::Int(v) => Some(v),
        ParamValue::Float(v) if v.fract() == 0.0 && v.abs() < 9e15 => Some(v as i64),
        _ => None,
    };
    match whole.and_then(|v| u32::try_from(v).ok()) {
        Some(v) if v >= 1 => Ok(v),
        _ => Err(format!(
            "{name}: expected an integer ≥ 1, got {}",
            shown(&value)
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * (1.0 + a.abs().max(b.abs()))
    }

    macro_rules! assert_close {
        ($a:expr, $b:expr) => {{
            let (a, b) = ($a, $b);
            assert!(close(a, b), "{} = {a}, expected {b}", stringify!($a));
        }};
    }

    fn sched(kind: LrSchedule, spe: u64, epochs: u32) -> Schedule {
        Schedule {
            kind,
            base_lr: 0.1,
            warmup_steps: 0,
            steps_per_epoch: spe,
            total_epochs: epochs,
        }
    }

    #[test]
    fn constant_is_constant() {
        let s = sched(LrSchedule::Constant, 7, 3);
        for step in [0, 1, 6, 7, 20, 21, 1000] {
            assert_eq!(s.lr_at(step), 0.1);
        }
    }

    #[test]
    fn step_drops_every_step_size_epochs() {
        let kind = LrSchedule::Step {
            step_size: 3,
            gamma: 0.5,
        };
        let s = sched(kind, 10, 10);
        // Epochs 0–2: full rate; 3–5: half; 6–8: quarter; 9: eighth.
        assert_close!(s.lr_at(0), 0.1);
        assert_close!(s.lr_at(29), 0.1);
        assert_close!(s.lr_at(30), 0.05);
        assert_close!(s.lr_at(59), 0.05);
        assert_close!(s.lr_at(60), 0.025);
        assert_close!(s.lr_at(99), 0.0125);
        // Past the end the formula goes on.
        assert_close!(s.lr_at(120), 0.00625);
    }

    #[test]
    fn exponential_decays_once_per_epoch() {
        let s = sched(LrSchedule::Exponential { gamma: 0.9 }, 4, 5);
        assert_close!(s.lr_at(0), 0.1);
        assert_close!(s.lr_at(3), 0.1);
        assert_close!(s.lr_at(4), 0.09);
        assert_close!(s.lr_at(7), 0.09);
        assert_close!(s.lr_at(8), 0.081);
        assert_close!(s.lr_at(19), 0.1 * 0.9f64.powi(4));
    }

    #[test]
    fn cosine_known_values_and_clamp() {
        let s = sched(LrSchedule::Cosine { min_lr: 0.01 }, 10, 10);
        // total = 100 steps
        assert_close!(s.lr_at(0), 0.1);
        assert_close!(s.lr_at(50), 0.055); // cos(π/2) = 0: the midpoint
        // cos(π/4) = √2/2
        assert_close!(s.lr_at(25), 0.01 + 0.09 * (1.0 + 0.5f64.sqrt()) / 2.0);
        assert_close!(s.lr_at(75), 0.01 + 0.09 * (1.0 - 0.5f64.sqrt()) / 2.0);
        assert!(s.lr_at(99) > 0.01);
        assert_close!(s.lr_at(100), 0.01);
        assert_close!(s.lr_at(10_000), 0.01);
    }

    #[test]
    fn cosine_is_non_increasing() {
        let s = sched(LrSchedule::Cosine { min_lr: 0.001 }, 13, 7);
        let mut prev = f64::INFINITY;
        for step in 0..=s.total_steps() + 5 {
            let lr = s.lr_at(step);
            assert!(lr <= prev, "step {step}: {lr} > {prev}");
            assert!(lr >= 0.001 - 1e-15);
            prev = lr;
        }
    }

    #[test]
    fn sgdr_restarts_with_t_mult_2_at_epochs_10_and_30() {
        let kind = LrSchedule::CosineRestarts {
            t0: 10,
            t_mult: 2,
            min_lr: 0.0,
        };
        let spe = 8;
        let s = sched(kind, spe, 100);
        let at_epoch = |e: f64| s.lr_at((e * spe as f64) as u64);
        // First period: epochs [0, 10).
        assert_close!(at_epoch(0.0), 0.1);
        assert_close!(at_epoch(5.0), 0.05);
        // The last step before the restart is nearly at the minimum.
        let before = s.lr_at(10 * spe - 1);
        assert_close!(before, 0.1 * (1.0 + (PI * 79.0 / 80.0).cos()) / 2.0);
        assert!(before < 0.001);
        // Second period: epochs [10, 30), 20 long.
        assert_close!(at_epoch(10.0), 0.1);
        assert_close!(at_epoch(20.0), 0.05);
        assert_close!(at_epoch(15.0), 0.1 * (1.0 + 0.5f64.sqrt()) / 2.0);
        // Third period: epochs [30, 70), 40 long.
        assert!(s.lr_at(30 * spe - 1) < 0.001);
        assert_close!(at_epoch(30.0), 0.1);
        assert_close!(at_epoch(50.0), 0.05);
        assert_close!(at_epoch(70.0), 0.1);
        // Fractional epochs: half-way through epoch 2.
        assert_close!(at_epoch(2.5), 0.1 * (1.0 + (PI * 20.0 / 80.0).cos()) / 2.0);
    }

    #[test]
    fn sgdr_t_mult_1_repeats_with_min_lr() {
        let kind = LrSchedule::CosineRestarts {
            t0: 2,
            t_mult: 1,
            min_lr: 0.02,
        };
        let s = sched(kind, 5, 10);
        // Period = 10 steps.
        for k in 0..5 {
            assert_close!(s.lr_at(10 * k), 0.1);
            assert_close!(s.lr_at(10 * k + 5), 0.06);
        }
        // Non-increasing within a period.
        for step in 1..10 {
            assert!(s.lr_at(step) < s.lr_at(step - 1));
        }
    }

    #[test]
    fn sgdr_huge_steps_do_not_hang_or_panic() {
        let kind = LrSchedule::CosineRestarts {
            t0: 1,
            t_mult: 3,
            min_lr: 0.0,
        };
        let s = sched(kind, u64::MAX / 2, u32::MAX);
        let lr = s.lr_at(u64::MAX);
        assert!(lr.is_finite() && (0.0..=0.1).contains(&lr));
    }

    fn one_cycle() -> LrSchedule {
        LrSchedule::OneCycle {
            pct_start: 0.25,
            div_factor: 25.0,
            final_div_factor: 1e4,
        }
    }

    #[test]
    fn one_cycle_start_peak_and_end() {
        // total = 100 steps; peak at 0.25 × 100 − 1 = step 24; last step 99.
        let s = sched(one_cycle(), 10, 10);
        let initial = 0.1 / 25.0;
        let last = initial / 1e4;
        assert_close!(s.lr_at(0), initial);
        assert_close!(s.lr_at(12), (initial + 0.1) / 2.0);
        assert_close!(s.lr_at(24), 0.1);
        // Phase 2 spans 75 steps, from 24 to 99.
        let t = (60.0 - 24.0) / 75.0;
        assert_close!(
            s.lr_at(60),
            last + (0.1 - last) * (1.0 + (PI * t).cos()) / 2.0
        );
        assert_close!(s.lr_at(99), last);
        assert_close!(s.lr_at(100), last);
        assert_close!(s.lr_at(5000), last);
    }

    #[test]
    fn one_cycle_rises_then_falls() {
        let kind = LrSchedule::OneCycle {
            pct_start: 0.3,
            div_factor: 10.0,
            final_div_factor: 100.0,
        };
        let s = sched(kind, 17, 6); // 102 steps, peak at 29.6
        let lrs: Vec<f64> = (0..102).map(|k| s.lr_at(k)).collect();
        let top = lrs
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .unwrap();
        assert!(top == 29 || top == 30, "peak at {top}");
        assert!(lrs[..=29].windows(2).all(|w| w[1] >= w[0]));
        assert!(lrs[30..].windows(2).all(|w| w[1] <= w[0]));
        assert!(lrs.iter().all(|&lr| lr <= 0.1 + 1e-15 && lr > 0.0));
    }

    #[test]
    fn one_cycle_degenerate_runs_stay_finite() {
        for (spe, epochs) in [(1, 1), (1, 2), (0, 0), (3, 1)] {
            let s = sched(one_cycle(), spe, epochs);
            for step in 0..10 {
                let lr = s.lr_at(step);
                assert!(
                    lr.is_finite() && lr > 0.0 && lr <= 0.1,
                    "{spe} {epochs} {step}"
                );
            }
        }
    }

    #[test]
    fn one_cycle_ignores_warmup() {
        let mut s = sched(one_cycle(), 10, 10);
        let plain: Vec<f64> = (0..100).map(|k| s.lr_at(k)).collect();
        s.warmup_steps = 50;
        let warmed: Vec<f64> = (0..100).map(|k| s.lr_at(k)).collect();
        assert_eq!(plain, warmed);
    }

    #[test]
    fn warmup_ramps_linearly_then_follows_the_schedule() {
        let mut s = sched(LrSchedule::Constant, 10, 5);
        s.warmup_steps = 4;
        assert_close!(s.lr_at(0), 0.025);
        assert_close!(s.lr_at(1), 0.05);
        assert_close!(s.lr_at(2), 0.075);
        assert_close!(s.lr_at(3), 0.1);
        assert_close!(s.lr_at(4), 0.1);

        // Warm-up multiplies the scheduled value, not the base rate.
        let mut c = sched(LrSchedule::Cosine { min_lr: 0.0 }, 10, 10);
        c.warmup_steps = 20;
        let cos_at = |k: f64| 0.1 * (1.0 + (PI * k / 100.0).cos()) / 2.0;
        assert_close!(c.lr_at(0), cos_at(0.0) / 20.0);
        assert_close!(c.lr_at(9), cos_at(9.0) * 10.0 / 20.0);
        assert_close!(c.lr_at(19), cos_at(19.0));
        assert_close!(c.lr_at(20), cos_at(20.0));

        let mut e = sched(LrSchedule::Exponential { gamma: 0.5 }, 2, 10);
        e.warmup_steps = 3;
        assert_close!(e.lr_at(0), 0.1 / 3.0);
        assert_close!(e.lr_at(2), 0.05); // epoch 1, full warm-up factor 3/3
        assert_close!(e.lr_at(3), 0.05);
    }

    #[test]
    fn warmup_is_increasing_for_constant() {
        let mut s = sched(LrSchedule::Constant, 10, 5);
        s.warmup_steps = 25;
        for step in 1..25 {
            assert!(s.lr_at(step) > s.lr_at(step - 1));
        }
    }

    #[test]
    fn warmup_epochs_to_steps() {
        assert_eq!(warmup_steps(0.0, 100), 0);
        assert_eq!(warmup_steps(1.5, 100), 150);
        assert_eq!(warmup_steps(0.004, 100), 0);
        assert_eq!(warmup_steps(0.006, 100), 1);
        assert_eq!(warmup_steps(-1.0, 100), 0);
        assert_eq!(warmup_steps(f64::NAN, 100), 0);
        assert_eq!(warmup_steps(2.0, 0), 2);
        let s = Schedule::new(LrSchedule::Constant, 0.1, 0.5, 40, 3);
        assert_eq!(s.warmup_steps, 20);
        assert_eq!(s.total_steps(), 120);
    }

    #[test]
    fn zero_sizes_do_not_panic() {
        let kinds = [
            LrSchedule::Constant,
            LrSchedule::Step {
                step_size: 0,
                gamma: 0.5,
            },
            LrSchedule::Exponential { gamma: 0.5 },
            LrSchedule::Cosine { min_lr: 0.0 },
            LrSchedule::CosineRestarts {
                t0: 0,
                t_mult: 0,
                min_lr: 0.0,
            },
            one_cycle(),
        ];
        for kind in kinds {
            let s = sched(kind, 0, 0);
            for step in [0, 1, 2, 1000] {
                assert!(s.lr_at(step).is_finite(), "{kind:?} at {step}");
            }
        }
    }

    fn lookup(pairs: &[(&str, ParamValue)]) -> impl Fn(&str) -> Option<ParamValue> {
        let map: BTreeMap<String, ParamValue> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn cat(s: &str) -> ParamValue {
        ParamValue::Categorical(s.to_string())
    }

    fn parse(pairs: &[(&str, ParamValue)]) -> Result<(LrSchedule, f64), String> {
        parse_schedule(&lookup(pairs))
    }

    #[test]
    fn parser_defaults() {
        assert_eq!(parse(&[]).unwrap(), (LrSchedule::Constant, 0.0));
        assert_eq!(
            parse(&[("lr_schedule", cat("step"))]).unwrap().0,
            LrSchedule::Step {
                step_size: 10,
                gamma: 0.1
            }
        );
        assert_eq!(
            parse(&[("lr_schedule", cat("exponential"))]).unwrap().0,
            LrSchedule::Exponential { gamma: 0.95 }
        );
        assert_eq!(
            parse(&[("lr_schedule", cat("cosine"))]).unwrap().0,
            LrSchedule::Cosine { min_lr: 0.0 }
        );
        assert_eq!(
            parse(&[("lr_schedule", cat("cosine_restarts"))]).unwrap().0,
            LrSchedule::CosineRestarts {
                t0: 10,
                t_mult: 1,
                min_lr: 0.0
            }
        );
        assert_eq!(
            parse(&[("lr_schedule", cat("one_cycle"))]).unwrap().0,
            LrSchedule::OneCycle {
                pct_start: 0.3,
                div_factor: 25.0,
                final_div_factor: 1e4
            }
        );
        for name in SCHEDULES {
            let (kind, _) = parse(&[("lr_schedule", cat(name))]).unwrap();
            assert_eq!(kind.name(), *name);
        }
    }

    #[test]
    fn parser_reads_options() {
        let (kind, warmup) = parse(&[
            ("lr_schedule", cat("step")),
            ("lr_step_size", ParamValue::Int(3)),
            ("lr_gamma", ParamValue::Float(0.5)),
            ("warmup_epochs", ParamValue::Float(1.5)),
        ])
        .unwrap();
        assert_eq!(
            kind,
            LrSchedule::Step {
                step_size: 3,
                gamma: 0.5
            }
        );
        assert_eq!(warmup, 1.5);

        // Integers where floats are expected, whole floats where integers are.
        let (kind, warmup) = parse(&[
            ("lr_schedule", cat("cosine_restarts")),
            ("sgdr_t0", ParamValue::Float(5.0)),
            ("sgdr_t_mult", ParamValue::Int(2)),
            ("lr_min", ParamValue::Int(0)),
            ("warmup_epochs", ParamValue::Int(2)),
        ])
        .unwrap();
        assert_eq!(
            kind,
            LrSchedule::CosineRestarts {
                t0: 5,
                t_mult: 2,
                min_lr: 0.0
            }
        );
        assert_eq!(warmup, 2.0);

        let (kind, _) = parse(&[
            ("lr_schedule", cat("one_cycle")),
            ("one_cycle_pct", ParamValue::Float(0.4)),
            ("one_cycle_div", ParamValue::Int(10)),
            ("one_cycle_final_div", ParamValue::Float(100.0)),
        ])
        .unwrap();
        assert_eq!(
            kind,
            LrSchedule::OneCycle {
                pct_start: 0.4,
                div_factor: 10.0,
                final_div_factor: 100.0
            }
        );

        // Options of other kinds are not read.
        let (kind, _) = parse(&[
            ("lr_schedule", cat("cosine")),
            ("lr_gamma", ParamValue::Float(7.0)),
        ])
        .unwrap();
        assert_eq!(kind, LrSchedule::Cosine { min_lr: 0.0 });
    }

    #[test]
    fn parser_errors() {
        let err = |pairs: &[(&str, ParamValue)]| parse(pairs).unwrap_err();
        assert_eq!(
            err(&[("lr_schedule", cat("cosin"))]),
            "lr_schedule: expected one of constant, step, exponential, cosine, \
             cosine_restarts, one_cycle, got \"cosin\""
        );
        assert_eq!(
            err(&[("lr_schedule", ParamValue::Int(3))]),
            "lr_schedule: expected one of constant, step, exponential, cosine, \
             cosine_restarts, one_cycle, got 3"
        );
        let step = || ("lr_schedule", cat("step"));
        assert_eq!(
            err(&[step(), ("lr_step_size", ParamValue::Int(0))]),
            "lr_step_size: expected an integer ≥ 1, got 0"
        );
        assert_eq!(
            err(&[step(), ("lr_step_size", ParamValue::Float(2.5))]),
            "lr_step_size: expected an integer ≥ 1, got 2.5"
        );
        assert_eq!(
            err(&[step(), ("lr_step_size", ParamValue::Int(1 << 40))]),
            format!("lr_step_size: expected an integer ≥ 1, got {}", 1i64 << 40)
        );
        assert_eq!(
            err(&[step(), ("lr_gamma", ParamValue::Float(1.5))]),
            "lr_gamma: expected a number in (0, 1], got 1.5"
        );
        assert_eq!(
            err(&[step(), ("lr_gamma", ParamValue::Int(0))]),
            "lr_gamma: expected a number in (0, 1], got 0"
        );
        assert_eq!(
            err(&[
                ("lr_schedule", cat("exponential")),
                ("lr_gamma", cat("high"))
            ]),
            "lr_gamma: expected a number in (0, 1], got \"high\""
        );
        assert_eq!(
            err(&[
                ("lr_schedule", cat("exponential")),
                ("lr_gamma", ParamValue::Float(f64::NAN))
            ]),
            "lr_gamma: expected a number in (0, 1], got NaN"
        );
        assert_eq!(
            err(&[
                ("lr_schedule", cat("cosine")),
                ("lr_min", ParamValue::Float(-0.1))
            ]),
            "lr_min: expected a number ≥ 0, got -0.1"
        );
        let sgdr = || ("lr_schedule", cat("cosine_restarts"));
        assert_eq!(
            err(&[sgdr(), ("sgdr_t0", ParamValue::Int(-2))]),
            "sgdr_t0: expected an integer ≥ 1, got -2"
        );
        assert_eq!(
            err(&[sgdr(), ("sgdr_t_mult", ParamValue::Int(0))]),
            "sgdr_t_mult: expected an integer ≥ 1, got 0"
        );
        let oc = || ("lr_schedule", cat("one_cycle"));
        assert_eq!(
            err(&[oc(), ("one_cycle_pct", ParamValue::Int(1))]),
            "one_cycle_pct: expected a number in (0, 1), got 1"
        );
        assert_eq!(
            err(&[oc(), ("one_cycle_div", ParamValue::Float(1.0))]),
            "one_cycle_div: expected a number > 1, got 1"
        );
        assert_eq!(
            err(&[oc(), ("one_cycle_final_div", ParamValue::Float(0.5))]),
            "one_cycle_final_div: expected a number > 1, got 0.5"
        );
        assert_eq!(
            err(&[("warmup_epochs", ParamValue::Float(-1.0))]),
            "warmup_epochs: expected a number ≥ 0, got -1"
        );
        assert_eq!(
            err(&[("warmup_epochs", ParamValue::Float(f64::INFINITY))]),
            "warmup_epochs: expected a number ≥ 0, got inf"
        );
        // Messages: lowercase setting name first, no trailing period.
        for e in [
            err(&[("lr_schedule", cat("x"))]),
            err(&[step(), ("lr_gamma", ParamValue::Float(2.0))]),
        ] {
            assert!(!e.ends_with('.'));
        }
    }
}
