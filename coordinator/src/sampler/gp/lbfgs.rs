//! A small limited-memory BFGS minimiser over a box: the search direction
//! comes from the usual two-loop recursion restricted to the variables that
//! are not held at a bound, and the step is a backtracking (Armijo) search
//! along the projected path `clamp(x + t d)`. Used for the GP's
//! hyperparameters (a box in log space) and for refining the acquisition
//! (the unit cube). Deterministic: no randomness, no threads.

use std::collections::VecDeque;

#[derive(Debug, Clone, Copy)]
pub(super) struct Options {
    /// Most iterations (accepted steps).
    pub max_iter: usize,
    /// Most objective evaluations, line searches included.
    pub max_evals: usize,
    /// Correction pairs kept.
    pub memory: usize,
    /// Stop when the projected gradient's largest component is below this.
    pub pgtol: f64,
    /// Stop when a step improves f by less than this, relative to max(|f|, 1).
    pub ftol: f64,
    /// The largest coordinate change of the first step (before any
    /// curvature is known).
    pub first_step: f64,
}

#[derive(Debug, Clone)]
pub(super) struct Minimum {
    pub x: Vec<f64>,
    pub f: f64,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Minimises `f` over the box [lo, hi] from `x0`. `f(x, grad)` returns the
/// value and writes the gradient; a non-finite value marks a point to avoid
/// (the line search backs off from it). Returns the best point evaluated.
pub(super) fn minimize<F>(mut f: F, x0: &[f64], lo: &[f64], hi: &[f64], opt: &Options) -> Minimum
where
    F: FnMut(&[f64], &mut [f64]) -> f64,
{
    let n = x0.len();
    let project = |v: &mut [f64]| {
        for i in 0..n {
            v[i] = if v[i].is_nan() {
                lo[i]
            } else {
                v[i].clamp(lo[i], hi[i])
            };
        }
    };
    let mut x = x0.to_vec();
    project(&mut x);
    let mut g = vec![0.0; n];
    let mut fx = f(&x, &mut g);
    let mut evals = 1usize;
    if !fx.is_finite() || g.iter().any(|v| !v.is_finite()) {
        return Minimum {
            x,
            f: if fx.is_nan() { f64::INFINITY } else { fx },
        };
    }
    let mut pairs: VecDeque<(Vec<f64>, Vec<f64>, f64)> = VecDeque::with_capacity(opt.memory);
    let mut free = vec![true; n];
    let mut d = vec![0.0; n];
    let mut xt = vec![0.0; n];
    let mut gt = vec![0.0; n];
    let mut s = vec![0.0; n];
    let mut alphas = vec![0.0; opt.memory];
    for _ in 0..opt.max_iter {
        // Variables at a bound with the gradient pushing outwards stay put.
        let mut pg_max: f64 = 0.0;
        for i in 0..n {
            free[i] = !((x[i] <= lo[i] && g[i] > 0.0) || (x[i] >= hi[i] && g[i] < 0.0));
            if free[i] {
                pg_max = pg_max.max(g[i].abs());
            }
        }
        if pg_max <= opt.pgtol {
            break;
        }
        // Two-loop recursion on the free variables.
        for i in 0..n {
            d[i] = if free[i] { g[i] } else { 0.0 };
        }
        for (k, (sk, yk, rho)) in pairs.iter().enumerate().rev() {
            let a = rho * dot(sk, &d);
            alphas[k] = a;
            for i in 0..n {
                d[i] -= a * yk[i];
            }
        }
        if let Some((sk, yk, _)) = pairs.back() {
            let gamma = dot(sk, yk) / dot(yk, yk);
            for v in d.iter_mut() {
                *v *= gamma;
            }
        }
        for (k, (sk, yk, rho)) in pairs.iter().enumerate() {
            let b = rho * dot(yk, &d);
            for i in 0..n {
                d[i] += sk[i] * (alphas[k] - b);
            }
        }
        for i in 0..n {
            d[i] = if free[i] { -d[i] } else { 0.0 };
        }
        let mut gd = dot(&g, &d);
        if gd >= 0.0 || !gd.is_finite() {
            // Not a descent direction: restart from steepest descent.
            pairs.clear();
            for i in 0..n {
                d[i] = if free[i] { -g[i] } else { 0.0 };
            }
            gd = dot(&g, &d);
            if gd >= 0.0 || gd.is_nan() {
                break;
            }
        }
        let mut t = if pairs.is_empty() {
            let dmax = d.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            opt.first_step / dmax.max(1e-300)
        } else {
            1.0
        };
        let mut accepted = None;
        for _ in 0..30 {
            if evals >= opt.max_evals {
                break;
            }
            for i in 0..n {
                xt[i] = x[i] + t * d[i];
            }
            project(&mut xt);
            let mut moved = false;
            for i in 0..n {
                s[i] = xt[i] - x[i];
                moved |= s[i] != 0.0;
            }
            if !moved {
                break;
            }
            let ft = f(&xt, &mut gt);
            evals += 1;
            let gs = dot(&g, &s);
            if ft.is_finite() && gt.iter().all(|v| v.is_finite()) && ft <= fx + 1e-4 * gs {
                accepted = Some(ft);
                break;
            }
            // Backtrack: a quadratic fit along the step where it is sensible.
            t *= if ft.is_finite() {
                let denom = 2.0 * (ft - fx - gs);
                if denom > 0.0 {
                    (-gs / denom).clamp(0.1, 0.5)
                } else {
                    0.5
                }
            } else {
                0.25
            };
        }
        let Some(ft) = accepted else {
            break;
        };
        let mut yv = vec![0.0; n];
        for i in 0..n {
            yv[i] = gt[i] - g[i];
        }
        let sy = dot(&s, &yv);
        if sy > 1e-12 * dot(&yv, &yv) && sy > 0.0 {
            if pairs.len() == opt.memory {
                pairs.pop_front();
            }
            pairs.push_back((s.clone(), yv, 1.0 / sy));
        }
        let improvement = fx - ft;
        std::mem::swap(&mut x, &mut xt);
        std::mem::swap(&mut g, &mut gt);
        fx = ft;
        if improvement <= opt.ftol * fx.abs().max(1.0) || evals >= opt.max_evals {
            break;
        }
    }
    Minimum { x, f: fx }
}
