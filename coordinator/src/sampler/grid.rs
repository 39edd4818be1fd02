//! Grid search: every combination exactly once, in a fixed order. Trial n gets
//! grid point n, so the order survives a coordinator restart without any
//! sampler state being stored.

use super::{Sampler, TrialView};
use hpo_proto::study::StudySpec;
use hpo_proto::{ParamValue, Params};

pub struct GridSampler {
    axes: Vec<(String, Vec<ParamValue>)>,
    size: u64,
}

impl GridSampler {
    pub fn new(spec: &StudySpec) -> Self {
        let axes: Vec<(String, Vec<ParamValue>)> = spec
            .params
            .iter()
            .map(|(name, p)| (name.clone(), p.grid_values().unwrap_or_default()))
            .collect();
        let size = axes.iter().map(|(_, v)| v.len() as u64).product();
        GridSampler { axes, size }
    }

    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Sampler for GridSampler {
    fn propose(&mut self, number: u32, _history: &[TrialView]) -> Option<Params> {
        let mut rest = number as u64;
        if rest >= self.size {
            return None;
        }
        // Mixed radix, last axis fastest.
        let mut out = Params::new();
        for (name, values) in self.axes.iter().rev() {
            let n = values.len() as u64;
            out.insert(name.clone(), values[(rest % n) as usize].clone());
            rest /= n;
        }
        Some(out)
    }
}
