//! Random search. Trial n's configuration depends only on the study seed and
//! n, so the same seed gives the same sequence however many workers run it,
//! in whatever order they finish, and across coordinator restarts.

use super::{Sampler, TrialView, mix};
use crate::space;
use hpo_proto::Params;
use hpo_proto::study::{ParamSpec, StudySpec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub struct RandomSampler {
    params: Vec<(String, ParamSpec)>,
    seed: u64,
}

impl RandomSampler {
    pub fn new(spec: &StudySpec, seed: u64) -> Self {
        RandomSampler {
            params: spec
                .params
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            seed,
        }
    }
}

impl Sampler for RandomSampler {
    fn propose(&mut self, number: u32, _history: &[TrialView]) -> Option<Params> {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed, number as u64));
        Some(
            self.params
                .iter()
                .map(|(name, p)| (name.clone(), space::from_unit(p, rng.r#gen::<f64>())))
                .collect(),
        )
    }
}
