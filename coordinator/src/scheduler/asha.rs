//! Asynchronous successive halving (Li et al. 2020, "A System for Massively
//! Parallel Hyperparameter Tuning", promotion variant) and asynchronous
//! Hyperband (each Hyperband bracket run as ASHA).
//!
//! A trial trains to its rung's milestone and pauses. A free slot first
//! looks, top rung first, for a paused trial that is among the best
//! `floor(c_i / η)` of the `c_i` trials that reached its rung's milestone and
//! promotes it; only when there is none does it start a new trial. So no slot
//! waits while the study may add trials, and a rung's ranking grows with it:
//! a trial paused today may be promoted later. Nothing is discarded; the
//! study stops the trials still paused when it ends.
//!
//! Asynchronous Hyperband: a trial's `bracket` is its Hyperband bracket `b`
//! (drawn at creation with probability proportional to the bracket's `n`,
//! from the study seed and the trial number), its `rung` an index into
//! `milestones[b..]`, and trials are only compared within their bracket.

use super::brackets::{hyperband_brackets, milestones};
use super::rank::{RankKey, active, at_budget, standing};
use super::{History, Next, SchedTrial, Scheduler};
use crate::sampler::mix;
use hpo_proto::study::ScheduleSpec;
use hpo_proto::{Decision, Direction, TrialState};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;

#[derive(Debug, Clone)]
pub struct Asha {
    name: &'static str,
    /// `ladders[b]`: the milestones of bracket b, the last one `R`.
    ladders: Vec<Vec<u32>>,
    /// `weights[b]`: Hyperband's `n` of bracket b, the odds of a new trial
    /// joining it.
    weights: Vec<u64>,
    eta: usize,
    max_resource: u32,
    seed: u64,
    index: Index,
}

impl Asha {
    /// ASHA on the milestones of Hyperband's most aggressive bracket.
    pub fn new(spec: &ScheduleSpec) -> Self {
        let ladder = milestones(spec.min_resource, spec.max_resource, spec.reduction_factor);
        Self::build("asha", vec![ladder], vec![1], spec, 0)
    }

    /// Hyperband's brackets `0..B` (`B = brackets`, default `s_max + 1`),
    /// each run as ASHA.
    pub fn async_hyperband(spec: &ScheduleSpec, seed: u64) -> Self {
        let mut plans =
            hyperband_brackets(spec.min_resource, spec.max_resource, spec.reduction_factor);
        plans.truncate(spec.brackets.unwrap_or(u32::MAX).max(1) as usize);
        let ladders = plans.iter().map(|p| p.milestones()).collect();
        let weights = plans.iter().map(|p| u64::from(p.size().max(1))).collect();
        Self::build("async_hyperband", ladders, weights, spec, seed)
    }

    fn build(
        name: &'static str,
        ladders: Vec<Vec<u32>>,
        weights: Vec<u64>,
        spec: &ScheduleSpec,
        seed: u64,
    ) -> Self {
        Asha {
            name,
            ladders,
            weights,
            eta: spec.reduction_factor.max(2) as usize,
            max_resource: spec.max_resource,
            seed,
            index: Index::default(),
        }
    }

    /// The bracket of the trial that would be created next: a draw weighted
    /// by bracket size, seeded by the study seed and that trial's number.
    fn draw_bracket(&self, number: usize) -> usize {
        if self.weights.len() <= 1 {
            return 0;
        }
        let total: u64 = self.weights.iter().sum();
        let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed, number as u64));
        let mut x = rng.gen_range(0..total);
        for (b, &w) in self.weights.iter().enumerate() {
            if x < w {
                return b;
            }
            x -= w;
        }
        self.weights.len() - 1
    }

    /// The best promotable trial, top rungs first (by the milestone's index
    /// in the full ladder, brackets in order at equal height), as (bracket,
    /// rung, number).
    fn promotion(&self) -> Option<(usize, usize, u32)> {
        let full = self.ladders.iter().map(Vec::len).max().unwrap_or(0);
        for level in (0..full.saturating_sub(1)).rev() {
            for (b, ladder) in self.ladders.iter().enumerate() {
                // Bracket b's ladder is the full ladder from index
                // full - len on, so its rung i is at level offset + i.
                let Some(i) = level.checked_sub(full - ladder.len()) else {
                    continue;
                };
                let Some(rung) = self.index.rungs.get(b).and_then(|r| r.get(i)) else {
                    continue;
                };
                let keep = rung.members.len() / self.eta;
                // The best paused trial is promotable if any is.
                let Some(best) = rung.paused.first() else {
                    continue;
                };
                if rung.members.binary_search(best).is_ok_and(|p| p < keep) {
                    return Some((b, i, best.number));
                }
            }
        }
        None
    }
}

/// What the index last saw of a trial, enough to tell that it changed.
/// The values of a trial change only while it runs or waits to run (a
/// paused trial runs again only when promoted, which changes its rung), so a
/// trial that is neither, and whose fingerprint is unchanged, needs no look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    state: TrialState,
    bracket: u32,
    rung: u32,
    len: usize,
}

/// The entries a trial holds in the index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Held {
    /// (rung, key) for every rung below the top whose milestone it reached.
    keys: Vec<(u32, RankKey)>,
    /// Its key at its own rung while it is paused there.
    paused: Option<(u32, RankKey)>,
}

#[derive(Debug, Clone, Default)]
struct RungSet {
    /// The trials that reached the rung's milestone, best first.
    members: Vec<RankKey>,
    /// Those of them paused at this rung: the promotion candidates.
    paused: BTreeSet<RankKey>,
}

/// Per bracket and rung, the ranking ASHA promotes from, kept up to date
/// across calls instead of being rebuilt (a rebuild sorts every rung on
/// every call: seconds for a study of 10,000 trials). Each call compares
/// every trial with its fingerprint and re-reads only those that changed or
/// are running, so the index always equals one built from the history alone.
#[derive(Debug, Clone, Default)]
struct Index {
    direction: Option<Direction>,
    seen: Vec<Seen>,
    held: Vec<Held>,
    /// `rungs[b][i]`: rung i of bracket b (the top rung, R, has none).
    rungs: Vec<Vec<RungSet>>,
    /// Trials running or waiting at the last refresh.
    active: usize,
}

impl Index {
    fn refresh(&mut self, ladders: &[Vec<u32>], history: &History<'_>) {
        let trials = history.trials;
        if self.direction != Some(history.direction) || self.seen.len() > trials.len() {
            *self = Index {
                direction: Some(history.direction),
                rungs: ladders
                    .iter()
                    .map(|l| vec![RungSet::default(); l.len().saturating_sub(1)])
                    .collect(),
                ..Index::default()
            };
        }
        self.active = 0;
        for (n, t) in trials.iter().enumerate() {
            let now = Seen {
                state: t.state,
                bracket: t.bracket,
                rung: t.rung,
                len: t.values.len(),
            };
            let is_active = active(t);
            self.active += usize::from(is_active);
            if let Some(before) = self.seen.get(n) {
                let may_have_changed =
                    matches!(before.state, TrialState::Running | TrialState::Waiting);
                if *before == now && !may_have_changed {
                    continue;
                }
                self.seen[n] = now;
            } else {
                self.seen.push(now);
                self.held.push(Held::default());
            }
            let held = Self::entries(ladders, history.direction, t);
            if held != self.held[n] {
                let old = std::mem::replace(&mut self.held[n], held);
                self.apply(t.bracket, &old, false);
                let new = self.held[n].clone();
                self.apply(t.bracket, &new, true);
            }
        }
    }

    fn entries(ladders: &[Vec<u32>], direction: Direction, t: &SchedTrial) -> Held {
        let Some(ladder) = ladders.get(t.bracket as usize) else {
            return Held::default();
        };
        // Rungs the trial may have reached: up to its own (its budget is
        // that rung's milestone), below the top one (nobody leaves R).
        let below_top = ladder.len().saturating_sub(1);
        let upto = below_top.min(t.rung as usize + 1);
        let keys: Vec<(u32, RankKey)> = (0..upto)
            .filter(|&i| t.value_at(ladder[i]).is_some())
            .map(|i| {
                let s = standing(t, i as u32, ladder[i]);
                (i as u32, RankKey::new(direction, s))
            })
            .collect();
        let paused = match t.state {
            TrialState::Paused => keys.iter().find(|(i, _)| *i == t.rung).copied(),
            _ => None,
        };
        Held { keys, paused }
    }

    /// Inserts (or removes) a trial's entries.
    fn apply(&mut self, bracket: u32, held: &Held, insert: bool) {
        let Some(rungs) = self.rungs.get_mut(bracket as usize) else {
            return;
        };
        for &(i, key) in &held.keys {
            let Some(rung) = rungs.get_mut(i as usize) else {
                continue;
            };
            match (rung.members.binary_search(&key), insert) {
                (Err(p), true) => rung.members.insert(p, key),
                (Ok(p), false) => {
                    rung.members.remove(p);
                }
                _ => {}
            }
        }
        if let Some((i, key)) = held.paused
            && let Some(rung) = rungs.get_mut(i as usize)
        {
            if insert {
                rung.paused.insert(key);
            } else {
                rung.paused.remove(&key);
            }
        }
    }
}

impl Scheduler for Asha {
    fn name(&self) -> &'static str {
        self.name
    }

    fn next(&mut self, history: &History<'_>, can_start: bool) -> Next {
        self.index.refresh(&self.ladders, history);
        if let Some((b, i, number)) = self.promotion() {
            return Next::Promote {
                number,
                rung: i as u32 + 1,
                budget: self.ladders[b][i + 1],
            };
        }
        if can_start {
            let b = self.draw_bracket(history.trials.len());
            return Next::New {
                bracket: b as u32,
                budget: self.ladders[b]
                    .first()
                    .copied()
                    .unwrap_or(self.max_resource),
            };
        }
        if self.index.active > 0 {
            Next::Wait
        } else {
            Next::Done
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
}
