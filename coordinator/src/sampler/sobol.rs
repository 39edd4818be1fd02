//! Scrambled Sobol search: trial n is point n of an Owen-scrambled Sobol
//! sequence (Sobol 1967; Joe and Kuo's direction numbers; Burley 2020's
//! hash-based Owen scrambling, through the `sobol_burley` crate), mapped onto
//! the space by `space::from_unit`.
//!
//! Quasi-random points fill the unit cube more evenly than random ones: the
//! first 2^k points put exactly one point in each of 2^k equal slices of any
//! one coordinate, and in each 2^a × 2^b box (a + b = k) of the first two.
//! Owen scrambling keeps those properties while making every point uniformly
//! distributed, and the study seed picks the scramble.
//!
//! No point is skipped. The first point of the unscrambled sequence is the
//! origin, a corner of the space, which is why some implementations drop it;
//! after scrambling it is a uniform random point like any other, and dropping
//! it would cost the balance of every power-of-two prefix (Owen, "On dropping
//! the first Sobol' point", 2022). So trial n gets point n.
//!
//! Like random search, trial n's configuration depends only on the seed and
//! n: no state, nothing to rebuild after a restart, any order of calls.

use super::{Sampler, TrialView, mix};
use crate::space;
use hpo_proto::Params;
use hpo_proto::study::{ParamSpec, StudySpec};

/// Points per scrambled sequence: `sobol_burley` indexes 2^16 points. Point
/// `index` beyond that is taken from a fresh, independently scrambled
/// sequence per block of 2^16, so every block is balanced on its own.
const BLOCK_BITS: u32 = 16;
/// Dimensions `sobol_burley` has direction numbers for, in sets of four.
const SETS: u32 = sobol_burley::NUM_DIMENSION_SETS_4D;

/// Point `index` of the `dims`-dimensional Owen-scrambled Sobol sequence
/// that `seed` picks; every coordinate in [0, 1).
///
/// The same (index, dims, seed) always gives the same point, and a design of
/// more dimensions extends one of fewer (coordinate j does not depend on
/// `dims`). Beyond the 256 dimensions with direction numbers, each further
/// group of 256 reuses them under an independent scramble (Burley's
/// "padding"): balanced within the group, randomly paired across groups.
pub fn sobol_point(index: u64, dims: usize, seed: u64) -> Vec<f64> {
    let block = index >> BLOCK_BITS;
    let i = (index & ((1 << BLOCK_BITS) - 1)) as u32;
    let mut point = Vec::with_capacity(dims.next_multiple_of(4));
    let mut set = 0u32;
    while point.len() < dims {
        let pad = set / SETS;
        let s = mix(mix(seed, block), pad as u64);
        let seed32 = (s ^ (s >> 32)) as u32;
        let p = sobol_burley::sample_4d(i, set % SETS, seed32);
        point.extend(p.iter().map(|&x| f64::from(x)));
        set += 1;
    }
    point.truncate(dims);
    point
}

pub struct SobolSampler {
    params: Vec<(String, ParamSpec)>,
    seed: u64,
}

impl SobolSampler {
    pub fn new(spec: &StudySpec, seed: u64) -> Self {
        SobolSampler {
            params: spec
                .params
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            seed,
        }
    }
}

impl Sampler for SobolSampler {
    fn propose(&mut self, number: u32, _history: &[TrialView]) -> Option<Params> {
        let u = sobol_point(u64::from(number), self.params.len(), self.seed);
        Some(
            self.params
                .iter()
                .zip(u)
                .map(|((name, p), u)| (name.clone(), space::from_unit(p, u)))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// How many of `points` fall in each cell of a 2^a × 2^b grid over the
    /// first two coordinates (2^a × 1 when the points are 1-D).
    fn box_counts(points: &[Vec<f64>], a: u32, b: u32) -> Vec<usize> {
        let (na, nb) = (1usize << a, 1usize << b);
        let mut counts = vec![0; na * nb];
        for p in points {
            let i = ((p[0] * na as f64) as usize).min(na - 1);
            let j = match p.get(1) {
                Some(y) => ((y * nb as f64) as usize).min(nb - 1),
                None => 0,
            };
            counts[i * nb + j] += 1;
        }
        counts
    }

    #[test]
    fn every_power_of_two_prefix_is_stratified_in_one_dimension() {
        for seed in [0, 1, 42, u64::MAX] {
            for k in 0..=12 {
                let points: Vec<_> = (0..1u64 << k).map(|i| sobol_point(i, 1, seed)).collect();
                assert!(
                    box_counts(&points, k, 0).iter().all(|&c| c == 1),
                    "seed {seed}, 2^{k} points"
                );
            }
        }
    }

    #[test]
    fn the_first_two_dimensions_form_a_zero_net() {
        // (0, k, 2)-net: every elementary box of volume 2^-k holds one point.
        for seed in [3, 1234] {
            for k in 0..=10 {
                let points: Vec<_> = (0..1u64 << k).map(|i| sobol_point(i, 2, seed)).collect();
                for a in 0..=k {
                    assert!(
                        box_counts(&points, a, k - a).iter().all(|&c| c == 1),
                        "seed {seed}, 2^{k} points, 2^{a} x 2^{} boxes",
                        k - a
                    );
                }
            }
        }
    }

    #[test]
    fn every_dimension_is_stratified_and_blocks_past_two_to_the_sixteen_too() {
        let dims = 300;
        let points: Vec<_> = (0..64).map(|i| sobol_point(i, dims, 7)).collect();
        for d in 0..dims {
            let column: Vec<Vec<f64>> = points.iter().map(|p| vec![p[d]]).collect();
            assert!(box_counts(&column, 6, 0).iter().all(|&c| c == 1), "dim {d}");
        }
        let later: Vec<_> = (0..16u64)
            .map(|i| sobol_point((3 << 16) + i, 1, 7))
            .collect();
        assert!(box_counts(&later, 4, 0).iter().all(|&c| c == 1));
        assert_ne!(later[0], sobol_point(0, 1, 7));
    }

    /// Warnock's formula for the squared L2-star discrepancy.
    fn l2_star_discrepancy_sq(points: &[Vec<f64>]) -> f64 {
        let n = points.len() as f64;
        let d = points[0].len() as i32;
        let single: f64 = points
            .iter()
            .map(|p| p.iter().map(|x| (1.0 - x * x) / 2.0).product::<f64>())
            .sum();
        let pairs: f64 = points
            .iter()
            .flat_map(|p| {
                points.iter().map(move |q| {
                    p.iter()
                        .zip(q)
                        .map(|(x, y)| 1.0 - x.max(*y))
                        .product::<f64>()
                })
            })
            .sum();
        3f64.powi(-d) - 2.0 * single / n + pairs / (n * n)
    }

    #[test]
    fn discrepancy_beats_random_points() {
        let (n, dims, seeds) = (128u64, 4, 16u64);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let (mut sobol, mut random) = (0.0, 0.0);
        for seed in 0..seeds {
            let s: Vec<_> = (0..n).map(|i| sobol_point(i, dims, seed)).collect();
            let r: Vec<Vec<f64>> = (0..n)
                .map(|_| (0..dims).map(|_| rng.r#gen::<f64>()).collect())
                .collect();
            sobol += l2_star_discrepancy_sq(&s);
            random += l2_star_discrepancy_sq(&r);
        }
        assert!(
            sobol * 3.0 < random,
            "mean squared L2* discrepancy: sobol {}, random {}",
            sobol / seeds as f64,
            random / seeds as f64
        );
    }

    #[test]
    fn a_seed_fixes_the_design_and_another_seed_changes_it() {
        let a: Vec<_> = (0..32).map(|i| sobol_point(i, 5, 11)).collect();
        let b: Vec<_> = (0..32).map(|i| sobol_point(i, 5, 11)).collect();
        let c: Vec<_> = (0..32).map(|i| sobol_point(i, 5, 12)).collect();
        assert_eq!(a, b);
        assert!(a.iter().zip(&c).all(|(p, q)| p != q));
        assert!(a.iter().flatten().all(|x| (0.0..1.0).contains(x)));
        // Fewer dimensions are a prefix of more.
        assert_eq!(sobol_point(9, 3, 11)[..], a[9][..3]);
    }

    #[test]
    fn the_sampler_maps_point_n_onto_the_space_in_any_order() {
        let spec = hpo_proto::study::StudySpec::parse(
            r#"
name = "s"
[objective]
metric = "loss"
direction = "minimize"
[search]
algorithm = "sobol"
max_trials = 64
[trainer]
kind = "simulated"
epochs = 1
[params]
lr = { type = "float", low = 1e-5, high = 1e-1, log = true }
width = { type = "int", low = 16, high = 256, step = 16 }
act = ["relu", "tanh", "gelu"]
"#,
            "s.toml",
        )
        .unwrap();
        let mut s = SobolSampler::new(&spec, 5);
        let seq: Vec<Params> = (0..64).map(|n| s.propose(n, &[]).unwrap()).collect();
        for (n, p) in seq.iter().enumerate() {
            for (k, ps) in &spec.params {
                assert!(ps.contains(&p[k]), "trial {n}: {k} = {:?}", p[k]);
            }
        }
        assert_eq!(
            SobolSampler::new(&spec, 5).propose(17, &[]).unwrap(),
            seq[17]
        );
        // 64 points over 3 activations: balanced to within one.
        for act in ["relu", "tanh", "gelu"] {
            let v = hpo_proto::ParamValue::Categorical(act.into());
            let c = seq.iter().filter(|p| p["act"] == v).count();
            assert!((20..=22).contains(&c), "{act}: {c}");
        }
    }
}
