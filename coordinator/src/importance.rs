//! Hyperparameter importance for the dashboard: PED-ANOVA (Watanabe et al.
//! 2023, "PED-ANOVA: Efficiently Quantifying Hyperparameter Importance in
//! Arbitrary Subspaces").
//!
//! Why PED-ANOVA rather than fANOVA: fANOVA fits a random forest to the
//! trials and integrates over its trees, which costs seconds to minutes at a
//! few thousand trials, depends on the forest's random seed, and would need a
//! forest implementation in this crate. PED-ANOVA needs no model of y(x): it
//! compares, for each parameter separately, where the best trials lie with
//! where all trials lie. That is a handful of 1-D density estimates on a
//! fixed grid, O(n + grid²) per parameter, so 10,000 trials take
//! milliseconds, and the result is a pure function of the trials
//! (deterministic, no seed), which suits a dashboard that recomputes it on
//! every refresh.
//!
//! Definition (the paper's Theorem 1, with γ' = 1, i.e. the region is the
//! whole set of finished trials): the importance of parameter d for reaching
//! the top-γ quantile of the objective is proportional to the Pearson
//! divergence
//!
//!   D_d = ∫ p_d(x | all) · (p_d(x | top γ) / p_d(x | all) − 1)² dx,
//!
//! where p_d(· | S) is the marginal density of parameter d among the trials
//! of S. The constant factor, (γ/γ')², is the same for every parameter and
//! disappears when the importances are normalised to sum to one. A
//! parameter whose value does not matter has the same marginal among the best
//! trials as among all trials (D_d ≈ 0); one that matters has its best trials
//! concentrated where the others are not.
//!
//! Estimation, per parameter:
//! - the top set: the best `max(⌈γ n⌉, MIN_TOP_TRIALS)` trials, γ =
//!   `TOP_QUANTILE`, plus every trial tied with the last of them, so the
//!   result does not depend on the order of the trials. When ties put every
//!   trial in the top set, nothing distinguishes good from bad and every
//!   importance is 0.
//! - numeric parameters (floats, integers, stepped, log scale): modelled in
//!   the unit coordinate of `space::to_unit`, where log scales are linear and
//!   grid values sit in the middle of their cells. Each density is a
//!   Gaussian Parzen estimator evaluated at the centres of `GRID` cells over
//!   [0, 1] and normalised over them. Both densities share one bandwidth,
//!   Scott's rule on the top set (s · m^(−1/5), s the sample standard
//!   deviation of the top set's coordinates, m their number), never below one
//!   grid cell. A shared bandwidth smooths both estimates alike, so an
//!   irrelevant parameter does not gain divergence from the two estimates'
//!   different biases (near the ends of [0, 1] in particular), and since the
//!   top set is a subset of all trials it bounds p(top)/p(all) by about
//!   n/|top|, so no grid cell can blow the sum up. The trials are first
//!   spread over a lattice ten times finer than the grid (linear binning), so
//!   the cost is O(n) plus a fixed lattice × grid convolution, with no
//!   exponential per trial.
//! - categorical parameters: frequencies of each choice, smoothed with a
//!   prior of one trial's weight spread evenly over the K choices
//!   ((count + 1/K) / (n + 1)); the divergence is the sum over the choices.
//! - a parameter with a single value among the trials, a trial whose value
//!   is missing, of the wrong type, or not among the choices (that trial is
//!   left out for that parameter only), and a malformed spec (that
//!   parameter gets 0) are all handled without panicking.

use crate::space::to_unit;
use hpo_proto::study::ParamSpec;
use hpo_proto::{Direction, ParamValue, Params};

/// Below this many trials with a finite value every importance is 0: the
/// top set would be a couple of trials and the estimate noise.
pub const MIN_TRIALS: usize = 10;
/// γ: the importances say which parameters matter for reaching the best
/// 10% of the trials.
pub const TOP_QUANTILE: f64 = 0.1;
/// The top set never has fewer trials than this (before ties are added).
pub const MIN_TOP_TRIALS: usize = 2;

/// Cells of the grid over [0, 1] where the numeric densities are evaluated.
const GRID: usize = 100;
/// Lattice points per grid cell for the linear binning (even, so every grid
/// centre falls on a lattice offset).
const SUB: usize = 10;
/// Intervals of the binning lattice over [0, 1].
const LATTICE: usize = GRID * SUB;
/// The smallest kernel bandwidth, in unit coordinates: one grid cell.
const MIN_BANDWIDTH: f64 = 1.0 / GRID as f64;

/// One parameter's share of the importance.
#[derive(Debug, Clone, PartialEq)]
pub struct Importance {
    pub param: String,
    pub importance: f64,
}

/// `trials`: (params, objective value) of finished trials with finite
/// values. Returns one entry per parameter of `space` in the order of
/// `space`, importances ≥ 0 summing to 1 (or all 0 when fewer than
/// `MIN_TRIALS` trials or no parameter matters). Pure and deterministic.
pub fn ped_anova(
    space: &[(String, ParamSpec)],
    trials: &[(&Params, f64)],
    direction: Direction,
) -> Vec<Importance> {
    let with = |values: &[f64]| -> Vec<Importance> {
        space
            .iter()
            .zip(values)
            .map(|((name, _), &importance)| Importance {
                param: name.clone(),
                importance,
            })
            .collect()
    };
    let zeros = || with(&vec![0.0; space.len()]);

    // Lower is better from here on; non-finite values are left out.
    let ranked: Vec<(&Params, f64)> = trials
        .iter()
        .filter(|(_, v)| v.is_finite())
        .map(|&(p, v)| {
            let key = match direction {
                Direction::Minimize => v,
                Direction::Maximize => -v,
            };
            (p, key)
        })
        .collect();
    let n = ranked.len();
    if n < MIN_TRIALS || space.is_empty() {
        return zeros();
    }
    let n_top = ((TOP_QUANTILE * n as f64).ceil() as usize).clamp(MIN_TOP_TRIALS, n);
    let mut keys: Vec<f64> = ranked.iter().map(|&(_, k)| k).collect();
    let (_, threshold, _) = keys.select_nth_unstable_by(n_top - 1, f64::total_cmp);
    let threshold = *threshold;
    let in_top: Vec<bool> = ranked.iter().map(|&(_, k)| k <= threshold).collect();
    if in_top.iter().all(|&t| t) {
        return zeros();
    }

    let divergences: Vec<f64> = space
        .iter()
        .map(|(name, spec)| {
            let d = if !well_formed(spec) {
                0.0
            } else if let ParamSpec::Categorical { choices } = spec {
                categorical_divergence(name, choices, &ranked, &in_top)
            } else {
                numeric_divergence(name, spec, &ranked, &in_top)
            };
            if d.is_finite() && d > 0.0 { d } else { 0.0 }
        })
        .collect();
    let total: f64 = divergences.iter().sum();
    if !(total.is_finite() && total > 0.0) {
        return zeros();
    }
    let shares: Vec<f64> = divergences.iter().map(|d| d / total).collect();
    with(&shares)
}

/// Whether `to_unit` can be trusted with this spec: finite ordered bounds, a
/// positive step, positive bounds on a log scale.
fn well_formed(spec: &ParamSpec) -> bool {
    match spec {
        ParamSpec::Float {
            low,
            high,
            log,
            step,
        } => {
            low.is_finite()
                && high.is_finite()
                && low <= high
                && (!log || *low > 0.0)
                && step.is_none_or(|s| s.is_finite() && s > 0.0 && (high - low) / s < 1e12)
        }
        ParamSpec::Int {
            low,
            high,
            log,
            step,
        } => low <= high && *step >= 1 && high.checked_sub(*low).is_some() && (!log || *low >= 1),
        ParamSpec::Categorical { .. } => true,
    }
}

/// The unit coordinates of parameter `name` among all trials and among the
/// top set, leaving out trials where it is missing or does not fit `spec`.
fn unit_values(
    name: &str,
    spec: &ParamSpec,
    ranked: &[(&Params, f64)],
    in_top: &[bool],
) -> (Vec<f64>, Vec<f64>) {
    let mut all = Vec::with_capacity(ranked.len());
    let mut top = Vec::new();
    for (&(params, _), &t) in ranked.iter().zip(in_top) {
        let Some(u) = params.get(name).and_then(|v| to_unit(spec, v)) else {
            continue;
        };
        all.push(u);
        if t {
            top.push(u);
        }
    }
    (all, top)
}

fn numeric_divergence(
    name: &str,
    spec: &ParamSpec,
    ranked: &[(&Params, f64)],
    in_top: &[bool],
) -> f64 {
    let (all, top) = unit_values(name, spec, ranked, in_top);
    if top.is_empty() || top.len() == all.len() {
        return 0.0;
    }
    let (lo, hi) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &u| {
            (lo.min(u), hi.max(u))
        });
    if lo >= hi {
        // A constant parameter explains nothing.
        return 0.0;
    }
    let kernel = kernel_table(scott_bandwidth(&top).max(MIN_BANDWIDTH));
    let p_all = grid_density(&all, &kernel);
    let p_top = grid_density(&top, &kernel);
    pearson(&p_top, &p_all)
}

/// Scott's rule in one dimension: sample standard deviation · m^(−1/5);
/// 0 for fewer than two values.
fn scott_bandwidth(values: &[f64]) -> f64 {
    let m = values.len();
    if m < 2 {
        return 0.0;
    }
    let mean = values.iter().sum::<f64>() / m as f64;
    let var = values.iter().map(|u| (u - mean) * (u - mean)).sum::<f64>() / (m - 1) as f64;
    let h = var.max(0.0).sqrt() * (m as f64).powf(-0.2);
    if h.is_finite() { h } else { 0.0 }
}

/// The (unnormalised) Gaussian kernel of bandwidth `h` at every lattice
/// offset o ∈ [−LATTICE, LATTICE], stored at index o + LATTICE.
fn kernel_table(h: f64) -> Vec<f64> {
    (0..=2 * LATTICE)
        .map(|i| {
            let z = (i as f64 - LATTICE as f64) / LATTICE as f64 / h;
            (-0.5 * z * z).exp()
        })
        .collect()
}

/// The Parzen estimator of `values` (unit coordinates) at the `GRID` cell
/// centres, normalised to sum to one; all zeros if there is no mass.
fn grid_density(values: &[f64], kernel: &[f64]) -> Vec<f64> {
    // Linear binning: each value splits its unit weight between the two
    // lattice points around it.
    let mut weights = vec![0.0; LATTICE + 1];
    for &u in values {
        let pos = u.clamp(0.0, 1.0) * LATTICE as f64;
        let k = (pos.floor() as usize).min(LATTICE - 1);
        let frac = pos - k as f64;
        weights[k] += 1.0 - frac;
        weights[k + 1] += frac;
    }
    let mut density = vec![0.0; GRID];
    for (k, &w) in weights.iter().enumerate() {
        if w == 0.0 {
            continue;
        }
        // Grid centre j sits at lattice position SUB·j + SUB/2; the offset
        // from lattice point k is that minus k, shifted into the table.
        let base = LATTICE + SUB / 2 - k;
        for (j, d) in density.iter_mut().enumerate() {
            *d += w * kernel[base + SUB * j];
        }
    }
    let total: f64 = density.iter().sum();
    if total > 0.0 && total.is_finite() {
        density.iter_mut().for_each(|d| *d /= total);
    } else {
        density.iter_mut().for_each(|d| *d = 0.0);
    }
    density
}

/// Pearson divergence of `p` from `q`, two discrete distributions on the
/// same support: Σ q (p/q − 1)² = Σ (p − q)² / q, over the cells where q has
/// mass (where q has none, neither has p: the top set is a subset).
fn pearson(p: &[f64], q: &[f64]) -> f64 {
    p.iter()
        .zip(q)
        .filter(|&(_, &q)| q > 0.0)
        .map(|(&p, &q)| (p - q) * (p - q) / q)
        .sum()
}

fn categorical_divergence(
    name: &str,
    choices: &[ParamValue],
    ranked: &[(&Params, f64)],
    in_top: &[bool],
) -> f64 {
    let k = choices.len();
    if k < 2 {
        return 0.0;
    }
    let mut all = vec![0.0; k];
    let mut top = vec![0.0; k];
    for (&(params, _), &t) in ranked.iter().zip(in_top) {
        let Some(i) = params
            .get(name)
            .and_then(|v| choices.iter().position(|c| c == v))
        else {
            continue;
        };
        all[i] += 1.0;
        if t {
            top[i] += 1.0;
        }
    }
    let n_all: f64 = all.iter().sum();
    let n_top: f64 = top.iter().sum();
    let seen = all.iter().filter(|&&c| c > 0.0).count();
    if seen < 2 || n_top == 0.0 || n_top == n_all {
        return 0.0;
    }
    let prior = 1.0 / k as f64;
    let smooth = |counts: &[f64], n: f64| -> Vec<f64> {
        counts.iter().map(|c| (c + prior) / (n + 1.0)).collect()
    };
    pearson(&smooth(&top, n_top), &smooth(&all, n_all))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::space::from_unit;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn float(low: f64, high: f64) -> ParamSpec {
        ParamSpec::Float {
            low,
            high,
            log: false,
            step: None,
        }
    }

    fn log_float(low: f64, high: f64) -> ParamSpec {
        ParamSpec::Float {
            low,
            high,
            log: true,
            step: None,
        }
    }

    fn int(low: i64, high: i64, step: i64) -> ParamSpec {
        ParamSpec::Int {
            low,
            high,
            log: false,
            step,
        }
    }

    fn cat(choices: &[&str]) -> ParamSpec {
        ParamSpec::Categorical {
            choices: choices
                .iter()
                .map(|c| ParamValue::Categorical((*c).to_string()))
                .collect(),
        }
    }

    fn space(specs: &[(&str, ParamSpec)]) -> Vec<(String, ParamSpec)> {
        specs
            .iter()
            .map(|(n, s)| ((*n).to_string(), s.clone()))
            .collect()
    }

    /// `n` configurations drawn uniformly in the unit cube of `space`.
    fn sample(space: &[(String, ParamSpec)], n: usize, seed: u64) -> Vec<Params> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                space
                    .iter()
                    .map(|(name, spec)| (name.clone(), from_unit(spec, rng.r#gen::<f64>())))
                    .collect()
            })
            .collect()
    }

    fn f(p: &Params, name: &str) -> f64 {
        p[name].as_f64().unwrap()
    }

    fn run(
        space: &[(String, ParamSpec)],
        rows: &[(Params, f64)],
        direction: Direction,
    ) -> Vec<Importance> {
        let trials: Vec<(&Params, f64)> = rows.iter().map(|(p, v)| (p, *v)).collect();
        ped_anova(space, &trials, direction)
    }

    fn get(imp: &[Importance], name: &str) -> f64 {
        imp.iter().find(|i| i.param == name).unwrap().importance
    }

    fn first(imp: &[Importance]) -> &str {
        &imp.iter()
            .max_by(|a, b| a.importance.total_cmp(&b.importance))
            .unwrap()
            .param
    }

    fn assert_normalised(imp: &[Importance]) {
        assert!(imp.iter().all(|i| i.importance >= 0.0), "{imp:?}");
        let sum: f64 = imp.iter().map(|i| i.importance).sum();
        assert!((sum - 1.0).abs() < 1e-9, "sum {sum}: {imp:?}");
    }

    #[test]
    fn one_relevant_numeric_parameter_dominates() {
        let s = space(&[
            ("x1", float(-5.0, 5.0)),
            ("x2", float(0.0, 1.0)),
            ("x3", float(0.0, 1.0)),
        ]);
        let rows: Vec<(Params, f64)> = sample(&s, 500, 1)
            .into_iter()
            .map(|p| {
                let y = (f(&p, "x1") - 1.3).powi(2);
                (p, y)
            })
            .collect();
        let imp = run(&s, &rows, Direction::Minimize);
        let names: Vec<&str> = imp.iter().map(|i| i.param.as_str()).collect();
        assert_eq!(names, ["x1", "x2", "x3"]);
        assert_normalised(&imp);
        assert!(get(&imp, "x1") > 0.8, "{imp:?}");
        assert!(get(&imp, "x2") < 0.1, "{imp:?}");
        assert!(get(&imp, "x3") < 0.1, "{imp:?}");
    }

    #[test]
    fn categorical_that_decides_the_objective_ranks_first() {
        let s = space(&[
            ("lr", float(0.0, 1.0)),
            ("optimizer", cat(&["sgd", "adam", "rmsprop"])),
            ("layers", int(1, 8, 1)),
        ]);
        let mut noise = ChaCha8Rng::seed_from_u64(99);
        let rows: Vec<(Params, f64)> = sample(&s, 500, 2)
            .into_iter()
            .map(|p| {
                let base = match &p["optimizer"] {
                    ParamValue::Categorical(c) if c == "adam" => 0.0,
                    ParamValue::Categorical(c) if c == "sgd" => 1.0,
                    _ => 2.0,
                };
                let y = base + 0.01 * noise.r#gen::<f64>();
                (p, y)
            })
            .collect();
        let imp = run(&s, &rows, Direction::Minimize);
        assert_normalised(&imp);
        assert_eq!(first(&imp), "optimizer", "{imp:?}");
        assert!(get(&imp, "optimizer") > 0.6, "{imp:?}");
    }

    #[test]
    fn log_scale_float_that_matters_is_found() {
        let s = space(&[
            ("lr", log_float(1e-5, 1e-1)),
            ("momentum", float(0.0, 0.99)),
            ("batch", int(16, 256, 16)),
        ]);
        let trials = sample(&s, 500, 3);
        let lrs: Vec<f64> = trials.iter().map(|p| f(p, "lr")).collect();
        // Spread on a log scale: every decade is visited.
        assert!(lrs.iter().any(|&v| v < 1e-4) && lrs.iter().any(|&v| v > 1e-2));
        let rows: Vec<(Params, f64)> = trials
            .into_iter()
            .map(|p| {
                let y = (f(&p, "lr").log10() + 3.0).powi(2);
                (p, y)
            })
            .collect();
        let imp = run(&s, &rows, Direction::Minimize);
        assert_normalised(&imp);
        assert_eq!(first(&imp), "lr", "{imp:?}");
        assert!(get(&imp, "lr") > 0.8, "{imp:?}");
    }

    #[test]
    fn integer_parameter_that_matters_is_found() {
        let s = space(&[("units", int(1, 8, 1)), ("dropout", float(0.0, 0.5))]);
        let mut noise = ChaCha8Rng::seed_from_u64(5);
        let rows: Vec<(Params, f64)> = sample(&s, 300, 4)
            .into_iter()
            .map(|p| {
                let y = (f(&p, "units") - 5.0).abs() + 0.1 * noise.r#gen::<f64>();
                (p, y)
            })
            .collect();
        let imp = run(&s, &rows, Direction::Minimize);
        assert_normalised(&imp);
        assert!(get(&imp, "units") > 0.8, "{imp:?}");
    }

    #[test]
    fn flipping_sign_and_direction_gives_the_same_importances() {
        let s = space(&[
            ("a", float(0.0, 1.0)),
            ("b", log_float(1e-3, 1.0)),
            ("c", cat(&["x", "y"])),
        ]);
        let rows: Vec<(Params, f64)> = sample(&s, 400, 6)
            .into_iter()
            .map(|p| {
                let c = if p["c"] == ParamValue::Categorical("x".into()) {
                    0.3
                } else {
                    0.0
                };
                let y = (f(&p, "a") - 0.7).powi(2) + 0.2 * f(&p, "b") + c;
                (p, y)
            })
            .collect();
        let flipped: Vec<(Params, f64)> = rows.iter().map(|(p, y)| (p.clone(), -y)).collect();
        let min = run(&s, &rows, Direction::Minimize);
        let max = run(&s, &flipped, Direction::Maximize);
        assert_normalised(&min);
        assert_eq!(min, max);
        // And the direction is not ignored: maximising the original
        // objective looks at other trials.
        assert_ne!(min, run(&s, &rows, Direction::Maximize));
    }

    #[test]
    fn fewer_than_min_trials_give_zeros() {
        let s = space(&[("a", float(0.0, 1.0)), ("b", cat(&["x", "y"]))]);
        let rows: Vec<(Params, f64)> = sample(&s, MIN_TRIALS - 1, 7)
            .into_iter()
            .map(|p| {
                let y = f(&p, "a");
                (p, y)
            })
            .collect();
        let imp = run(&s, &rows, Direction::Minimize);
        assert_eq!(imp.len(), 2);
        assert_eq!(imp[0].param, "a");
        assert_eq!(imp[1].param, "b");
        assert!(imp.iter().all(|i| i.importance == 0.0), "{imp:?}");
        // Non-finite values do not count towards MIN_TRIALS.
        let mut rows = rows;
        rows.push((rows[0].0.clone(), f64::NAN));
        rows.push((rows[0].0.clone(), f64::INFINITY));
        let imp = run(&s, &rows, Direction::Minimize);
        assert!(imp.iter().all(|i| i.importance == 0.0), "{imp:?}");
        // At MIN_TRIALS they are computed.
        let rows: Vec<(Params, f64)> = sample(&s, MIN_TRIALS, 7)
            .into_iter()
            .map(|p| {
                let y = f(&p, "a");
                (p, y)
            })
            .collect();
        assert_normalised(&run(&s, &rows, Direction::Minimize));
    }

    #[test]
    fn constant_parameter_gets_zero() {
        let s = space(&[
            ("x", float(0.0, 1.0)),
            ("fixed", float(0.0, 1.0)),
            ("fixed_cat", cat(&["a", "b", "c"])),
            ("degenerate", float(2.0, 2.0)),
        ]);
        let rows: Vec<(Params, f64)> = sample(&s, 200, 8)
            .into_iter()
            .map(|mut p| {
                p.insert("fixed".into(), ParamValue::Float(0.25));
                p.insert("fixed_cat".into(), ParamValue::Categorical("b".into()));
                let y = f(&p, "x");
                (p, y)
            })
            .collect();
        let imp = run(&s, &rows, Direction::Minimize);
        assert_normalised(&imp);
        assert_eq!(get(&imp, "fixed"), 0.0);
        assert_eq!(get(&imp, "fixed_cat"), 0.0);
        assert_eq!(get(&imp, "degenerate"), 0.0);
        assert!((get(&imp, "x") - 1.0).abs() < 1e-12, "{imp:?}");
    }

    #[test]
    fn flat_objective_or_constant_space_gives_zeros() {
        let s = space(&[("a", float(0.0, 1.0)), ("b", cat(&["x", "y"]))]);
        let rows: Vec<(Params, f64)> = sample(&s, 100, 9).into_iter().map(|p| (p, 3.0)).collect();
        let imp = run(&s, &rows, Direction::Minimize);
        assert!(imp.iter().all(|i| i.importance == 0.0), "{imp:?}");

        let mut p = Params::new();
        p.insert("a".into(), ParamValue::Float(0.5));
        p.insert("b".into(), ParamValue::Categorical("x".into()));
        let rows: Vec<(Params, f64)> = (0..50).map(|i| (p.clone(), i as f64)).collect();
        let imp = run(&s, &rows, Direction::Maximize);
        assert!(imp.iter().all(|i| i.importance == 0.0), "{imp:?}");
    }

    #[test]
    fn importances_sum_to_one() {
        let s = space(&[
            ("a", float(-1.0, 1.0)),
            ("b", log_float(1e-4, 10.0)),
            ("c", int(0, 100, 5)),
            (
                "d",
                ParamSpec::Float {
                    low: 0.0,
                    high: 1.0,
                    log: false,
                    step: Some(0.1),
                },
            ),
            ("e", cat(&["p", "q", "r", "s"])),
        ]);
        for seed in 0..20 {
            let n = 10 + 37 * seed as usize;
            let mut noise = ChaCha8Rng::seed_from_u64(1000 + seed);
            let rows: Vec<(Params, f64)> = sample(&s, n, seed)
                .into_iter()
                .map(|p| {
                    let y = f(&p, "a").sin() * f(&p, "c") + f(&p, "b").ln() + noise.r#gen::<f64>();
                    (p, y)
                })
                .collect();
            for direction in [Direction::Minimize, Direction::Maximize] {
                let imp = run(&s, &rows, direction);
                assert_eq!(imp.len(), s.len());
                assert_normalised(&imp);
            }
        }
    }

    #[test]
    fn result_does_not_depend_on_trial_order() {
        let s = space(&[("a", float(0.0, 1.0)), ("b", cat(&["x", "y", "z"]))]);
        let rows: Vec<(Params, f64)> = sample(&s, 300, 10)
            .into_iter()
            .map(|p| {
                // Coarse values, so ties straddle the top set's edge.
                let y = (f(&p, "a") * 10.0).round();
                (p, y)
            })
            .collect();
        let mut reversed = rows.clone();
        reversed.reverse();
        let a = run(&s, &rows, Direction::Minimize);
        let b = run(&s, &reversed, Direction::Minimize);
        assert_eq!(a, run(&s, &rows, Direction::Minimize));
        for (x, y) in a.iter().zip(&b) {
            assert!((x.importance - y.importance).abs() < 1e-12, "{a:?} {b:?}");
        }
    }

    #[test]
    fn bad_inputs_are_skipped_without_panicking() {
        let s = space(&[
            ("x", float(0.0, 1.0)),
            ("opt", cat(&["a", "b"])),
            ("n", int(1, 10, 1)),
        ]);
        let mut rows: Vec<(Params, f64)> = sample(&s, 200, 11)
            .into_iter()
            .map(|p| {
                let y = f(&p, "x");
                (p, y)
            })
            .collect();
        // Wrong types, unknown choices, missing params, non-finite values.
        for (i, (p, _)) in rows.iter_mut().enumerate() {
            match i % 5 {
                0 => {
                    p.insert("n".into(), ParamValue::Float(2.5));
                }
                1 => {
                    p.insert("opt".into(), ParamValue::Categorical("zzz".into()));
                }
                2 => {
                    p.remove("x");
                }
                3 => {
                    p.insert("x".into(), ParamValue::Float(f64::NAN));
                }
                _ => {}
            }
        }
        rows.push((Params::new(), f64::NAN));
        rows.push((Params::new(), f64::NEG_INFINITY));
        rows.push((Params::new(), 0.5));
        let imp = run(&s, &rows, Direction::Minimize);
        assert_normalised(&imp);
        assert_eq!(first(&imp), "x", "{imp:?}");

        // Malformed specs get 0 and do not reach `to_unit`.
        let bad = space(&[
            ("x", float(0.0, 1.0)),
            ("reversed", float(1.0, 0.0)),
            (
                "zero_step",
                ParamSpec::Float {
                    low: 0.0,
                    high: 1.0,
                    log: false,
                    step: Some(0.0),
                },
            ),
            ("int_reversed", int(10, 1, 1)),
            ("int_zero_step", int(1, 10, 0)),
            ("huge", int(i64::MIN, i64::MAX, 1)),
            ("log_negative", log_float(-1.0, 1.0)),
            ("no_choices", ParamSpec::Categorical { choices: vec![] }),
        ]);
        let rows: Vec<(Params, f64)> = sample(&s, 100, 12)
            .into_iter()
            .enumerate()
            .map(|(i, mut p)| {
                for (name, _) in bad.iter().skip(1) {
                    p.insert(name.clone(), ParamValue::Int(i as i64));
                    if name.contains("step") || name == "reversed" {
                        p.insert(name.clone(), ParamValue::Float(i as f64 / 7.0));
                    }
                }
                let y = f(&p, "x");
                (p, y)
            })
            .collect();
        let imp = run(&bad, &rows, Direction::Minimize);
        assert_normalised(&imp);
        assert_eq!(get(&imp, "x"), 1.0);

        // Nothing at all.
        assert!(ped_anova(&[], &[], Direction::Minimize).is_empty());
        let imp = ped_anova(&s, &[], Direction::Maximize);
        assert!(imp.iter().all(|i| i.importance == 0.0));
    }

    #[test]
    fn ten_thousand_trials_and_ten_parameters() {
        let mut specs = Vec::new();
        for i in 0..4 {
            specs.push((format!("f{i}"), float(0.0, 1.0)));
        }
        specs.push(("lr".to_string(), log_float(1e-6, 1.0)));
        specs.push(("units".to_string(), int(8, 1024, 8)));
        specs.push((
            "layers".to_string(),
            ParamSpec::Int {
                low: 1,
                high: 64,
                log: true,
                step: 1,
            },
        ));
        specs.push(("opt".to_string(), cat(&["sgd", "adam", "adamw", "lion"])));
        specs.push(("act".to_string(), cat(&["relu", "gelu"])));
        specs.push(("drop".to_string(), float(0.0, 0.9)));
        let s: Vec<(String, ParamSpec)> = specs;
        let rows: Vec<(Params, f64)> = sample(&s, 10_000, 13)
            .into_iter()
            .map(|p| {
                let y = (f(&p, "f0") - 0.2).powi(2) + 0.1 * (f(&p, "lr").log10() + 3.0).abs();
                (p, y)
            })
            .collect();
        let trials: Vec<(&Params, f64)> = rows.iter().map(|(p, v)| (p, *v)).collect();
        let start = std::time::Instant::now();
        let imp = ped_anova(&s, &trials, Direction::Minimize);
        let elapsed = start.elapsed();
        println!("10,000 trials x 10 params: {elapsed:?}\n{imp:#?}");
        assert_eq!(imp.len(), 10);
        assert_normalised(&imp);
        let top2: Vec<&str> = {
            let mut sorted: Vec<&Importance> = imp.iter().collect();
            sorted.sort_by(|a, b| b.importance.total_cmp(&a.importance));
            sorted.iter().take(2).map(|i| i.param.as_str()).collect()
        };
        assert!(top2.contains(&"f0") && top2.contains(&"lr"), "{imp:?}");
    }
}
