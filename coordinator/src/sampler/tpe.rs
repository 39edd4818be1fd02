//! Multivariate tree-structured Parzen estimator (Bergstra et al. 2011 and
//! 2013; the joint kernel density of Falkner et al. 2018, BOHB).
//!
//! TPE models p(x | good) and p(x | bad) instead of p(y | x). The trials so
//! far are ranked by objective; the best γ(n) = min(⌈n/10⌉, 25) of the n
//! form the good set and the rest the bad set. Each set becomes a Parzen
//! estimator (a mixture with one kernel per trial plus a flat prior) over the
//! unit cube that `space` maps onto the parameters: l(x) for the good set,
//! g(x) for the bad. A proposal draws `N_CANDIDATES` points from l and keeps
//! the one with the largest log l(x) − log g(x); maximising l/g maximises
//! expected improvement under this model. (BOHB draws the candidates with
//! wider bandwidths than it scores them with: `sample_bandwidth_factor`.)
//!
//! Multivariate: a kernel is a product over the parameters, centred on one
//! trial, so the estimator keeps the interactions between parameters that a
//! product of per-parameter estimators (the original TPE) loses.
//!
//! Kernels live in the unit cube (`space::to_unit`), where log scales are
//! already linear and integers and steps are intervals:
//! - numeric parameters: a Gaussian truncated to [0, 1] around the trial's
//!   coordinate, with one bandwidth per dimension and set: Scott's rule on
//!   the set's spread, σ_d = s_d · n^(-1/(D+4)) (s_d the standard deviation
//!   of the set's coordinates in dimension d, or the uniform's 1/√12 for a
//!   set of one; n the set's size; D the number of parameters), but never
//!   below a floor, (N+1)^-0.6 with N the trials in both sets (0.24 at ten
//!   trials, 0.063 at a hundred, 0.016 at a thousand), nor below one grid
//!   cell of an integer or stepped parameter. Without the floor a small good
//!   set that happens to be tight collapses onto itself and the search
//!   stalls; a floor that shrinks with N still lets long studies refine.
//!   The exponent was chosen on the objectives of `tests_tpe`'s report
//!   (sphere, Branin, Hartmann-6 and a mixed space): Bergstra et al.'s
//!   1/min(100, N+1) was clearly worse there, a constant floor worse in long
//!   runs. A proposal is drawn as a continuous coordinate and mapped with
//!   `space::from_unit`, which snaps integers and steps to their grid.
//! - categorical parameters: an Aitchison–Aitken kernel, mass 1 − λ(K−1)/K
//!   on the trial's choice and λ/K on each of the K − 1 others, with
//!   λ = n^(-1/(D+4)) / 2 (the Scott factor, halved); no order is assumed
//!   between choices.
//! - the prior: uniform over the cube and the choices, with the weight of
//!   one trial, so neither estimator is zero anywhere and l keeps exploring.
//!
//! Which trials count:
//! - completed trials with a finite value, ranked by it;
//! - stopped or cancelled trials with a value, ranked after every completed
//!   one (their value is partial), by that value; without a value they are
//!   left out;
//! - running, waiting and paused trials: the constant liar (Ginsbourger et
//!   al. 2010). They count as the worst value seen, so they sit in the bad
//!   set. Failed trials, and completed ones without a finite value, count as
//!   worst too.
//!
//! The liar alone barely moves TPE: one pending kernel among the bad set's
//! n is diluted 1/n in g, while l is sharply peaked around the good trials,
//! so eight proposals made while the earlier ones run land within 0.01 of
//! each other (in the unit square, measured). Each pending trial therefore
//! also penalises the candidates near it (local penalisation, González et
//! al. 2016): the score gains ln(1 − exp(−½ Σ_d ((x_d − p_d) / (σ_d/2))²)),
//! σ_d l's bandwidth, when every categorical choice equals the pending
//! trial's. That forbids duplicates of running trials and spreads a batch to
//! about half l's bandwidth, at some cost in pure exploitation (see the
//! report's parallel runs).
//!
//! The first `max(10, 2·D)` trials come from a scrambled Sobol design, as
//! do later ones while no trial has a value. Every proposal is a function of
//! (seed, number, the trials numbered before `number`): no state carries
//! between calls, so a restarted coordinator proposes what the first would
//! have, and a fit never depends on the order of earlier calls.

use super::sobol::sobol_point;
use super::{Sampler, TrialView, mix};
use crate::space;
use hpo_proto::study::{ParamSpec, StudySpec};
use hpo_proto::{Direction, Params, TrialState};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Candidates drawn from l(x) per proposal.
pub const N_CANDIDATES: usize = 24;
/// The good set never holds more than this many trials.
pub const MAX_GOOD: usize = 25;
/// Weight of the flat prior, in trials.
const PRIOR_WEIGHT: f64 = 1.0;
/// The bandwidth floor is (N+1)^-FLOOR_EXPONENT.
const FLOOR_EXPONENT: f64 = 0.6;
/// Categorical λ is this times the Scott factor.
const CATEGORICAL_SCALE: f64 = 0.5;
/// A pending trial's penalty has this times l's bandwidth as its radius.
const PENALTY_RADIUS: f64 = 0.5;
/// The initial design's scramble is the study seed mixed with this, so a TPE
/// study's first trials differ from a Sobol study's with the same seed.
const DESIGN_SALT: u64 = 0x5450_455f_6465_7369;
const PROPOSE_SALT: u64 = 0x5450_455f_7072_6f70;

/// Tuning knobs; `Default` is what studies get.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub n_candidates: usize,
    /// Trials drawn from the Sobol design before the model takes over;
    /// None: max(10, 2·D).
    pub n_startup: Option<u32>,
    /// Radius of a pending trial's penalty, in l's bandwidths; 0: none (the
    /// constant liar alone).
    pub penalty_radius: f64,
    /// Candidates are drawn from l with its bandwidths (and categorical λ)
    /// times this, capped at 1, while l/g is scored with the fitted ones;
    /// above 1 the candidates spread wider than the good set (BOHB's
    /// bandwidth factor). 1: draw from l itself.
    pub sample_bandwidth_factor: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            n_candidates: N_CANDIDATES,
            n_startup: None,
            penalty_radius: PENALTY_RADIUS,
            sample_bandwidth_factor: 1.0,
        }
    }
}

/// Where a parameter's coordinate lives in a `Point`.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Numeric(usize),
    /// Index among the categorical parameters, and the number of choices.
    Categorical(usize, usize),
}

/// The space as the estimators see it.
#[derive(Debug, Clone)]
struct Shape {
    /// Number of parameters (Scott's D).
    dims: usize,
    /// Width in the unit interval of one grid cell, per numeric parameter.
    cells: Vec<f64>,
    /// Choices per categorical parameter.
    cat_sizes: Vec<usize>,
}

pub struct TpeSampler {
    params: Vec<(String, ParamSpec)>,
    slots: Vec<Slot>,
    shape: Shape,
    direction: Direction,
    seed: u64,
    n_startup: u32,
    opts: Options,
}

impl TpeSampler {
    pub fn new(spec: &StudySpec, seed: u64) -> Self {
        Self::with_options(spec, seed, Options::default())
    }

    pub(crate) fn with_options(spec: &StudySpec, seed: u64, opts: Options) -> Self {
        let params: Vec<(String, ParamSpec)> = spec
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut slots = Vec::with_capacity(params.len());
        let mut shape = Shape {
            dims: params.len(),
            cells: Vec::new(),
            cat_sizes: Vec::new(),
        };
        for (_, p) in &params {
            match p {
                ParamSpec::Categorical { choices } => {
                    slots.push(Slot::Categorical(shape.cat_sizes.len(), choices.len()));
                    shape.cat_sizes.push(choices.len());
                }
                _ => {
                    slots.push(Slot::Numeric(shape.cells.len()));
                    shape.cells.push(cell(p));
                }
            }
        }
        let n_startup = opts
            .n_startup
            .unwrap_or_else(|| (2 * params.len() as u32).max(10));
        TpeSampler {
            params,
            slots,
            shape,
            direction: spec.objective.direction,
            seed,
            n_startup,
            opts,
        }
    }

    /// Trial `number` of the initial design.
    fn design(&self, number: u32) -> Params {
        let u = sobol_point(
            u64::from(number),
            self.params.len(),
            mix(self.seed, DESIGN_SALT),
        );
        self.params
            .iter()
            .zip(u)
            .map(|((name, p), u)| (name.clone(), space::from_unit(p, u)))
            .collect()
    }

    /// A trial as a point of the cube, or None when its parameters do not
    /// fit the space (a study file edited since, a missing key).
    fn point(&self, params: &Params) -> Option<Point> {
        let mut x = vec![0.0; self.shape.cells.len()];
        let mut c = vec![0; self.shape.cat_sizes.len()];
        for ((name, spec), slot) in self.params.iter().zip(&self.slots) {
            let u = space::to_unit(spec, params.get(name)?)?;
            match *slot {
                Slot::Numeric(i) => x[i] = u,
                Slot::Categorical(i, k) => {
                    c[i] = ((u * k as f64) as usize).min(k.saturating_sub(1));
                }
            }
        }
        Some(Point { x, c })
    }

    /// The trials before `number` that inform the model, best first.
    fn observations(&self, number: u32, history: &[TrialView]) -> Vec<Observation> {
        let mut obs: Vec<Observation> = history
            .iter()
            .filter(|t| t.number < number)
            .filter_map(|t| {
                let value = t.value.filter(|v| v.is_finite());
                let tier = match (t.state, value) {
                    (TrialState::Completed, Some(_)) => Tier::Completed,
                    (TrialState::Stopped | TrialState::Cancelled, Some(_)) => Tier::Partial,
                    (TrialState::Stopped | TrialState::Cancelled, None) => return None,
                    (
                        TrialState::Completed
                        | TrialState::Failed
                        | TrialState::Running
                        | TrialState::Waiting
                        | TrialState::Paused,
                        _,
                    ) => Tier::Worst,
                };
                let key = match (tier, self.direction, value) {
                    (Tier::Worst, _, _) | (_, _, None) => 0.0,
                    (_, Direction::Minimize, Some(v)) => v,
                    (_, Direction::Maximize, Some(v)) => -v,
                };
                Some(Observation {
                    point: self.point(&t.params)?,
                    tier,
                    pending: matches!(
                        t.state,
                        TrialState::Running | TrialState::Waiting | TrialState::Paused
                    ),
                    key,
                    number: t.number,
                })
            })
            .collect();
        obs.sort_by(|a, b| {
            a.tier
                .cmp(&b.tier)
                .then(a.key.total_cmp(&b.key))
                .then(a.number.cmp(&b.number))
        });
        obs
    }

    fn to_params(&self, p: &Point) -> Params {
        self.params
            .iter()
            .zip(&self.slots)
            .map(|((name, spec), slot)| {
                let u = match *slot {
                    Slot::Numeric(i) => p.x[i],
                    Slot::Categorical(i, k) => (p.c[i] as f64 + 0.5) / k as f64,
                };
                (name.clone(), space::from_unit(spec, u))
            })
            .collect()
    }
}

/// The width in the unit interval of one grid cell of a numeric parameter:
/// 1/K for K evenly spaced values, the widest (the lowest value's) on a log
/// scale, 0 for a continuous parameter.
fn cell(spec: &ParamSpec) -> f64 {
    match spec {
        ParamSpec::Float { step: None, .. } | ParamSpec::Float { log: true, .. } => 0.0,
        ParamSpec::Float {
            low,
            high,
            step: Some(step),
            ..
        } => 1.0 / (((high - low) / step + 1e-9).floor() + 1.0),
        ParamSpec::Int {
            low,
            high,
            log: true,
            ..
        } => {
            let (a, b) = ((*low as f64 - 0.5).max(0.5).ln(), (*high as f64 + 0.5).ln());
            ((*low as f64 + 0.5).ln() - a) / (b - a)
        }
        ParamSpec::Int {
            low, high, step, ..
        } => 1.0 / ((high - low) / (*step).max(1) + 1) as f64,
        ParamSpec::Categorical { .. } => 0.0,
    }
}

/// γ: the size of the good set among `n` ranked trials.
pub fn n_good(n: usize) -> usize {
    n.div_ceil(10).min(MAX_GOOD)
}

impl Sampler for TpeSampler {
    fn propose(&mut self, number: u32, history: &[TrialView]) -> Option<Params> {
        if number < self.n_startup || self.params.is_empty() {
            return Some(self.design(number));
        }
        let obs = self.observations(number, history);
        let valued = obs.iter().filter(|o| o.tier != Tier::Worst).count();
        if valued == 0 {
            return Some(self.design(number));
        }
        // The good set holds only trials with a value.
        let split = n_good(obs.len()).clamp(1, valued);
        let (good, bad) = obs.split_at(split);
        let l = Parzen::fit(good, obs.len(), &self.shape);
        let g = Parzen::fit(bad, obs.len(), &self.shape);
        let radius: Vec<f64> = l
            .sigma
            .iter()
            .map(|s| s * self.opts.penalty_radius)
            .collect();
        let pending: Vec<&Point> = if self.opts.penalty_radius > 0.0 {
            bad.iter().filter(|o| o.pending).map(|o| &o.point).collect()
        } else {
            Vec::new()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(mix(mix(self.seed, PROPOSE_SALT), number.into()));
        let mut best: Option<(f64, Point)> = None;
        for _ in 0..self.opts.n_candidates.max(1) {
            let p = l.sample(&mut rng, self.opts.sample_bandwidth_factor);
            let mut score = l.log_pdf(&p) - g.log_pdf(&p);
            for q in &pending {
                score += penalty(&p, q, &radius);
            }
            if best.as_ref().is_none_or(|(s, _)| score > *s) {
                best = Some((score, p));
            }
        }
        best.map(|(_, p)| self.to_params(&p))
    }
}

/// ln(1 − s), s the similarity of `p` to the pending point `q`: a Gaussian
/// of per-dimension radius `radius` over the numeric coordinates, 0 unless
/// every choice is the same. −∞ for a duplicate.
fn penalty(p: &Point, q: &Point, radius: &[f64]) -> f64 {
    if p.c != q.c {
        return 0.0;
    }
    let d2: f64 =
        p.x.iter()
            .zip(&q.x)
            .zip(radius)
            .map(|((a, b), r)| ((a - b) / r).powi(2))
            .sum();
    (-(-0.5 * d2).exp()).ln_1p()
}

/// A configuration in the unit cube: numeric coordinates and choice indices.
#[derive(Debug, Clone)]
struct Point {
    x: Vec<f64>,
    c: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tier {
    Completed,
    /// Stopped or cancelled, with a partial value.
    Partial,
    /// Failed, or still running (the constant liar).
    Worst,
}

struct Observation {
    point: Point,
    tier: Tier,
    /// Still being evaluated.
    pending: bool,
    /// The value, lower is better (0 for `Tier::Worst`, which ranks last).
    key: f64,
    number: u32,
}

/// ln √(2π).
const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// A mixture of product kernels, one per observation, and a flat prior.
struct Parzen {
    n: usize,
    dn: usize,
    /// Kernel centres, n × dn.
    mu: Vec<f64>,
    /// Bandwidth per numeric dimension.
    sigma: Vec<f64>,
    /// Per kernel and dimension (n × dn): ln of the truncated Gaussian's
    /// density at its centre, −ln(σ √(2π) Z), Z its mass inside [0, 1].
    log_norm: Vec<f64>,
    /// Choice indices, n × dc.
    cats: Vec<usize>,
    cat_sizes: Vec<usize>,
    /// Aitchison–Aitken λ per categorical dimension, and the ln of the mass
    /// on the kernel's own choice and on each other one.
    lambda: Vec<f64>,
    log_hit: Vec<f64>,
    log_miss: Vec<f64>,
    /// ln of one kernel's weight, and of the prior's.
    log_w: f64,
    log_w_prior: f64,
    /// ln of the prior's density: Σ −ln K over categorical dimensions.
    log_prior: f64,
}

/// Standard normal CDF.
fn phi(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

impl Parzen {
    /// The estimator of one set; `total` is the number of trials in both
    /// sets (the bandwidth floor's N).
    fn fit(obs: &[Observation], total: usize, shape: &Shape) -> Parzen {
        let n = obs.len();
        let dn = shape.cells.len();
        let dc = shape.cat_sizes.len();
        let scott = (n.max(1) as f64).powf(-1.0 / (shape.dims as f64 + 4.0));
        let floor = (total as f64 + 1.0).powf(-FLOOR_EXPONENT);
        let mut mu = Vec::with_capacity(n * dn);
        let mut cats = Vec::with_capacity(n * dc);
        for o in obs {
            mu.extend_from_slice(&o.point.x);
            cats.extend_from_slice(&o.point.c);
        }
        let sigma: Vec<f64> = (0..dn)
            .map(|d| {
                let spread = if n < 2 {
                    1.0 / 12f64.sqrt()
                } else {
                    let mean = (0..n).map(|i| mu[i * dn + d]).sum::<f64>() / n as f64;
                    let ss: f64 = (0..n).map(|i| (mu[i * dn + d] - mean).powi(2)).sum();
                    (ss / (n - 1) as f64).sqrt()
                };
                (spread * scott).clamp(floor.max(shape.cells[d]), 1.0)
            })
            .collect();
        let log_norm = (0..n * dn)
            .map(|k| {
                let (m, s) = (mu[k], sigma[k % dn]);
                let z = (phi((1.0 - m) / s) - phi(-m / s)).max(f64::MIN_POSITIVE);
                -(s.ln() + LN_SQRT_2PI + z.ln())
            })
            .collect();
        let lambda: Vec<f64> = shape
            .cat_sizes
            .iter()
            .map(|&k| {
                if k > 1 {
                    (CATEGORICAL_SCALE * scott).min(1.0)
                } else {
                    0.0
                }
            })
            .collect();
        let (log_hit, log_miss) = shape
            .cat_sizes
            .iter()
            .zip(&lambda)
            .map(|(&k, &l)| {
                let k = k.max(1) as f64;
                ((1.0 - l + l / k).ln(), (l / k).ln())
            })
            .unzip();
        let total_w = n as f64 + PRIOR_WEIGHT;
        Parzen {
            n,
            dn,
            mu,
            sigma,
            log_norm,
            cats,
            cat_sizes: shape.cat_sizes.clone(),
            lambda,
            log_hit,
            log_miss,
            log_w: -total_w.ln(),
            log_w_prior: (PRIOR_WEIGHT / total_w).ln(),
            log_prior: -shape
                .cat_sizes
                .iter()
                .map(|&k| (k.max(1) as f64).ln())
                .sum::<f64>(),
        }
    }

    /// ln of the mixture's density at `p`.
    fn log_pdf(&self, p: &Point) -> f64 {
        // Streaming log-sum-exp: `m` the largest term so far, `s` the sum of
        // exp(term − m).
        let (mut m, mut s) = (self.log_w_prior + self.log_prior, 1.0);
        let (dn, dc) = (self.dn, self.cat_sizes.len());
        for i in 0..self.n {
            let mut t = self.log_w;
            let mu = &self.mu[i * dn..(i + 1) * dn];
            let ln = &self.log_norm[i * dn..(i + 1) * dn];
            for (((x, mu), ln), sigma) in p.x.iter().zip(mu).zip(ln).zip(&self.sigma) {
                let z = (x - mu) / sigma;
                t += ln - 0.5 * z * z;
            }
            let cats = &self.cats[i * dc..(i + 1) * dc];
            for (((c, own), hit), miss) in
                p.c.iter().zip(cats).zip(&self.log_hit).zip(&self.log_miss)
            {
                t += if c == own { hit } else { miss };
            }
            if t > m {
                s = s * (m - t).exp() + 1.0;
                m = t;
            } else {
                s += (t - m).exp();
            }
        }
        m + s.ln()
    }

    /// A draw from the mixture, its bandwidths and λ `widen` times the
    /// fitted ones, capped at 1 (`widen` = 1: the mixture itself).
    fn sample(&self, rng: &mut ChaCha8Rng, widen: f64) -> Point {
        let pick = rng.r#gen::<f64>() * (self.n as f64 + PRIOR_WEIGHT);
        let i = pick as usize;
        if i >= self.n {
            return Point {
                x: (0..self.dn).map(|_| rng.r#gen::<f64>()).collect(),
                c: self
                    .cat_sizes
                    .iter()
                    .map(|&k| rng.gen_range(0..k.max(1)))
                    .collect(),
            };
        }
        let (dn, dc) = (self.dn, self.cat_sizes.len());
        let x = (0..dn)
            .map(|d| truncated_normal(rng, self.mu[i * dn + d], (self.sigma[d] * widen).min(1.0)))
            .collect();
        let c = (0..dc)
            .map(|d| {
                if rng.r#gen::<f64>() < (self.lambda[d] * widen).min(1.0) {
                    rng.gen_range(0..self.cat_sizes[d].max(1))
                } else {
                    self.cats[i * dc + d]
                }
            })
            .collect();
        Point { x, c }
    }
}

/// A draw from N(mu, sigma²) truncated to [0, 1], by rejection: with mu in
/// [0, 1] and sigma ≤ 1 at least a third of the mass is inside, so 64 tries
/// all failing has probability below 1e-11; then the clamped draw is used.
fn truncated_normal(rng: &mut ChaCha8Rng, mu: f64, sigma: f64) -> f64 {
    let mut x = mu;
    for _ in 0..64 {
        // Box–Muller; 1 − u keeps the logarithm's argument in (0, 1].
        let (u, v) = (1.0 - rng.r#gen::<f64>(), rng.r#gen::<f64>());
        let z = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
        x = mu + sigma * z;
        if (0.0..=1.0).contains(&x) {
            return x;
        }
    }
    x.clamp(0.0, 1.0)
}
