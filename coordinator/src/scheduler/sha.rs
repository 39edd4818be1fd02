//! Synchronous successive halving (Jamieson and Talwalkar 2016) and
//! synchronous Hyperband (Li et al. 2018), one implementation: successive
//! halving is Hyperband restricted to its most aggressive bracket.
//!
//! The study runs *bracket instances* one after another. A trial's `bracket`
//! field holds the global instance counter `k = 0, 1, 2, …`, not the
//! Hyperband bracket: the instance runs Hyperband bracket `k % B` (`B = 1`
//! for successive halving, `brackets` or `s_max + 1` for Hyperband). This
//! tells repetitions of the same bracket apart with nothing but the trials'
//! own records. Instances never overlap, so the trials of the current one
//! (the highest k) are the last trials of the history.
//!
//! Within an instance: rung 0 is filled with `n_0` new trials (fewer when the
//! study may not add trials any more), each trained to the first milestone
//! and paused. A rung is complete when each of its trials has paused there or
//! ended; then its best `floor(n_i / η)` (at least one, so a cut-short
//! instance still trains a trial to the full budget) are promoted, one per
//! `next` call, the rest discarded. While a rung waits for its stragglers
//! free slots get `Wait`: the idling that ASHA removes.

use super::brackets::{BracketPlan, hyperband_brackets};
use super::rank::{Standing, active, at_budget, partition_best, rank_cmp, standing};
use super::{History, Next, SchedTrial, Scheduler};
use hpo_proto::study::ScheduleSpec;
use hpo_proto::{Decision, Direction, TrialState};

#[derive(Debug, Clone)]
pub struct SyncHyperband {
    name: &'static str,
    /// The brackets cycled through; instance k runs `plans[k % len]`.
    plans: Vec<BracketPlan>,
    eta: usize,
    max_resource: u32,
    /// Reused for a rung's standings; holds nothing between calls.
    scratch: Vec<Standing>,
}

/// Where the current instance stands.
enum Walk {
    /// A rung waits for trials that run or wait for a slot.
    Busy,
    Promote {
        number: u32,
        rung: u32,
        budget: u32,
    },
    /// Its last rung is done (or nobody is left to promote).
    Finished,
}

impl SyncHyperband {
    /// Successive halving: every instance is Hyperband's bracket 0, which
    /// starts `η^{s_max}` trials.
    pub fn successive_halving(spec: &ScheduleSpec) -> Self {
        let mut plans = Self::all_plans(spec);
        plans.truncate(1);
        Self::with_plans("successive_halving", plans, spec)
    }

    /// Hyperband: instances cycle through brackets `0..B`, `B = brackets`
    /// (default `s_max + 1`), most aggressive first.
    pub fn hyperband(spec: &ScheduleSpec) -> Self {
        let mut plans = Self::all_plans(spec);
        let b = spec.brackets.unwrap_or(u32::MAX).max(1) as usize;
        plans.truncate(b);
        Self::with_plans("hyperband", plans, spec)
    }

    fn all_plans(spec: &ScheduleSpec) -> Vec<BracketPlan> {
        hyperband_brackets(spec.min_resource, spec.max_resource, spec.reduction_factor)
    }

    fn with_plans(name: &'static str, plans: Vec<BracketPlan>, spec: &ScheduleSpec) -> Self {
        SyncHyperband {
            name,
            plans,
            eta: spec.reduction_factor.max(2) as usize,
            max_resource: spec.max_resource,
            scratch: Vec::new(),
        }
    }

    /// The plan of instance `k`.
    pub fn plan(&self, k: u32) -> &BracketPlan {
        &self.plans[k as usize % self.plans.len()]
    }

    fn first_budget(&self, k: u32) -> u32 {
        self.plan(k)
            .rungs
            .first()
            .map_or(self.max_resource, |r| r.resource)
    }

    /// One pass over the current instance (the history's suffix with the
    /// last trial's `bracket`; instances are created in order, so a binary
    /// search finds where it starts).
    fn survey<'a>(&self, trials: &'a [SchedTrial]) -> Option<Survey<'a>> {
        let k = trials.last()?.bracket;
        let start = trials.partition_point(|t| t.bracket < k);
        let members = &trials[start..];
        let rungs = self.plan(k).rungs.len().max(1);
        let mut s = Survey {
            k,
            members,
            busy: vec![false; rungs],
            paused: vec![0; rungs],
            reached: vec![0; rungs + 1],
        };
        for t in members {
            let r = (t.rung as usize).min(rungs - 1);
            s.reached[r] += 1;
            s.busy[r] |= active(t);
            s.paused[r] += usize::from(t.state == TrialState::Paused);
        }
        for i in (0..rungs).rev() {
            s.reached[i] += s.reached[i + 1];
        }
        Some(s)
    }

    /// True while rung 0 of the instance may still get new trials: fewer
    /// than `n_0` were created and none has been promoted yet (a promotion
    /// closes rung 0, even if the study could add trials again later).
    fn rung0_open(&self, s: &Survey<'_>) -> bool {
        (s.members.len() as u64) < u64::from(self.plan(s.k).size()) && s.reached[1] == 0
    }

    /// Walks the instance's rungs from the bottom to the first that is not
    /// done; collects into `discards` the paused trials of complete rungs
    /// that are not among their rung's best.
    fn walk(
        &mut self,
        trials: &[SchedTrial],
        direction: Direction,
        s: &Survey<'_>,
        mut discards: Option<&mut Vec<u32>>,
    ) -> Walk {
        let plan = &self.plans[s.k as usize % self.plans.len()];
        let rungs = plan.rungs.len();
        let Some(last) = rungs.checked_sub(1) else {
            return Walk::Finished;
        };
        let paused_at = |n: u32, i: usize| {
            trials
                .get(n as usize)
                .is_some_and(|t| t.state == TrialState::Paused && t.rung as usize == i)
        };
        for i in 0..rungs {
            if s.reached[i] == 0 {
                return Walk::Finished;
            }
            if s.busy[i] {
                return Walk::Busy;
            }
            if i == last {
                return Walk::Finished;
            }
            let keep = (s.reached[i] / self.eta).max(1);
            if s.reached[i + 1] >= keep {
                // Every promotion of this rung happened: who is still paused
                // here lost.
                if let Some(d) = discards.as_deref_mut()
                    && s.paused[i] > 0
                {
                    d.extend(
                        s.members
                            .iter()
                            .filter(|t| paused_at(t.number, i))
                            .map(|t| t.number),
                    );
                }
                continue;
            }
            let milestone = plan.rungs[i].resource;
            let ranked = &mut self.scratch;
            ranked.clear();
            ranked.extend(
                s.members
                    .iter()
                    .filter(|t| t.rung as usize >= i)
                    .map(|t| standing(t, i as u32, milestone)),
            );
            partition_best(direction, ranked, keep);
            let keep = keep.min(ranked.len());
            if let Some(d) = discards.as_deref_mut() {
                d.extend(
                    ranked[keep..]
                        .iter()
                        .map(|s| s.1)
                        .filter(|&n| paused_at(n, i)),
                );
            }
            let best = ranked[..keep]
                .iter()
                .filter(|s| paused_at(s.1, i))
                .min_by(|a, b| rank_cmp(direction, a, b));
            if let Some(&(_, number)) = best {
                return Walk::Promote {
                    number,
                    rung: i as u32 + 1,
                    budget: plan.rungs[i + 1].resource,
                };
            }
            // Best trials that ended some other way (stopped by the study)
            // are not replaced: the next rung is just smaller.
        }
        Walk::Finished
    }
}

/// The current instance, counted in one pass.
struct Survey<'a> {
    /// Its counter (the `bracket` of its trials).
    k: u32,
    members: &'a [SchedTrial],
    /// `busy[i]`: some trial at rung i runs or waits for a slot.
    busy: Vec<bool>,
    /// `paused[i]`: trials paused at rung i.
    paused: Vec<usize>,
    /// `reached[i]`: trials promoted to rung i or beyond (all for i = 0).
    reached: Vec<usize>,
}

impl Scheduler for SyncHyperband {
    fn name(&self) -> &'static str {
        self.name
    }

    fn next(&mut self, history: &History<'_>, can_start: bool) -> Next {
        let Some(survey) = self.survey(history.trials) else {
            return if can_start {
                Next::New {
                    bracket: 0,
                    budget: self.first_budget(0),
                }
            } else {
                Next::Done
            };
        };
        let k = survey.k;
        if can_start && self.rung0_open(&survey) {
            return Next::New {
                bracket: k,
                budget: self.first_budget(k),
            };
        }
        match self.walk(history.trials, history.direction, &survey, None) {
            Walk::Busy => Next::Wait,
            Walk::Promote {
                number,
                rung,
                budget,
            } => Next::Promote {
                number,
                rung,
                budget,
            },
            Walk::Finished if can_start => {
                let k = k.saturating_add(1);
                Next::New {
                    bracket: k,
                    budget: self.first_budget(k),
                }
            }
            Walk::Finished => Next::Done,
        }
    }

    fn on_report(
        &mut self,
        history: &History<'_>,
        number: u32,
        step: u32,
        _value: f64,
    ) -> Decision {
        at_budget(history, number, step, self.max_resource)
    }

    /// The losers of the current instance's complete rungs. Earlier
    /// instances finished with every paused trial promoted or discarded.
    fn discard(&mut self, history: &History<'_>) -> Vec<u32> {
        let mut out = Vec::new();
        // While rung 0 may still grow nobody has lost yet.
        if let Some(survey) = self.survey(history.trials).filter(|s| !self.rung0_open(s)) {
            self.walk(history.trials, history.direction, &survey, Some(&mut out));
        }
        out.sort_unstable();
        out
    }
}
