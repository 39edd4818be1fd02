//! Hyperband's bracket arithmetic over integer resources (Li et al. 2018).
//!
//! The paper counts resources from the top (`r_i = R·η^{i-s}`), which needs
//! `R / r` to be a power of η. Budgets here are integers chosen by the user,
//! so the rungs are counted from the bottom instead: `r, rη, …, rη^{s_max-1}`
//! and then `R` itself, which keeps every bracket ending at the full budget
//! and keeps the number of rungs (and brackets) at `s_max + 1`, as in the
//! paper. When `R = r·η^{s_max}` the two ladders are the same.

use hpo_proto::study::levels;

/// One rung of a bracket: how many trials train up to `resource`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rung {
    pub n: u32,
    pub resource: u32,
}

/// One Hyperband bracket, its rungs from the smallest budget to `R`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BracketPlan {
    pub rungs: Vec<Rung>,
}

impl BracketPlan {
    /// How many configurations the bracket starts (`n` of its first rung).
    pub fn size(&self) -> u32 {
        self.rungs.first().map_or(0, |r| r.n)
    }

    /// The resource levels of the bracket, smallest first.
    pub fn milestones(&self) -> Vec<u32> {
        self.rungs.iter().map(|r| r.resource).collect()
    }
}

/// The rung milestones of the most aggressive bracket:
/// `[r, rη, …, rη^{s_max-1}, R]` with `s_max = levels(r, R, η)`, so
/// `s_max + 1` entries, strictly increasing, the last one `R`. When
/// `r·η^{s_max} < R` the top rung is `R` rather than `r·η^{s_max}` (for
/// r = 1, R = 52, η = 3: `[1, 3, 9, 52]`). `r >= R` gives `[R]`.
pub fn milestones(min_resource: u32, max_resource: u32, eta: u32) -> Vec<u32> {
    let r = min_resource.max(1);
    let eta = u64::from(eta.max(2));
    if r >= max_resource {
        return vec![max_resource];
    }
    let s_max = levels(r, max_resource, eta as u32);
    let mut out = Vec::with_capacity(s_max as usize + 1);
    let mut m = u64::from(r);
    for _ in 0..s_max {
        // m <= r·η^{s_max-1} < R, so it fits in u32.
        out.push(m as u32);
        m *= eta;
    }
    out.push(max_resource);
    out
}

/// Hyperband's brackets, index `b = 0` the most aggressive (`s = s_max`):
/// bracket `b` starts `n = ceil((s_max+1)/(s+1) · η^s)` configurations with
/// `s = s_max - b`, runs on `milestones[b..]`, and each rung keeps
/// `floor(n_i / η)` of its trials for the next.
pub fn hyperband_brackets(min_resource: u32, max_resource: u32, eta: u32) -> Vec<BracketPlan> {
    let ms = milestones(min_resource, max_resource, eta);
    let eta = u64::from(eta.max(2));
    let s_max = ms.len() as u64 - 1;
    (0..ms.len())
        .map(|b| {
            let s = s_max - b as u64;
            let pow = eta.saturating_pow(s as u32);
            let mut n = (s_max + 1).saturating_mul(pow).div_ceil(s + 1);
            let rungs = ms[b..]
                .iter()
                .map(|&resource| {
                    let rung = Rung {
                        n: n.min(u64::from(u32::MAX)) as u32,
                        resource,
                    };
                    n /= eta;
                    rung
                })
                .collect();
            BracketPlan { rungs }
        })
        .collect()
}
