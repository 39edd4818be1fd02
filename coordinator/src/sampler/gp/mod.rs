//! Gaussian-process Bayesian optimisation.
//!
//! **Model.** A zero-mean GP with a Matérn-5/2 kernel over the encoded space
//! (`kernel.rs`): numeric parameters in their unit coordinate
//! (`space::to_unit`, so log-scale parameters are modelled in log space;
//! integers and stepped values are modelled as continuous and rounded by
//! `space::from_unit` when proposing), categorical parameters one-hot (one
//! 0/1 dimension per choice, one length scale shared by the parameter's
//! dimensions, so choices are never ordered). Observations are standardised
//! (mean 0, sd 1), negated when maximising so the model always minimises.
//! Hyperparameters (a length scale per group, signal and noise variance,
//! the noise floored at 1e-6) are MAP estimates: log marginal likelihood
//! plus log-normal priors, with analytic gradients, maximised by L-BFGS in a
//! log-space box from three starts (`kernel::fit`).
//!
//! **Which trials count.** Completed trials with a finite value are
//! observations, and so are stopped ones (ended early by a scheduler, with
//! the value they reached). Failed trials, and completed ones without a
//! finite value, count as observations at the worst observed value, so the
//! model steers away from where trials break. Cancelled trials are left out.
//! Running, waiting and paused trials are pending: kriging-believer
//! fantasies at the posterior mean, believed exactly (`posterior.rs`), which
//! leave the mean as it is and shrink the variance around them, so parallel
//! proposals spread.
//!
//! **Fit schedule.** The hyperparameters are refitted for every new
//! observation up to 64, then whenever the count has grown by about 8%
//! since the last refit point (`refit_point`); in between, the posterior
//! uses all observations with the last fitted hyperparameters (one Cholesky
//! factorisation per proposal). Beyond 200 observations a refit runs its
//! multi-start search on an evenly spaced subset of 200 and then polishes
//! the winner with a few L-BFGS steps on all observations (20 evaluations
//! of the likelihood up to ~650 observations, down to 6 at 1,000 and 3
//! beyond ~1,300: each costs O(n^3)).
//!
//! **Warm starts.** A fit on r observations starts from the fit on the
//! first a of them, a the largest power of two below r from 8 up to 256
//! (`warm_anchor`), and from the prior mean: two L-BFGS runs instead of a
//! cold fit's three (prior mean and two seeded draws from the prior), and
//! the warm one usually converges in a few iterations. The anchor is a
//! power of two, not the previous refit point, so the chain behind a fit is
//! at most six fits long, all small, and rarely changes: its data is an
//! early part of the observations, which later completions seldom alter.
//!
//! **Determinism.** A proposal is a function of the seed, the trial number
//! and the history only: the hyperparameters at a refit point r are fitted
//! on the first r observations (by trial number) with starts seeded from
//! (seed, r) and warm-started from the fit at r's anchor, computed the same
//! way. The sampler's cache merely remembers those results (each is reused
//! only for exactly the same data). A restarted coordinator rebuilds the
//! chain from the stored history and proposes what the old one would have.
//!
//! **Initial design.** The first `n_init = clamp(params + 1, 5, 10)` trials
//! are the first points of a scrambled Sobol sequence seeded by the study
//! (`sobol.rs`, as for the `sobol` sampler and TPE's start). After that,
//! while fewer than two finite observations exist, each trial takes the best
//! of 64 random points by distance to every trial so far (maximin).
//!
//! **Acquisition.** Log expected improvement over the lowest posterior mean
//! at an observation or a pending trial's fantasy, computed stably far into
//! the tail (`acq.rs`). Maximised by a sweep of 2,048 candidates (half
//! uniformly random, half Gaussian perturbations of the five best observed
//! points at scales 0.01 to 0.3; fewer beyond 300 points of data, 614 at
//! 1,000), then box-constrained L-BFGS on the numeric dimensions from the
//! best 5 (3 beyond 300 points), then each categorical parameter's choices
//! tried at the winner. Grid dimensions (integers, steps) are snapped to
//! the middle of their value's cell wherever the acquisition is judged, so
//! it is judged at points that can be proposed. Categorical dimensions are
//! always valid one-hot vectors. No proposal lies within 0.1
//! length scales of a pending trial (where the believer alone can still let
//! the maximum sit a hair's breadth away once the model is confident), and a
//! proposal that rounds to a configuration some trial already has gives way
//! to the best candidate that does not (unless none does).

mod acq;
mod kernel;
mod lbfgs;
mod posterior;
#[cfg(test)]
mod tests;

use super::{Sampler, TrialView, mix};
use crate::space;
use hpo_proto::study::{ParamSpec, StudySpec};
use hpo_proto::{Direction, ParamValue, Params, TrialState};
use kernel::Layout;
use posterior::Posterior;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashSet;

const DESIGN_TAG: u64 = 0x4c48_5331;
const FIT_TAG: u64 = 0x4750_4649_5431;
const FILL_TAG: u64 = 0x4649_4c4c;

/// How each parameter maps onto the encoded dimensions.
#[derive(Debug, Clone)]
enum Slot {
    Numeric(usize),
    Categorical { first: usize, len: usize },
}

#[derive(Debug, Clone)]
pub(super) struct Encoding {
    slots: Vec<Slot>,
    pub dims: usize,
    /// The numeric dimensions (continuous in the model).
    pub continuous: Vec<usize>,
    /// (first dimension, number of choices) of each categorical parameter.
    pub cats: Vec<(usize, usize)>,
    /// Numeric dimensions on a grid (integers, stepped floats) and their
    /// specs: `snap` moves a coordinate to the middle of its value's cell.
    snaps: Vec<(usize, ParamSpec)>,
}

impl Encoding {
    fn new(params: &[(String, ParamSpec)]) -> (Encoding, Layout) {
        let mut slots = Vec::new();
        let mut continuous = Vec::new();
        let mut cats = Vec::new();
        let mut group_of_dim = Vec::new();
        let mut snaps = Vec::new();
        let mut dims = 0;
        for (g, (_, spec)) in params.iter().enumerate() {
            match spec {
                ParamSpec::Categorical { choices } => {
                    let len = choices.len().max(1);
                    slots.push(Slot::Categorical { first: dims, len });
                    cats.push((dims, len));
                    group_of_dim.extend(std::iter::repeat_n(g, len));
                    dims += len;
                }
                _ => {
                    let on_grid = matches!(
                        spec,
                        ParamSpec::Int { .. }
                            | ParamSpec::Float {
                                log: false,
                                step: Some(_),
                                ..
                            }
                    );
                    if on_grid {
                        snaps.push((dims, spec.clone()));
                    }
                    slots.push(Slot::Numeric(dims));
                    continuous.push(dims);
                    group_of_dim.push(g);
                    dims += 1;
                }
            }
        }
        let layout = Layout {
            dims,
            groups: params.len(),
            group_of_dim,
        };
        (
            Encoding {
                slots,
                dims,
                continuous,
                cats,
                snaps,
            },
            layout,
        )
    }

    /// The encoded point of `p`, or None when a parameter is missing or its
    /// value is not in the space.
    fn encode(&self, params: &[(String, ParamSpec)], p: &Params, out: &mut Vec<f64>) -> bool {
        let start = out.len();
        out.resize(start + self.dims, 0.0);
        for ((name, spec), slot) in params.iter().zip(&self.slots) {
            let Some(v) = p.get(name) else {
                out.truncate(start);
                return false;
            };
            match (slot, spec) {
                (Slot::Categorical { first, .. }, ParamSpec::Categorical { choices }) => {
                    let Some(i) = choices.iter().position(|c| c == v) else {
                        out.truncate(start);
                        return false;
                    };
                    out[start + first + i] = 1.0;
                }
                (Slot::Numeric(d), _) => {
                    let Some(u) = space::to_unit(spec, v) else {
                        out.truncate(start);
                        return false;
                    };
                    out[start + d] = u;
                }
                _ => {
                    out.truncate(start);
                    return false;
                }
            }
        }
        true
    }

    /// Moves each grid dimension of `x` to where its rounded value is
    /// encoded, so the acquisition is judged at points that can be proposed
    /// (and a configuration already tried looks tried).
    pub fn snap(&self, x: &mut [f64]) {
        for (d, spec) in &self.snaps {
            if let Some(u) = space::to_unit(spec, &space::from_unit(spec, x[*d])) {
                x[*d] = u;
            }
        }
    }

    fn decode(&self, params: &[(String, ParamSpec)], x: &[f64]) -> Params {
        params
            .iter()
            .zip(&self.slots)
            .map(|((name, spec), slot)| {
                let v = match (slot, spec) {
                    (Slot::Categorical { first, len }, ParamSpec::Categorical { choices }) => {
                        let i = (0..*len)
                            .max_by(|&a, &b| x[first + a].total_cmp(&x[first + b]).then(b.cmp(&a)))
                            .unwrap_or(0);
                        // u at the middle of choice i's interval.
                        space::from_unit(spec, (i as f64 + 0.5) / choices.len().max(1) as f64)
                    }
                    (Slot::Numeric(d), _) => space::from_unit(spec, x[*d]),
                    // Unreachable: slots are built from the same specs.
                    (Slot::Categorical { .. }, _) => space::from_unit(spec, 0.5),
                };
                (name.clone(), v)
            })
            .collect()
    }
}

/// A parameter value as a hashable key (floats by their bits).
#[derive(Debug, PartialEq, Eq, Hash)]
enum Key<'a> {
    Float(u64),
    Int(i64),
    Str(&'a str),
}

fn key(p: &Params) -> Vec<Key<'_>> {
    p.iter()
        .flat_map(|(name, v)| {
            let v = match v {
                // 0.0 and -0.0 are the same configuration.
                ParamValue::Float(f) => Key::Float((f + 0.0).to_bits()),
                ParamValue::Int(i) => Key::Int(*i),
                ParamValue::Categorical(s) => Key::Str(s),
            };
            [Key::Str(name), v]
        })
        .collect()
}

/// Observations in trial-number order, oriented for minimisation.
struct Observed {
    numbers: Vec<u32>,
    /// Row-major, `dims` wide.
    x: Vec<f64>,
    raw: Vec<f64>,
    /// Pending trials' points, row-major.
    pending: Vec<f64>,
    /// Observations with a finite value of their own.
    finite: usize,
}

/// The last hyperparameter fit and the data it was fitted on.
struct FitCache {
    /// The fit is on the first r observations.
    r: usize,
    key: Vec<(u32, u64)>,
    theta: Vec<f64>,
}

pub struct GpSampler {
    params: Vec<(String, ParamSpec)>,
    enc: Encoding,
    layout: Layout,
    seed: u64,
    maximize: bool,
    n_init: u32,
    /// Fits at the refit point in use and at its warm-start anchors.
    cache: Vec<FitCache>,
}

/// The number of observations whose fit serves `n` observations: n itself up
/// to 64, then the last point of the sequence 64, 64 + ceil(8%), ... not
/// above n.
fn refit_point(n: usize) -> usize {
    if n <= 64 {
        return n;
    }
    let mut s: usize = 64;
    loop {
        let next = s + s.div_ceil(12);
        if next > n {
            return s;
        }
        s = next;
    }
}

/// The fit whose hyperparameters start the fit on r observations: the one on
/// the largest power of two below r, from 8 up to 256 (smaller fits start
/// cold). Powers of two rather than the previous refit point keep the chain
/// short (at most six fits), so a restarted coordinator, whose cache is
/// empty, rebuilds it quickly, and it changes rarely (the anchor's data is
/// an early part of the observations, which later completions seldom
/// alter). The cap keeps every anchor cheap: above 200 observations a fit's
/// multi-start search runs on a subset of 200 anyway, which a fit on 256
/// starts as well as a larger one would.
fn warm_anchor(r: usize) -> Option<usize> {
    if r <= WARM_MIN {
        return None;
    }
    let a = 1usize << (usize::BITS - 1 - (r - 1).leading_zeros());
    (a >= WARM_MIN).then_some(a.min(WARM_MAX))
}

/// Fits on fewer observations than this start cold.
const WARM_MIN: usize = 8;
/// The largest anchor.
const WARM_MAX: usize = 256;

/// Mean and sd used to standardise `raw` (sd 1 when all values agree).
fn standardise(raw: &[f64]) -> Vec<f64> {
    let n = raw.len().max(1) as f64;
    let mean = raw.iter().sum::<f64>() / n;
    let var = raw.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    let sd = if var.sqrt() > 1e-12 * mean.abs().max(1e-300) && var > 0.0 {
        var.sqrt()
    } else {
        1.0
    };
    raw.iter().map(|v| (v - mean) / sd).collect()
}

impl GpSampler {
    pub fn new(spec: &StudySpec, seed: u64) -> Self {
        let params: Vec<(String, ParamSpec)> = spec
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (enc, layout) = Encoding::new(&params);
        let n_init = (params.len() as u32 + 1).clamp(5, 10);
        GpSampler {
            params,
            enc,
            layout,
            seed,
            maximize: spec.objective.direction == Direction::Maximize,
            n_init,
            cache: Vec::new(),
        }
    }

    /// Point `number` (< n_init) of the study's scrambled Sobol design, the
    /// initial design every model-based sampler starts from.
    fn design_point(&self, number: u32) -> Params {
        let u = super::sobol::sobol_point(
            u64::from(number),
            self.params.len(),
            mix(self.seed, DESIGN_TAG),
        );
        self.params
            .iter()
            .zip(u)
            .map(|((name, spec), u)| (name.clone(), space::from_unit(spec, u)))
            .collect()
    }

    /// The best of 64 seeded random points by distance to every trial so far.
    fn fill_point(&self, number: u32, history: &[TrialView]) -> Params {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(mix(self.seed, FILL_TAG), number as u64));
        let dims = self.enc.dims;
        let mut seen = Vec::new();
        for t in history {
            self.enc.encode(&self.params, &t.params, &mut seen);
        }
        let mut best = (f64::NEG_INFINITY, Params::new());
        for _ in 0..64 {
            let p: Params = self
                .params
                .iter()
                .map(|(name, spec)| (name.clone(), space::from_unit(spec, rng.r#gen::<f64>())))
                .collect();
            let mut x = Vec::with_capacity(dims);
            if !self.enc.encode(&self.params, &p, &mut x) {
                continue;
            }
            let d = seen
                .chunks(dims.max(1))
                .map(|s| {
                    s.iter()
                        .zip(&x)
                        .map(|(a, b)| (a - b) * (a - b))
                        .sum::<f64>()
                })
                .fold(f64::INFINITY, f64::min);
            if d > best.0 {
                best = (d, p);
            }
        }
        best.1
    }

    fn observe(&self, history: &[TrialView]) -> Observed {
        let mut order: Vec<&TrialView> = history.iter().collect();
        order.sort_by_key(|t| t.number);
        let mut numbers = Vec::new();
        let mut x = Vec::new();
        let mut raw: Vec<Option<f64>> = Vec::new();
        let mut pending = Vec::new();
        for t in order {
            let value = t.value.filter(|v| v.is_finite());
            let value = if self.maximize {
                value.map(|v| -v)
            } else {
                value
            };
            let entry = match t.state {
                TrialState::Running | TrialState::Waiting | TrialState::Paused => {
                    self.enc.encode(&self.params, &t.params, &mut pending);
                    continue;
                }
                TrialState::Completed => value,
                TrialState::Stopped => match value {
                    Some(v) => Some(v),
                    None => continue,
                },
                TrialState::Failed => None,
                TrialState::Cancelled => continue,
            };
            if self.enc.encode(&self.params, &t.params, &mut x) {
                numbers.push(t.number);
                raw.push(entry);
            }
        }
        let finite = raw.iter().filter(|v| v.is_some()).count();
        let worst = raw
            .iter()
            .flatten()
            .fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        let raw = raw.into_iter().map(|v| v.unwrap_or(worst)).collect();
        Observed {
            numbers,
            x,
            raw,
            pending,
            finite,
        }
    }

    /// Hyperparameters for these observations: the fit at their refit
    /// point.
    fn theta(&mut self, obs: &Observed) -> Vec<f64> {
        let r = refit_point(obs.raw.len());
        let theta = self.theta_at(r, obs);
        // Keep only the fits this chain can ask for again.
        let mut keep = vec![r];
        while let Some(a) = warm_anchor(*keep.last().unwrap_or(&0)) {
            keep.push(a);
        }
        self.cache.retain(|c| keep.contains(&c.r));
        theta
    }

    /// The fit on the first `r` observations, warm-started from the fit at
    /// `warm_anchor(r)` (itself computed the same way, so the chain is a
    /// function of the observations; a cached fit is reused only for exactly
    /// the same data).
    fn theta_at(&mut self, r: usize, obs: &Observed) -> Vec<f64> {
        let key: Vec<(u32, u64)> = obs.numbers[..r]
            .iter()
            .zip(&obs.raw[..r])
            .map(|(&n, v)| (n, v.to_bits()))
            .collect();
        if let Some(c) = self.cache.iter().find(|c| c.r == r && c.key == key) {
            return c.theta.clone();
        }
        let warm = warm_anchor(r).map(|a| self.theta_at(a, obs));
        let y = standardise(&obs.raw[..r]);
        let theta = kernel::fit(
            &obs.x[..r * self.enc.dims],
            &y,
            &self.layout,
            mix(mix(self.seed, FIT_TAG), r as u64),
            warm.as_deref(),
        );
        self.cache.retain(|c| c.r != r);
        self.cache.push(FitCache {
            r,
            key,
            theta: theta.clone(),
        });
        theta
    }

    /// The model's proposal, or None when the model cannot be built.
    fn model_point(
        &mut self,
        number: u32,
        obs: &Observed,
        history: &[TrialView],
    ) -> Option<Params> {
        let theta = self.theta(obs);
        let y = standardise(&obs.raw);
        let post = Posterior::new(&self.layout, &theta, &obs.x, &y, &obs.pending)?;
        let dims = self.enc.dims;
        let mut ranked: Vec<usize> = (0..y.len()).collect();
        ranked.sort_by(|&a, &b| y[a].total_cmp(&y[b]).then(a.cmp(&b)));
        let anchors: Vec<&[f64]> = ranked
            .iter()
            .take(5)
            .map(|&i| &obs.x[i * dims..(i + 1) * dims])
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed, number as u64));
        let n_total = y.len() + obs.pending.len() / dims.max(1);
        let ranked = acq::maximize(&post, &self.enc, &anchors, acq::budget(n_total), &mut rng);
        // The best point whose configuration (rounded onto the space) no
        // trial has had: a repeat teaches a deterministic objective nothing
        // and takes a worker. Failing that (a small discrete space nearly
        // spent), the best point anyway.
        let tried: HashSet<Vec<Key<'_>>> = history.iter().map(|t| key(&t.params)).collect();
        let decoded = || ranked.iter().map(|(_, x)| self.enc.decode(&self.params, x));
        decoded()
            .find(|p| !tried.contains(&key(p)))
            .or_else(|| decoded().next())
    }
}

impl Sampler for GpSampler {
    fn propose(&mut self, number: u32, history: &[TrialView]) -> Option<Params> {
        if self.params.is_empty() {
            return Some(Params::new());
        }
        if number < self.n_init {
            return Some(self.design_point(number));
        }
        let obs = self.observe(history);
        if obs.finite < 2 {
            return Some(self.fill_point(number, history));
        }
        match self.model_point(number, &obs, history) {
            Some(p) => Some(p),
            None => Some(self.fill_point(number, history)),
        }
    }
}
