//! The median stopping rule (Golovin et al. 2017, as Optuna's
//! `MedianPruner`): after the grace period, a trial whose best value so far
//! is strictly worse than the median of the other trials' values at the same
//! step is stopped. Trials never pause: every one is started at the full
//! budget.
//!
//! A report is answered with a lookup in a per-step sorted list instead of a
//! scan over every trial (a scan per report would make a study of n trials
//! cost O(n²) per step). The lists are a cache of the history: built from it
//! on the first call (so a re-created scheduler after a restart starts from
//! the stored history), extended with trials added since, and re-synced for
//! the reporting trial on every report, which also covers a step that a
//! later attempt reported again with another value.

use super::{History, Next, SchedTrial, Scheduler};
use hpo_proto::Decision;
use hpo_proto::study::ScheduleSpec;
use std::cmp::Ordering;

#[derive(Debug, Clone)]
pub struct MedianStopping {
    grace_period: u32,
    min_trials: u32,
    max_resource: u32,
    /// `by_step[s]`: the non-NaN values reported at step `s`, with their
    /// trial numbers, ordered by (value, number).
    by_step: Vec<Vec<(f64, u32)>>,
    /// `seen[n]`: trial n's values as they were put into `by_step`.
    seen: Vec<Vec<(u32, f64)>>,
    built: bool,
}

impl MedianStopping {
    pub fn new(spec: &ScheduleSpec) -> Self {
        MedianStopping {
            grace_period: spec.grace_period,
            min_trials: spec.min_trials.max(1),
            max_resource: spec.max_resource,
            by_step: Vec::new(),
            seen: Vec::new(),
            built: false,
        }
    }

    fn entry_cmp(a: &(f64, u32), b: &(f64, u32)) -> Ordering {
        a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
    }

    fn insert(&mut self, step: u32, value: f64, number: u32) {
        if value.is_nan() {
            return;
        }
        let s = step as usize;
        if self.by_step.len() <= s {
            self.by_step.resize_with(s + 1, Vec::new);
        }
        let list = &mut self.by_step[s];
        let e = (value, number);
        if let Err(i) = list.binary_search_by(|x| Self::entry_cmp(x, &e)) {
            list.insert(i, e);
        }
    }

    fn remove(&mut self, step: u32, value: f64, number: u32) {
        let Some(list) = self.by_step.get_mut(step as usize) else {
            return;
        };
        let e = (value, number);
        if let Ok(i) = list.binary_search_by(|x| Self::entry_cmp(x, &e)) {
            list.remove(i);
        }
    }

    /// Makes `by_step` hold exactly trial `t`'s current values.
    fn sync(&mut self, t: &SchedTrial) {
        let n = t.number as usize;
        if self.seen.len() <= n {
            self.seen.resize_with(n + 1, Vec::new);
        }
        let old = std::mem::take(&mut self.seen[n]);
        let same = |a: &(u32, f64), b: &(u32, f64)| a.0 == b.0 && a.1.to_bits() == b.1.to_bits();
        let common = old
            .iter()
            .zip(&t.values)
            .take_while(|(a, b)| same(a, b))
            .count();
        for &(s, v) in &old[common..] {
            self.remove(s, v, t.number);
        }
        for &(s, v) in &t.values[common..] {
            self.insert(s, v, t.number);
        }
        self.seen[n] = t.values.clone();
    }

    /// Brings the cache up to date with the trials it has not seen yet, or
    /// rebuilds it when the history is not the one it was built from.
    fn refresh(&mut self, history: &History<'_>) {
        if !self.built || self.seen.len() > history.trials.len() {
            self.by_step.clear();
            self.seen.clear();
            self.built = true;
        }
        for t in &history.trials[self.seen.len()..] {
            self.sync(t);
        }
    }

    /// The median of the values at `step` of trials other than `number`
    /// (whose own value there is `own`), with how many there are.
    fn median_of_others(&self, step: u32, number: u32, own: Option<f64>) -> (usize, Option<f64>) {
        let Some(list) = self.by_step.get(step as usize) else {
            return (0, None);
        };
        let own = own.and_then(|v| {
            list.binary_search_by(|x| Self::entry_cmp(x, &(v, number)))
                .ok()
        });
        let m = list.len() - usize::from(own.is_some());
        if m == 0 {
            return (0, None);
        }
        // The j-th of the others, skipping this trial's own entry.
        let other = |j: usize| match own {
            Some(p) if j >= p => list[j + 1].0,
            _ => list[j].0,
        };
        let median = if m % 2 == 1 {
            other(m / 2)
        } else {
            (other(m / 2 - 1) + other(m / 2)) / 2.0
        };
        (m, Some(median))
    }
}

impl Scheduler for MedianStopping {
    fn name(&self) -> &'static str {
        "median"
    }

    fn next(&mut self, _history: &History<'_>, can_start: bool) -> Next {
        super::none::full_budget(can_start, self.max_resource)
    }

    fn on_report(
        &mut self,
        history: &History<'_>,
        number: u32,
        step: u32,
        _value: f64,
    ) -> Decision {
        self.refresh(history);
        let Some(t) = history.trials.get(number as usize) else {
            return Decision::Continue;
        };
        self.sync(t);
        if step < self.grace_period || step >= self.max_resource {
            return Decision::Continue;
        }
        let (others, median) = self.median_of_others(step, number, t.value_at(step));
        let Some(median) = median else {
            return Decision::Continue;
        };
        if others < self.min_trials as usize {
            return Decision::Continue;
        }
        // The trial's best so far; a trial with only NaN values is stopped
        // (it diverged), as Optuna does.
        let best = t
            .values
            .iter()
            .take_while(|(s, _)| *s <= step)
            .map(|&(_, v)| v)
            .filter(|v| !v.is_nan())
            .reduce(|a, b| if history.direction.better(b, a) { b } else { a });
        match best {
            Some(best) if !history.direction.better(median, best) => Decision::Continue,
            _ => Decision::Stop,
        }
    }
}
