//! The Matérn-5/2 kernel with one length scale per group of input
//! dimensions (a numeric parameter is one dimension; a categorical
//! parameter's one-hot dimensions share one), its log marginal likelihood
//! with analytic gradients, and the multi-start hyperparameter fit.
//!
//! Hyperparameters live in log space, `theta = [ln l_1 .. ln l_q, ln sf2,
//! ln sn2]`, inside a box, and the fit maximises the log marginal likelihood
//! plus independent Gaussian log-priors on each component (a MAP estimate).

use super::lbfgs::{self, Options};
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor::{
    LltRegularization, cholesky_in_place, cholesky_in_place_scratch,
};
use faer::linalg::cholesky::llt::inverse::{inverse, inverse_scratch};
use faer::linalg::triangular_solve::{
    solve_lower_triangular_in_place, solve_upper_triangular_in_place,
};
use faer::reborrow::ReborrowMut;
use faer::{Mat, MatMut, MatRef, Par};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub(super) const SQRT5: f64 = 2.236_067_977_499_79;
const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// The noise variance's floor, relative to the standardised observations'
/// variance of 1.
pub(super) const NOISE_FLOOR: f64 = 1e-6;

/// Which length scale each input dimension uses.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub dims: usize,
    pub groups: usize,
    pub group_of_dim: Vec<usize>,
}

impl Layout {
    /// Length of theta.
    pub fn len(&self) -> usize {
        self.groups + 2
    }
    pub fn sf2_index(&self) -> usize {
        self.groups
    }
    pub fn sn2_index(&self) -> usize {
        self.groups + 1
    }
}

/// Hyperparameters in the form the kernel uses.
#[derive(Debug, Clone)]
pub(super) struct Hyper {
    /// 1 / l^2 for each input dimension.
    pub inv_l2: Vec<f64>,
    pub sf2: f64,
    pub sn2: f64,
}

impl Hyper {
    pub fn from_theta(theta: &[f64], layout: &Layout) -> Hyper {
        Hyper {
            inv_l2: layout
                .group_of_dim
                .iter()
                .map(|&g| (-2.0 * theta[g]).exp())
                .collect(),
            sf2: theta[layout.sf2_index()].exp(),
            sn2: theta[layout.sn2_index()].exp(),
        }
    }

    /// Squared scaled distance between two points.
    #[inline]
    pub fn r2(&self, a: &[f64], b: &[f64]) -> f64 {
        let mut r2 = 0.0;
        for ((x, y), w) in a.iter().zip(b).zip(&self.inv_l2) {
            let d = x - y;
            r2 += d * d * w;
        }
        r2
    }

    /// k(r) for the squared scaled distance r2.
    #[inline]
    pub fn k(&self, r2: f64) -> f64 {
        let r = r2.sqrt();
        let s = SQRT5 * r;
        self.sf2 * (1.0 + s + 5.0 / 3.0 * r2) * (-s).exp()
    }

    /// (k(r), g(r)) where g = sf2 * 5/3 * (1 + sqrt5 r) exp(-sqrt5 r), so that
    /// dk/d(ln l_g) = g * S_g / l_g^2 and dk/dx_i = -g * (x_i - x'_i) / l_i^2.
    #[inline]
    pub fn k_and_g(&self, r2: f64) -> (f64, f64) {
        let r = r2.sqrt();
        let s = SQRT5 * r;
        let e = self.sf2 * (-s).exp();
        (e * (1.0 + s + 5.0 / 3.0 * r2), e * 5.0 / 3.0 * (1.0 + s))
    }
}

/// Independent Gaussian priors on theta and its box.
#[derive(Debug, Clone)]
pub(super) struct Prior {
    pub mean: Vec<f64>,
    pub sd: Vec<f64>,
    pub lo: Vec<f64>,
    pub hi: Vec<f64>,
}

impl Prior {
    /// Length scales (unit-cube inputs): log-normal around 0.3 * sqrt(q)
    /// (q = number of groups, so wider in more dimensions, where points lie
    /// further apart) with a log-sd of 1, boxed to [0.01, 30]. Signal
    /// variance (standardised observations): log-normal around 1, log-sd 1,
    /// boxed to [0.05, 20]. Noise: log-normal around 1e-3, log-sd 2.5, boxed
    /// to [NOISE_FLOOR, 1].
    pub fn new(layout: &Layout) -> Prior {
        let q = layout.groups;
        let ls = (0.3 * (q.max(1) as f64).sqrt()).ln();
        let mut mean = vec![ls; q];
        let mut sd = vec![1.0; q];
        let mut lo = vec![0.01f64.ln(); q];
        let mut hi = vec![30f64.ln(); q];
        mean.extend([0.0, 1e-3f64.ln()]);
        sd.extend([1.0, 2.5]);
        lo.extend([0.05f64.ln(), NOISE_FLOOR.ln()]);
        hi.extend([20f64.ln(), 0.0]);
        Prior { mean, sd, lo, hi }
    }

    /// The prior mean clamped into the box: the default start.
    pub fn default_theta(&self) -> Vec<f64> {
        self.mean
            .iter()
            .zip(self.lo.iter().zip(&self.hi))
            .map(|(m, (l, h))| m.clamp(*l, *h))
            .collect()
    }

    /// -ln prior (up to a constant), adding its gradient to `grad`.
    fn neg_log(&self, theta: &[f64], grad: Option<&mut [f64]>) -> f64 {
        let mut v = 0.0;
        let mut gr = grad;
        for i in 0..theta.len() {
            let z = (theta[i] - self.mean[i]) / self.sd[i];
            v += 0.5 * z * z;
            if let Some(g) = gr.as_deref_mut() {
                g[i] += z / self.sd[i];
            }
        }
        v
    }
}

/// Reusable buffers for one data size.
pub(super) struct Workspace {
    k: Mat<f64>,
    kinv: Mat<f64>,
    alpha: Mat<f64>,
    buf: MemBuffer,
}

impl Workspace {
    pub fn new(n: usize) -> Workspace {
        let req = cholesky_in_place_scratch::<f64>(n, Par::Seq, Default::default())
            .or(inverse_scratch::<f64>(n, Par::Seq));
        Workspace {
            k: Mat::zeros(n, n),
            kinv: Mat::zeros(n, n),
            alpha: Mat::zeros(n, 1),
            buf: MemBuffer::new(req),
        }
    }
}

/// Fills the lower triangle of `k` (n x n) with the noise-free kernel of
/// the rows of `x` (row-major, `dims` wide) plus `diag` on the diagonal.
/// Column by column, so the writes are contiguous.
pub(super) fn fill_kernel(mut k: MatMut<'_, f64>, x: &[f64], dims: usize, hyp: &Hyper, diag: f64) {
    let n = k.nrows();
    for b in 0..n {
        let xb = &x[b * dims..(b + 1) * dims];
        let mut col = k.rb_mut().col_mut(b);
        col[b] = hyp.sf2 + diag;
        for a in b + 1..n {
            col[a] = hyp.k(hyp.r2(&x[a * dims..(a + 1) * dims], xb));
        }
    }
}

/// Cholesky in place (lower triangle), retrying with growing jitter on the
/// diagonal when the matrix is numerically indefinite. `refill` rebuilds the
/// matrix with an extra diagonal term. Returns the jitter used, or None.
pub(super) fn cholesky_with_jitter(
    mut k: MatMut<'_, f64>,
    stack: &mut MemStack,
    base: f64,
    mut refill: impl FnMut(MatMut<'_, f64>, f64),
) -> Option<f64> {
    let mut jitter = 0.0;
    for attempt in 0..4 {
        if attempt > 0 {
            jitter = base * 10f64.powi(attempt * 2);
            refill(k.rb_mut(), jitter);
        }
        if cholesky_in_place(
            k.rb_mut(),
            LltRegularization::default(),
            Par::Seq,
            stack,
            Default::default(),
        )
        .is_ok()
        {
            return Some(jitter);
        }
    }
    None
}

/// Solves (L L^T) v = b in place.
pub(super) fn cho_solve(l: MatRef<'_, f64>, mut b: MatMut<'_, f64>) {
    solve_lower_triangular_in_place(l, b.rb_mut(), Par::Seq);
    solve_upper_triangular_in_place(l.transpose(), b.rb_mut(), Par::Seq);
}

/// The negative log marginal likelihood of standardised observations `y` at
/// inputs `x` (row-major, `layout.dims` wide), minus the log-prior; fills
/// `grad` (w.r.t. theta) when given. Infinite where the kernel matrix cannot
/// be factorised.
pub(super) fn neg_log_posterior(
    theta: &[f64],
    x: &[f64],
    y: &[f64],
    layout: &Layout,
    prior: &Prior,
    grad: Option<&mut [f64]>,
    ws: &mut Workspace,
) -> f64 {
    let n = y.len();
    let dims = layout.dims;
    let hyp = Hyper::from_theta(theta, layout);
    fill_kernel(ws.k.as_mut(), x, dims, &hyp, hyp.sn2);
    let stack = MemStack::new(&mut ws.buf);
    if cholesky_in_place(
        ws.k.as_mut(),
        LltRegularization::default(),
        Par::Seq,
        stack,
        Default::default(),
    )
    .is_err()
    {
        return f64::INFINITY;
    }
    let l = ws.k.as_ref();
    for (i, &yi) in y.iter().enumerate() {
        ws.alpha[(i, 0)] = yi;
    }
    cho_solve(l, ws.alpha.as_mut());
    let mut fit = 0.0;
    let mut logdet = 0.0;
    for (i, &yi) in y.iter().enumerate() {
        fit += yi * ws.alpha[(i, 0)];
        logdet += l[(i, i)].ln();
    }
    let nll = 0.5 * fit + logdet + 0.5 * n as f64 * LN_2PI;
    let Some(grad) = grad else {
        return nll + prior.neg_log(theta, None);
    };
    // d(-log p)/d theta_j = -1/2 tr((a a^T - K^-1) dK/d theta_j).
    inverse(ws.kinv.as_mut(), l, Par::Seq, MemStack::new(&mut ws.buf));
    grad.iter_mut().for_each(|g| *g = 0.0);
    let q = layout.groups;
    let mut acc_l = vec![0.0; q];
    let mut s_g = vec![0.0; q];
    let mut acc_sf2 = 0.0;
    let mut acc_sn2 = 0.0;
    let alpha = ws.alpha.col(0);
    // Lower triangle, column by column (contiguous in K^-1).
    for b in 0..n {
        let xb = &x[b * dims..(b + 1) * dims];
        let ab = alpha[b];
        let kinv = ws.kinv.col(b);
        for a in b + 1..n {
            let xa = &x[a * dims..(a + 1) * dims];
            s_g.iter_mut().for_each(|v| *v = 0.0);
            let mut r2 = 0.0;
            for d in 0..dims {
                let diff = xa[d] - xb[d];
                let sq = diff * diff;
                s_g[layout.group_of_dim[d]] += sq;
                r2 += sq * hyp.inv_l2[d];
            }
            let (kab, gab) = hyp.k_and_g(r2);
            // Twice: (a, b) and (b, a).
            let w = 2.0 * (alpha[a] * ab - kinv[a]);
            acc_sf2 += w * kab;
            let wg = w * gab;
            for g in 0..q {
                acc_l[g] += wg * s_g[g];
            }
        }
        let w = ab * ab - kinv[b];
        acc_sf2 += w * hyp.sf2;
        acc_sn2 += w * hyp.sn2;
    }
    // inv_l2 per group: read it off any dimension of the group.
    let mut inv_l2_g = vec![0.0; q];
    for d in 0..dims {
        inv_l2_g[layout.group_of_dim[d]] = hyp.inv_l2[d];
    }
    for g in 0..q {
        grad[g] = -0.5 * acc_l[g] * inv_l2_g[g];
    }
    grad[layout.sf2_index()] = -0.5 * acc_sf2;
    grad[layout.sn2_index()] = -0.5 * acc_sn2;
    nll + prior.neg_log(theta, Some(grad))
}

/// Above this many observations the multi-start search runs on an evenly
/// spaced subset, and only its best point is polished on all of them.
pub(super) const PILOT_MAX: usize = 200;

/// Objective evaluations for polishing the pilot's optimum on all the data;
/// fewer as n grows (one evaluation costs about n^3 flops).
fn polish_evals(n: usize) -> usize {
    let per = (n as f64 / 1000.0).powi(3);
    ((6.0 / per.max(1e-9)) as usize).clamp(3, 20)
}

fn optimise(
    start: &[f64],
    x: &[f64],
    y: &[f64],
    layout: &Layout,
    prior: &Prior,
    ws: &mut Workspace,
    max_evals: usize,
) -> lbfgs::Minimum {
    let opt = Options {
        max_iter: 200,
        max_evals,
        memory: 8,
        pgtol: 1e-5,
        ftol: 1e-7,
        first_step: 0.5,
    };
    lbfgs::minimize(
        |t, g| neg_log_posterior(t, x, y, layout, prior, Some(g), ws),
        start,
        &prior.lo,
        &prior.hi,
        &opt,
    )
}

/// Multi-start MAP fit, each start run to convergence with L-BFGS; the best
/// wins. Cold: the prior mean and two draws from the prior (seeded by
/// `seed`). Warm: the earlier fit `warm` and the prior mean. A warm start
/// usually begins near the optimum, so it converges in a few iterations,
/// and the prior mean guards against a warm start stuck in a poor mode of
/// the likelihood that more data has left behind.
fn multi_start(
    x: &[f64],
    y: &[f64],
    layout: &Layout,
    prior: &Prior,
    seed: u64,
    warm: Option<&[f64]>,
) -> lbfgs::Minimum {
    let starts = match warm {
        Some(w) if w.len() == layout.len() => {
            let w: Vec<f64> = w
                .iter()
                .enumerate()
                .map(|(i, v)| v.clamp(prior.lo[i], prior.hi[i]))
                .collect();
            vec![w, prior.default_theta()]
        }
        _ => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut starts = vec![prior.default_theta()];
            for _ in 0..2 {
                let t: Vec<f64> = (0..layout.len())
                    .map(|i| {
                        // A normal draw from two uniforms (Box-Muller).
                        let u1: f64 = rng.r#gen::<f64>().max(1e-300);
                        let u2: f64 = rng.r#gen();
                        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                        (prior.mean[i] + prior.sd[i] * z).clamp(prior.lo[i], prior.hi[i])
                    })
                    .collect();
                starts.push(t);
            }
            starts
        }
    };
    let mut ws = Workspace::new(y.len());
    let mut best: Option<lbfgs::Minimum> = None;
    for s in &starts {
        let m = optimise(s, x, y, layout, prior, &mut ws, 100);
        if best.as_ref().is_none_or(|b| m.f < b.f) {
            best = Some(m);
        }
    }
    best.unwrap_or_else(|| lbfgs::Minimum {
        x: prior.default_theta(),
        f: f64::INFINITY,
    })
}

/// Fits theta to standardised observations `y` at `x`. Up to PILOT_MAX
/// observations: multi-start on all of them. Beyond: multi-start on an
/// evenly spaced subset of PILOT_MAX (cheap), then a few L-BFGS iterations
/// on all observations from the subset's optimum. `warm`: an earlier fit to
/// start from (see `multi_start`).
pub(super) fn fit(
    x: &[f64],
    y: &[f64],
    layout: &Layout,
    seed: u64,
    warm: Option<&[f64]>,
) -> Vec<f64> {
    let prior = Prior::new(layout);
    let n = y.len();
    if n <= PILOT_MAX {
        return multi_start(x, y, layout, &prior, seed, warm).x;
    }
    let dims = layout.dims;
    let idx: Vec<usize> = (0..PILOT_MAX).map(|i| i * n / PILOT_MAX).collect();
    let xs: Vec<f64> = idx
        .iter()
        .flat_map(|&i| x[i * dims..(i + 1) * dims].iter().copied())
        .collect();
    let ys: Vec<f64> = idx.iter().map(|&i| y[i]).collect();
    let pilot = multi_start(&xs, &ys, layout, &prior, seed, warm);
    let mut ws = Workspace::new(n);
    let polished = optimise(&pilot.x, x, y, layout, &prior, &mut ws, polish_evals(n));
    if polished.f.is_finite() {
        polished.x
    } else {
        pilot.x
    }
}
