//! What the rung-based schedulers share: a trial's standing at a rung, one
//! total order over standings, and the answer to a report at a budget.

use super::{History, SchedTrial};
use hpo_proto::{Decision, Direction, TrialState};
use std::cmp::Ordering;

/// A trial's standing at a rung: its value at the rung's milestone, and
/// `None` (worst) where the value cannot count: the trial failed while at
/// that rung, never reached it, or reported NaN.
pub(crate) type Standing = (Option<f64>, u32);

/// The standing of `t` at its rung index `rung`, whose resource is `milestone`.
pub(crate) fn standing(t: &SchedTrial, rung: u32, milestone: u32) -> Standing {
    let failed_here = t.state == TrialState::Failed && t.rung == rung;
    let value = if failed_here {
        None
    } else {
        t.value_at(milestone).filter(|v| !v.is_nan())
    };
    (value, t.number)
}

/// Best first; equal values by lower trial number, so the order is total
/// and a ranking never depends on the order trials were collected in.
pub(crate) fn rank_cmp(direction: Direction, a: &Standing, b: &Standing) -> Ordering {
    let by_value = match (a.0, b.0) {
        (Some(x), Some(y)) if direction.better(x, y) => Ordering::Less,
        (Some(x), Some(y)) if direction.better(y, x) => Ordering::Greater,
        (Some(_), Some(_)) | (None, None) => Ordering::Equal,
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
    };
    by_value.then(a.1.cmp(&b.1))
}

/// Reorders `all` so that its first `k` entries are the best `k`, in no
/// particular order, nor the rest. O(len).
pub(crate) fn partition_best(direction: Direction, all: &mut [Standing], k: usize) {
    let k = k.min(all.len());
    if k > 0 && k < all.len() {
        all.select_nth_unstable_by(k - 1, |a, b| rank_cmp(direction, a, b));
    }
}

/// The answer of a scheduler that pauses trials at their budget: Pause at
/// the budget when it is below the full budget `max_resource` (the trainer
/// stops there anyway), Continue otherwise, and Continue at `max_resource`
/// so the trial completes.
pub(crate) fn at_budget(
    history: &History<'_>,
    number: u32,
    step: u32,
    max_resource: u32,
) -> Decision {
    match history.trials.get(number as usize) {
        Some(t) if step >= t.budget && t.budget < max_resource && step < max_resource => {
            Decision::Pause
        }
        _ => Decision::Continue,
    }
}

/// True while a trial holds or waits for a slot.
pub(crate) fn active(t: &SchedTrial) -> bool {
    matches!(t.state, TrialState::Running | TrialState::Waiting)
}

/// A standing as a plain ordered key (smaller is better), so sorted vectors
/// and sets can hold it: the same order as `rank_cmp` for one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct RankKey {
    worst: bool,
    value: i64,
    pub(crate) number: u32,
}

impl RankKey {
    pub(crate) fn new(direction: Direction, s: Standing) -> Self {
        match s.0 {
            Some(v) => {
                let v = match direction {
                    Direction::Maximize => -v,
                    Direction::Minimize => v,
                };
                // -0.0 and 0.0 are equal values: one key, ties by number.
                let v = if v == 0.0 { 0.0 } else { v };
                // IEEE-754 bits ordered as integers (no NaN reaches here).
                let bits = v.to_bits() as i64;
                let value = bits ^ ((((bits >> 63) as u64) >> 1) as i64);
                RankKey {
                    worst: false,
                    value,
                    number: s.1,
                }
            }
            None => RankKey {
                worst: true,
                value: 0,
                number: s.1,
            },
        }
    }
}
