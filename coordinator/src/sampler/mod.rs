//! The `Sampler` seam. Samplers run only in the coordinator, inside the one
//! task that owns a study, so two workers can never be handed the same grid
//! point and a seeded study proposes the same sequence wherever it runs.

mod bohb;
mod gp;
mod grid;
mod random;
mod sobol;
mod tpe;

pub use bohb::{BohbSampler, BohbView, bohb_view};
pub use gp::GpSampler;
pub use grid::GridSampler;
pub use random::RandomSampler;
pub use sobol::SobolSampler;
pub use tpe::TpeSampler;

use hpo_proto::study::{Algorithm, StudySpec};
use hpo_proto::{Params, TrialState};

/// A finished or running trial as samplers see it.
#[derive(Debug, Clone)]
pub struct TrialView {
    pub number: u32,
    pub params: Params,
    pub state: TrialState,
    pub value: Option<f64>,
}

pub trait Sampler: Send {
    /// The configuration for trial `number`, given every trial so far
    /// (running ones included, so a model-based sampler can avoid piling onto
    /// configurations still being evaluated). None when the space is spent.
    fn propose(&mut self, number: u32, history: &[TrialView]) -> Option<Params>;
}

/// The sampler a study file asks for, after its enqueued configurations.
pub fn for_study(spec: &StudySpec, seed: u64) -> Box<dyn Sampler> {
    let sampler = by_algorithm(spec, seed);
    if spec.search.enqueue.is_empty() {
        sampler
    } else {
        Box::new(Enqueued {
            first: spec.search.enqueue.clone(),
            then: sampler,
        })
    }
}

/// User-given configurations for the first trials, then the sampler (which
/// sees their results in the history like any other trial's).
struct Enqueued {
    first: Vec<Params>,
    then: Box<dyn Sampler>,
}

impl Sampler for Enqueued {
    fn propose(&mut self, number: u32, history: &[TrialView]) -> Option<Params> {
        match self.first.get(number as usize) {
            Some(p) => Some(p.clone()),
            None => self.then.propose(number, history),
        }
    }
}

fn by_algorithm(spec: &StudySpec, seed: u64) -> Box<dyn Sampler> {
    match spec.search.algorithm {
        Algorithm::Grid => Box::new(GridSampler::new(spec)),
        Algorithm::Random => Box::new(RandomSampler::new(spec, seed)),
        Algorithm::Sobol => Box::new(SobolSampler::new(spec, seed)),
        Algorithm::Tpe => Box::new(TpeSampler::new(spec, seed)),
        Algorithm::Gp => Box::new(GpSampler::new(spec, seed)),
        Algorithm::Bohb => Box::new(BohbSampler::new(spec, seed)),
    }
}

/// A 64-bit mix of two values (splitmix64's finaliser): per-trial seeds that
/// differ in every bit for neighbouring trial numbers.
pub fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod tests_tpe;
