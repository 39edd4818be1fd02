//! The `Scheduler` seam: early stopping and multi-fidelity budgets.
//!
//! The sampler decides *which* configuration a new trial gets; the scheduler
//! decides *how much* resource each trial gets: the budget of a new trial,
//! which paused trial to promote to a larger budget, and whether a report is
//! answered with continue, stop or pause. It runs inside the study's task
//! and sees a read-only `History`; every decision is a function of that
//! history, the study spec and the seed, so a coordinator that restarts and
//! rebuilds the history from storage makes the same decisions again.

mod asha;
pub mod brackets;
mod median;
mod none;
mod rank;
mod sha;
#[cfg(test)]
mod tests;

pub use asha::Asha;
pub use brackets::{BracketPlan, Rung, hyperband_brackets, milestones};
pub use median::MedianStopping;
pub use none::NoSchedule;
pub use sha::SyncHyperband;

use hpo_proto::study::{SchedulerKind, StudySpec};
use hpo_proto::{Decision, Direction, TrialState};

/// A trial as schedulers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedTrial {
    pub number: u32,
    pub state: TrialState,
    /// Hyperband bracket (0 for schedulers without brackets).
    pub bracket: u32,
    /// Index of the rung the trial is (or was last) trained towards.
    pub rung: u32,
    /// The resource level of that rung: the trial trains up to this step.
    pub budget: u32,
    /// Objective value per step reported, ascending by step, one entry per
    /// step (a step reported again by a later attempt replaces the earlier).
    pub values: Vec<(u32, f64)>,
}

impl SchedTrial {
    /// The objective at exactly `step`, if reported.
    pub fn value_at(&self, step: u32) -> Option<f64> {
        self.values
            .binary_search_by_key(&step, |(s, _)| *s)
            .ok()
            .map(|i| self.values[i].1)
    }
}

/// Everything a scheduler may look at. `trials[n].number == n`.
#[derive(Debug, Clone, Copy)]
pub struct History<'a> {
    pub trials: &'a [SchedTrial],
    pub direction: Direction,
}

/// What the next free slot should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Resume paused trial `number` with a larger budget.
    Promote { number: u32, rung: u32, budget: u32 },
    /// Start a new configuration in `bracket`, rung 0, with `budget`.
    New { bracket: u32, budget: u32 },
    /// Nothing to hand out now, but running trials may change that (a
    /// synchronous rung waiting for its stragglers).
    Wait,
    /// Nothing will ever be handed out again.
    Done,
}

pub trait Scheduler: Send {
    fn name(&self) -> &'static str;

    /// Work for a free slot. `can_start`: the study may still add trials
    /// (max_trials not reached, sampler not spent, no stop rule fired).
    fn next(&mut self, history: &History<'_>, can_start: bool) -> Next;

    /// The answer to trial `number`'s report of `value` at `step`. The
    /// history already holds this report. Pause is only answered at the
    /// trial's `budget`; a trial reaching `max_resource` is answered Continue
    /// (it then completes).
    fn on_report(&mut self, history: &History<'_>, number: u32, step: u32, value: f64) -> Decision;

    /// Paused trials that can never be promoted any more (a synchronous rung
    /// that has promoted its best): the study stops them and frees their
    /// checkpoints. Called after every change.
    fn discard(&mut self, history: &History<'_>) -> Vec<u32> {
        let _ = history;
        Vec::new()
    }
}

/// The scheduler a study file asks for. `seed` is the study's seed (only
/// asynchronous Hyperband draws anything with it).
pub fn for_study(spec: &StudySpec, seed: u64) -> Box<dyn Scheduler> {
    let s = &spec.schedule;
    match s.algorithm {
        SchedulerKind::None => Box::new(NoSchedule::new(s)),
        SchedulerKind::Median => Box::new(MedianStopping::new(s)),
        SchedulerKind::SuccessiveHalving => Box::new(SyncHyperband::successive_halving(s)),
        SchedulerKind::Hyperband => Box::new(SyncHyperband::hyperband(s)),
        SchedulerKind::Asha => Box::new(Asha::new(s)),
        SchedulerKind::AsyncHyperband => Box::new(Asha::async_hyperband(s, seed)),
    }
}
