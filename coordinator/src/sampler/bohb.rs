//! BOHB (Falkner, Klein and Hutter 2018): Hyperband's budgets, with new
//! configurations from a TPE model instead of at random.
//!
//! The model is fitted on the results at one budget: the largest rung
//! budget at which at least `dims + 2` trials have reported (lower budgets
//! are cheaper but less faithful; the paper's rule). The study task builds
//! that view of the history (`bohb_view`) and this sampler proposes from it;
//! a third of the trials, picked by seed and number, are random anyway, which
//! keeps BOHB's convergence guarantee of random search.

use super::{RandomSampler, Sampler, TpeSampler, TrialView, mix};
use crate::scheduler::{SchedTrial, milestones};
use hpo_proto::study::StudySpec;
use hpo_proto::{Params, TrialState};

/// Share of trials proposed at random (the paper's ρ).
const RANDOM_FRACTION: f64 = 1.0 / 3.0;
const RANDOM_TAG: u64 = 0x424f_4842;

pub struct BohbSampler {
    seed: u64,
    model: TpeSampler,
    random: RandomSampler,
}

impl BohbSampler {
    pub fn new(spec: &StudySpec, seed: u64) -> Self {
        BohbSampler {
            seed,
            model: TpeSampler::new(spec, mix(seed, RANDOM_TAG)),
            random: RandomSampler::new(spec, seed),
        }
    }
}

impl Sampler for BohbSampler {
    fn propose(&mut self, number: u32, history: &[TrialView]) -> Option<Params> {
        let u =
            (mix(mix(self.seed, RANDOM_TAG), u64::from(number)) >> 11) as f64 / (1u64 << 53) as f64;
        if u < RANDOM_FRACTION {
            self.random.propose(number, history)
        } else {
            self.model.propose(number, history)
        }
    }
}

/// The history as BOHB's model sees it: each trial's value is its objective
/// at the chosen budget. Trials still running or waiting stay pending (the
/// model keeps proposals away from them); finished ones without a result at
/// that budget are left out. Returns the budget, or None while no budget
/// has `dims + 2` results (then no trial has a value and TPE keeps to its
/// space-filling start).
pub fn bohb_view(
    spec: &StudySpec,
    history: &[TrialView],
    sched: &[SchedTrial],
) -> (Option<u32>, Vec<TrialView>) {
    let s = &spec.schedule;
    let need = spec.params.len() + 2;
    let budgets = milestones(s.min_resource, s.max_resource, s.reduction_factor);
    let budget = budgets.iter().rev().copied().find(|b| {
        sched
            .iter()
            .filter(|t| t.value_at(*b).is_some_and(f64::is_finite))
            .count()
            >= need
    });
    let view = history
        .iter()
        .zip(sched)
        .map(|(h, t)| {
            let value = budget.and_then(|b| t.value_at(b)).filter(|v| v.is_finite());
            let state = match (value, h.state) {
                (Some(_), _) => TrialState::Completed,
                (None, TrialState::Running | TrialState::Waiting | TrialState::Paused) => h.state,
                (None, _) => TrialState::Cancelled,
            };
            TrialView {
                number: h.number,
                params: h.params.clone(),
                state,
                value,
            }
        })
        .collect();
    (budget, view)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec() -> StudySpec {
        StudySpec::parse(
            r#"
name = "b"
[objective]
metric = "loss"
direction = "minimize"
[search]
algorithm = "bohb"
max_trials = 50
[trainer]
kind = "simulated"
epochs = 9
[schedule]
algorithm = "hyperband"
min_resource = 1
reduction_factor = 3
[params]
x = { type = "float", low = 0.0, high = 1.0 }
"#,
            "b.toml",
        )
        .unwrap()
    }

    fn trial(n: u32, state: TrialState, values: &[(u32, f64)]) -> (TrialView, SchedTrial) {
        let params: Params = [(
            "x".to_string(),
            hpo_proto::ParamValue::Float(n as f64 / 10.0),
        )]
        .into_iter()
        .collect();
        (
            TrialView {
                number: n,
                params,
                state,
                value: values.last().map(|v| v.1),
            },
            SchedTrial {
                number: n,
                state,
                bracket: 0,
                rung: 0,
                budget: values.last().map_or(1, |v| v.0),
                values: values.to_vec(),
            },
        )
    }

    #[test]
    fn the_model_uses_the_largest_budget_with_enough_results() {
        let spec = spec();
        // dims + 2 = 3 results needed. Budget 1 has 5, budget 3 has 3,
        // budget 9 has 1: the model fits on budget 3.
        let rows = [
            trial(0, TrialState::Completed, &[(1, 0.9), (3, 0.5), (9, 0.2)]),
            trial(1, TrialState::Stopped, &[(1, 0.8), (3, 0.6)]),
            trial(2, TrialState::Paused, &[(1, 0.7), (3, 0.4)]),
            trial(3, TrialState::Stopped, &[(1, 0.95)]),
            trial(4, TrialState::Running, &[(1, 0.85)]),
        ];
        let (h, s): (Vec<_>, Vec<_>) = rows.into_iter().unzip();
        let (budget, view) = bohb_view(&spec, &h, &s);
        assert_eq!(budget, Some(3));
        let v: Vec<(TrialState, Option<f64>)> = view.iter().map(|t| (t.state, t.value)).collect();
        assert_eq!(
            v,
            vec![
                (TrialState::Completed, Some(0.5)),
                (TrialState::Completed, Some(0.6)),
                (TrialState::Completed, Some(0.4)),
                (TrialState::Cancelled, None),
                (TrialState::Running, None),
            ]
        );
        // With too few results anywhere there is no budget and no value.
        let (budget, view) = bohb_view(&spec, &h[..2], &s[..2]);
        assert_eq!(budget, None);
        assert!(view.iter().all(|t| t.value.is_none()));
    }

    #[test]
    fn about_a_third_of_the_proposals_are_random_and_all_are_reproducible() {
        let spec = spec();
        let mut a = BohbSampler::new(&spec, 5);
        let mut b = BohbSampler::new(&spec, 5);
        let mut random = RandomSampler::new(&spec, 5);
        let mut same_as_random = 0;
        for n in 0..300 {
            let p = a.propose(n, &[]).unwrap();
            assert_eq!(Some(&p), b.propose(n, &[]).as_ref());
            if Some(p) == random.propose(n, &[]) {
                same_as_random += 1;
            }
        }
        assert!((70..130).contains(&same_as_random), "{same_as_random}");
    }
}
