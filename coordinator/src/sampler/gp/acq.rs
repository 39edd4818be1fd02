//! Log expected improvement and its maximisation.
//!
//! For minimisation with incumbent `best`, posterior mean mu and standard
//! deviation s at a point, z = (best - mu) / s and EI = s h(z) with
//! h(z) = phi(z) + z Phi(z). log EI = ln s + ln h(z), evaluated so that it
//! stays finite and accurate where h underflows (z far below 0):
//!
//! * z >= -1: h directly (h(-1) ~ 0.083, no cancellation).
//! * -25 < z < -1: with x = -z and the Mills ratio m = Phi(z)/phi(z) =
//!   sqrt(pi/2) erfcx(x/sqrt2), h = phi(z) (1 - x m), so
//!   ln h = -x^2/2 - ln(2 pi)/2 + ln(1 - x m).
//! * z <= -25: 1 - x m by its asymptotic series
//!   sum_{k>=1} (-1)^(k+1) (2k-1)!! / x^(2k), accurate to rounding there.
//!
//! d ln h / dz = Phi(z)/h(z) = m / (1 - x m) (or Phi/h directly).
//!
//! erfcx is computed here from its power series (small arguments) and the
//! Laplace continued fraction (large ones).

use super::Encoding;
use super::lbfgs::{self, Options};
use super::posterior::Posterior;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

const FRAC_1_SQRT_PI: f64 = 0.564_189_583_547_756_3;
const SQRT_PI_OVER_2: f64 = 1.253_314_137_315_500_3;
const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;
/// No proposal within this many length scales (scaled distance) of a
/// pending trial, where the kernel's correlation exceeds 0.99: the believer's
/// fantasies shrink the variance there, but once the model is confident
/// everywhere the expected improvement can still peak a hair's breadth from
/// a running trial, and two nearly identical trials in parallel waste a
/// worker. Ignored when no candidate satisfies it.
const PENDING_RADIUS: f64 = 0.1;
/// Variances below this (standardised units) count as this.
const VAR_MIN: f64 = 1e-12;
/// Below -ASYMPTOTIC, ln h uses the asymptotic series.
const ASYMPTOTIC: f64 = 25.0;

/// exp(x^2) erfc(x) for x >= 0.
pub(super) fn erfcx(x: f64) -> f64 {
    if x < 2.0 {
        // erfc = 1 - erf, erf(x) = 2/sqrt(pi) e^(-x^2) sum 2^n x^(2n+1) / (2n+1)!!
        // (all terms positive), so erfcx = e^(x^2) - 2/sqrt(pi) sum(...).
        let x2 = x * x;
        let mut term = x;
        let mut sum = x;
        let mut n = 0.0;
        while term > 1e-17 * sum {
            n += 1.0;
            term *= 2.0 * x2 / (2.0 * n + 1.0);
            sum += term;
        }
        x2.exp() - 2.0 * FRAC_1_SQRT_PI * sum
    } else {
        // erfc(x) = e^(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))),
        // evaluated from the tail; it converges quickly for x >= 2.
        let depth = (10.0 + 600.0 / (x * x)) as usize;
        let mut t = x;
        for k in (1..=depth).rev() {
            t = x + (k as f64 / 2.0) / t;
        }
        FRAC_1_SQRT_PI / t
    }
}

/// erfc(x) for any x.
pub(super) fn erfc(x: f64) -> f64 {
    if x >= 0.0 {
        (-x * x).exp() * erfcx(x)
    } else {
        2.0 - (-x * x).exp() * erfcx(-x)
    }
}

/// (ln h(z), Phi(z)/h(z)) where h(z) = phi(z) + z Phi(z).
pub(super) fn log_h(z: f64) -> (f64, f64) {
    if z >= -1.0 {
        let cdf = 0.5 * erfc(-z * std::f64::consts::FRAC_1_SQRT_2);
        let pdf = (-0.5 * z * z - LN_SQRT_2PI).exp();
        let h = pdf + z * cdf;
        return (h.ln(), cdf / h);
    }
    let x = -z;
    // s = 1 - x m, m the Mills ratio Phi(z)/phi(z).
    let (s, m) = if x < ASYMPTOTIC {
        let m = SQRT_PI_OVER_2 * erfcx(x * std::f64::consts::FRAC_1_SQRT_2);
        (1.0 - x * m, m)
    } else {
        let ix2 = 1.0 / (x * x);
        let mut term = ix2;
        let mut s = 0.0;
        let mut k = 1.0;
        let mut sign = 1.0;
        while term > 1e-18 * ix2 && k < 30.0 {
            s += sign * term;
            term *= (2.0 * k + 1.0) * ix2;
            sign = -sign;
            k += 1.0;
        }
        (s, (1.0 - s) / x)
    };
    (-0.5 * x * x - LN_SQRT_2PI + s.ln(), m / s)
}

/// log EI at a point with posterior mean `mu` and variance `var`.
pub(super) fn log_ei(mu: f64, var: f64, best: f64) -> f64 {
    let sd = var.max(VAR_MIN).sqrt();
    sd.ln() + log_h((best - mu) / sd).0
}

/// log EI and its gradient from the posterior's value and gradients.
fn log_ei_grad(mu: f64, var: f64, dmu: &[f64], dvar: &[f64], best: f64, out: &mut [f64]) -> f64 {
    let clamped = var <= VAR_MIN;
    let sd = var.max(VAR_MIN).sqrt();
    let z = (best - mu) / sd;
    let (lh, ratio) = log_h(z);
    for j in 0..out.len() {
        let dsd = if clamped { 0.0 } else { dvar[j] / (2.0 * sd) };
        let dz = (-dmu[j] - z * dsd) / sd;
        out[j] = dsd / sd + ratio * dz;
    }
    sd.ln() + lh
}

/// How much search one proposal gets: candidates in the sweep, how many of
/// the best are refined, and the objective evaluations each refinement may
/// use. Fewer as the data grow, since each prediction costs O(n^2).
#[derive(Debug, Clone, Copy)]
pub(super) struct Budget {
    pub sweep: usize,
    pub starts: usize,
    pub evals: usize,
}

pub(super) fn budget(n: usize) -> Budget {
    if n <= 300 {
        Budget {
            sweep: 2048,
            starts: 5,
            evals: 60,
        }
    } else {
        let scale = 300.0 / n as f64;
        Budget {
            sweep: ((2048.0 * scale) as usize).max(512),
            starts: 3,
            evals: ((60.0 * scale) as usize).max(15),
        }
    }
}

/// A uniformly random valid point: continuous dims uniform, one choice per
/// categorical parameter.
fn random_point(enc: &Encoding, rng: &mut ChaCha8Rng, out: &mut [f64]) {
    out.iter_mut().for_each(|v| *v = 0.0);
    for &d in &enc.continuous {
        out[d] = rng.r#gen();
    }
    for &(first, len) in &enc.cats {
        out[first + rng.gen_range(0..len)] = 1.0;
    }
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.r#gen::<f64>().max(1e-300);
    let u2: f64 = rng.r#gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A perturbation of `anchor`: Gaussian steps of scale `scale` on the
/// continuous dims (each dim moved with probability min(1, 4/#dims)), and
/// each categorical parameter redrawn with probability 0.2.
fn perturb(enc: &Encoding, anchor: &[f64], scale: f64, rng: &mut ChaCha8Rng, out: &mut [f64]) {
    out.copy_from_slice(anchor);
    let p = (4.0 / enc.continuous.len().max(1) as f64).min(1.0);
    let mut moved = false;
    for &d in &enc.continuous {
        if rng.r#gen::<f64>() < p {
            out[d] = (anchor[d] + scale * normal(rng)).clamp(0.0, 1.0);
            moved = true;
        }
    }
    if !moved && let Some(&d) = enc.continuous.first() {
        out[d] = (anchor[d] + scale * normal(rng)).clamp(0.0, 1.0);
    }
    for &(first, len) in &enc.cats {
        if rng.r#gen::<f64>() < 0.2 {
            out[first..first + len].iter_mut().for_each(|v| *v = 0.0);
            out[first + rng.gen_range(0..len)] = 1.0;
        }
    }
}

/// Refines `start` over its continuous dims (categorical dims fixed) by
/// maximising log EI with box-constrained L-BFGS. Returns (point, log EI).
fn refine(post: &Posterior, enc: &Encoding, start: &[f64], evals: usize) -> (Vec<f64>, f64) {
    let dims = post.dims;
    let cont = &enc.continuous;
    let mut scratch = post.scratch();
    let mut full = start.to_vec();
    let mut dmu = vec![0.0; dims];
    let mut dvar = vec![0.0; dims];
    let mut dlei = vec![0.0; dims];
    let v0: Vec<f64> = cont.iter().map(|&d| start[d]).collect();
    let lo = vec![0.0; cont.len()];
    let hi = vec![1.0; cont.len()];
    let opt = Options {
        max_iter: evals,
        max_evals: evals,
        memory: 6,
        pgtol: 1e-7,
        ftol: 1e-10,
        first_step: 0.05,
    };
    let m = lbfgs::minimize(
        |v, g| {
            for (k, &d) in cont.iter().enumerate() {
                full[d] = v[k];
            }
            let (mu, var) = post.predict_grad(&full, &mut scratch, &mut dmu, &mut dvar);
            let l = log_ei_grad(mu, var, &dmu, &dvar, post.best, &mut dlei);
            for (k, &d) in cont.iter().enumerate() {
                g[k] = -dlei[d];
            }
            -l
        },
        &v0,
        &lo,
        &hi,
        &opt,
    );
    let mut out = start.to_vec();
    for (k, &d) in cont.iter().enumerate() {
        out[d] = m.x[k];
    }
    (out, -m.f)
}

/// Points in the encoded space ranked by log EI, best first: a sweep of
/// random points and perturbations of `anchors` (the best observed points,
/// best first), L-BFGS refinement of the best few, and each categorical
/// parameter's choices tried in turn at the refined winner. The runners-up
/// (the best sweep points) follow the winner, so the caller can skip a
/// point whose configuration, once rounded onto the space, was already
/// tried.
pub(super) fn maximize(
    post: &Posterior,
    enc: &Encoding,
    anchors: &[&[f64]],
    budget: Budget,
    rng: &mut ChaCha8Rng,
) -> Vec<(f64, Vec<f64>)> {
    let dims = post.dims;
    let m = budget.sweep.max(1);
    let n_local = if anchors.is_empty() { 0 } else { m / 2 };
    let mut pts = vec![0.0; m * dims];
    const SCALES: [f64; 4] = [0.01, 0.04, 0.12, 0.3];
    for (i, row) in pts.chunks_mut(dims).enumerate() {
        if i < n_local {
            // Half around the best point, half shared by the best five.
            let k = if i % 2 == 0 {
                0
            } else {
                (i / 2) % anchors.len().min(5)
            };
            let scale = SCALES[rng.gen_range(0..SCALES.len())];
            perturb(enc, anchors[k], scale, rng, row);
        } else {
            random_point(enc, rng, row);
        }
        enc.snap(row);
    }
    let preds = post.predict_batch(&pts);
    let mut scored: Vec<(f64, usize)> = preds
        .iter()
        .enumerate()
        .map(|(i, &(mu, var))| (log_ei(mu, var, post.best), i))
        .filter(|(v, _)| !v.is_nan())
        .collect();
    let apart = |x: &[f64]| !post.near_pending(x, PENDING_RADIUS);
    let spread = scored
        .iter()
        .any(|&(_, i)| apart(&pts[i * dims..(i + 1) * dims]));
    if spread {
        scored.retain(|&(_, i)| apart(&pts[i * dims..(i + 1) * dims]));
    }
    let allowed = |x: &[f64]| !spread || apart(x);
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut ranked: Vec<(f64, Vec<f64>)> = Vec::new();
    for &(v, i) in scored.iter().take(budget.starts.max(1)) {
        let start = &pts[i * dims..(i + 1) * dims];
        if !enc.continuous.is_empty() {
            let (mut x, _) = refine(post, enc, start, budget.evals);
            // Refined as continuous; judged where it rounds to.
            enc.snap(&mut x);
            let (mu, var) = post.predict_batch(&x)[0];
            let lv = log_ei(mu, var, post.best);
            if lv >= v && allowed(&x) {
                ranked.push((lv, x));
            }
        }
    }
    // Categorical parameters: every choice of each, the others held, at the
    // best point so far.
    let winner = ranked
        .iter()
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(v, x)| (*v, x.clone()))
        .or_else(|| {
            scored
                .first()
                .map(|&(v, i)| (v, pts[i * dims..(i + 1) * dims].to_vec()))
        });
    if let Some((mut v, mut x)) = winner {
        for &(first, len) in &enc.cats {
            let mut trial = x.clone();
            let mut options = Vec::with_capacity(len * dims);
            for c in 0..len {
                trial[first..first + len].iter_mut().for_each(|t| *t = 0.0);
                trial[first + c] = 1.0;
                options.extend_from_slice(&trial);
            }
            for (c, &(mu, var)) in post.predict_batch(&options).iter().enumerate() {
                let lv = log_ei(mu, var, post.best);
                if lv > v && allowed(&options[c * dims..(c + 1) * dims]) {
                    v = lv;
                    x = options[c * dims..(c + 1) * dims].to_vec();
                }
            }
        }
        ranked.push((v, x));
    }
    ranked.extend(
        scored
            .iter()
            .map(|&(v, i)| (v, pts[i * dims..(i + 1) * dims].to_vec())),
    );
    if ranked.is_empty() {
        let mut p = vec![0.0; dims];
        random_point(enc, rng, &mut p);
        ranked.push((f64::NEG_INFINITY, p));
    }
    // Stable: among equals, refined points before sweep points.
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranked
}
