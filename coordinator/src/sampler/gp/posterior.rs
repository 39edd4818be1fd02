//! The GP posterior over real observations and pending trials' fantasies.
//!
//! Pending trials (running, waiting, paused) are "kriging believer"
//! fantasies: each is added as an observation equal to the posterior mean
//! at its point given everything before it, without refitting the
//! hyperparameters, and believed exactly (noise at the floor, not the
//! fitted noise). With the real observations ordered first, the Cholesky
//! factor L of the whole kernel matrix does not depend on the values, and
//! in the whitened coordinates z = L^-1 y a believer observation is exactly
//! z_i = 0 (its value is the conditional mean of its row given the rows
//! above). So all fantasies cost one factorisation of the enlarged matrix:
//! z = [L_rr^-1 y_real, 0 ...], alpha = L^-T z. The mean function is
//! unchanged by believers; the variance shrinks around pending points, which
//! is what spreads parallel proposals apart.

use super::kernel::{Hyper, Layout, NOISE_FLOOR, cholesky_with_jitter, fill_kernel};
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor::cholesky_in_place_scratch;
use faer::linalg::triangular_solve::{
    solve_lower_triangular_in_place, solve_upper_triangular_in_place,
};
use faer::reborrow::{Reborrow, ReborrowMut};
use faer::{Mat, Par};

/// The noise variance of a fantasy, relative to the signal variance: the
/// believer takes the posterior mean as the latent function's value there,
/// not as one more noisy measurement (which would leave the variance at the
/// noise level and let the next proposal land on the same point).
const FANTASY_NOISE: f64 = NOISE_FLOOR;

/// Columns per batch of candidate predictions.
const CHUNK: usize = 256;

pub(super) struct Posterior {
    pub dims: usize,
    /// Rows: real observations, then pending trials.
    x: Vec<f64>,
    n: usize,
    /// Real observations (the first rows).
    nr: usize,
    pub hyp: Hyper,
    l: Mat<f64>,
    alpha: Vec<f64>,
    /// The incumbent: the lowest posterior mean at an observation or a
    /// pending trial.
    pub best: f64,
}

/// Scratch space for single-point predictions with gradients.
pub(super) struct PointScratch {
    k: Mat<f64>,
    w: Mat<f64>,
    g: Vec<f64>,
}

impl Posterior {
    /// The posterior given standardised real observations (`x_real` rows,
    /// `y`) and pending points `x_pending`, under `theta`. None when the
    /// kernel matrix cannot be factorised even with jitter.
    pub fn new(
        layout: &Layout,
        theta: &[f64],
        x_real: &[f64],
        y: &[f64],
        x_pending: &[f64],
    ) -> Option<Posterior> {
        let dims = layout.dims;
        let hyp = Hyper::from_theta(theta, layout);
        let nr = y.len();
        let mut x = Vec::with_capacity(x_real.len() + x_pending.len());
        x.extend_from_slice(x_real);
        x.extend_from_slice(x_pending);
        let n = x.len() / dims.max(1);
        // Real rows carry the fitted noise; fantasy rows only the floor, so
        // the latent variance at a pending point collapses.
        let fill = |mut k: faer::MatMut<'_, f64>, jitter: f64| {
            fill_kernel(k.rb_mut(), &x, dims, &hyp, hyp.sn2 + jitter);
            for i in nr..n {
                k[(i, i)] = hyp.sf2 + FANTASY_NOISE * hyp.sf2 + jitter;
            }
        };
        let mut l = Mat::zeros(n, n);
        fill(l.as_mut(), 0.0);
        let mut buf = MemBuffer::new(cholesky_in_place_scratch::<f64>(
            n,
            Par::Seq,
            Default::default(),
        ));
        let jitter = cholesky_with_jitter(
            l.as_mut(),
            MemStack::new(&mut buf),
            NOISE_FLOOR * hyp.sf2,
            fill,
        )?;
        let noise = |i: usize| {
            if i < nr {
                hyp.sn2 + jitter
            } else {
                FANTASY_NOISE * hyp.sf2 + jitter
            }
        };
        let mut z = Mat::zeros(n, 1);
        for i in 0..nr {
            z[(i, 0)] = y[i];
        }
        solve_lower_triangular_in_place(
            l.as_ref().submatrix(0, 0, nr, nr),
            z.as_mut().submatrix_mut(0, 0, nr, 1),
            Par::Seq,
        );
        // Fantasy rows have z = 0, so their values need only the real z.
        let alpha_z: Vec<f64> = (0..nr).map(|i| z[(i, 0)]).collect();
        solve_upper_triangular_in_place(l.as_ref().transpose(), z.as_mut(), Par::Seq);
        let alpha: Vec<f64> = (0..n).map(|i| z[(i, 0)]).collect();
        if alpha.iter().any(|a| !a.is_finite()) {
            return None;
        }
        // Every row's value, fantasies included: y = L z. The mean at a
        // training row is (K_f alpha)_i = y_i - noise_i alpha_i. The incumbent
        // counts the fantasies too, as observations they stand for, so a
        // pending point that looks like the new best also raises the bar
        // for its neighbours.
        let best = (0..n)
            .map(|i| {
                let yi = if i < nr {
                    y[i]
                } else {
                    (0..nr).map(|k| l[(i, k)] * alpha_z[k]).sum()
                };
                yi - noise(i) * alpha[i]
            })
            .fold(f64::INFINITY, f64::min);
        Some(Posterior {
            dims,
            x,
            n,
            nr,
            hyp,
            l,
            alpha,
            best,
        })
    }

    pub fn scratch(&self) -> PointScratch {
        PointScratch {
            k: Mat::zeros(self.n, 1),
            w: Mat::zeros(self.n, 1),
            g: vec![0.0; self.n],
        }
    }

    /// Whether `p` lies within `r` length scales of a pending trial.
    pub fn near_pending(&self, p: &[f64], r: f64) -> bool {
        (self.nr..self.n).any(|i| self.hyp.r2(p, self.row(i)) < r * r)
    }

    fn row(&self, i: usize) -> &[f64] {
        &self.x[i * self.dims..(i + 1) * self.dims]
    }

    /// Mean and variance (of the latent function) at each row of `pts`
    /// (row-major, `dims` wide), batched: K_* as a matrix, one triangular
    /// solve per chunk.
    pub fn predict_batch(&self, pts: &[f64]) -> Vec<(f64, f64)> {
        let d = self.dims;
        let m = pts.len() / d.max(1);
        let mut out = Vec::with_capacity(m);
        let mut kc = Mat::<f64>::zeros(self.n, CHUNK.min(m.max(1)));
        let mut start = 0;
        while start < m {
            let c = CHUNK.min(m - start);
            let mut kv = kc.as_mut().submatrix_mut(0, 0, self.n, c);
            for j in 0..c {
                let p = &pts[(start + j) * d..(start + j + 1) * d];
                for i in 0..self.n {
                    kv[(i, j)] = self.hyp.k(self.hyp.r2(p, self.row(i)));
                }
            }
            let mut mus = vec![0.0; c];
            for (j, mu) in mus.iter_mut().enumerate() {
                let col = kv.rb().col(j);
                *mu = (0..self.n).map(|i| col[i] * self.alpha[i]).sum();
            }
            solve_lower_triangular_in_place(self.l.as_ref(), kv.rb_mut(), Par::Seq);
            for (j, mu) in mus.into_iter().enumerate() {
                let col = kv.rb().col(j);
                let q: f64 = (0..self.n).map(|i| col[i] * col[i]).sum();
                out.push((mu, (self.hyp.sf2 - q).max(0.0)));
            }
            start += c;
        }
        out
    }

    /// Mean and variance at `p`, with their gradients w.r.t. p written into
    /// `dmu` and `dvar`.
    pub fn predict_grad(
        &self,
        p: &[f64],
        s: &mut PointScratch,
        dmu: &mut [f64],
        dvar: &mut [f64],
    ) -> (f64, f64) {
        let d = self.dims;
        let mut mu = 0.0;
        for i in 0..self.n {
            let (k, g) = self.hyp.k_and_g(self.hyp.r2(p, self.row(i)));
            s.k[(i, 0)] = k;
            s.g[i] = g;
            mu += k * self.alpha[i];
        }
        for i in 0..self.n {
            s.w[(i, 0)] = s.k[(i, 0)];
        }
        solve_lower_triangular_in_place(self.l.as_ref(), s.w.as_mut(), Par::Seq);
        let q: f64 = (0..self.n).map(|i| s.w[(i, 0)] * s.w[(i, 0)]).sum();
        solve_upper_triangular_in_place(self.l.as_ref().transpose(), s.w.as_mut(), Par::Seq);
        // dk_i/dp_j = -g_i (p_j - x_ij) / l_j^2; dmu = sum alpha_i dk_i;
        // dvar = -2 sum w_i dk_i with w = K^-1 k.
        dmu.iter_mut().for_each(|v| *v = 0.0);
        dvar.iter_mut().for_each(|v| *v = 0.0);
        for i in 0..self.n {
            let xi = self.row(i);
            let ca = -s.g[i] * self.alpha[i];
            let cw = 2.0 * s.g[i] * s.w[(i, 0)];
            for j in 0..d {
                let t = (p[j] - xi[j]) * self.hyp.inv_l2[j];
                dmu[j] += ca * t;
                dvar[j] += cw * t;
            }
        }
        (mu, (self.hyp.sf2 - q).max(0.0))
    }
}
