//! No early stopping: every trial trains to the full budget.

use super::{History, Next, Scheduler};
use hpo_proto::Decision;
use hpo_proto::study::ScheduleSpec;

/// Starts every trial at `max_resource` and never interrupts one.
#[derive(Debug, Clone)]
pub struct NoSchedule {
    max_resource: u32,
}

impl NoSchedule {
    pub fn new(spec: &ScheduleSpec) -> Self {
        NoSchedule {
            max_resource: spec.max_resource,
        }
    }
}

impl Scheduler for NoSchedule {
    fn name(&self) -> &'static str {
        "none"
    }

    /// Done as soon as the study may not add trials: nothing is ever
    /// promoted, so no slot will be wanted again.
    fn next(&mut self, _history: &History<'_>, can_start: bool) -> Next {
        full_budget(can_start, self.max_resource)
    }

    fn on_report(&mut self, _: &History<'_>, _: u32, _: u32, _: f64) -> Decision {
        Decision::Continue
    }
}

/// For schedulers that never pause: a new trial at the full budget while the
/// study may add trials, else nothing more, ever.
pub(crate) fn full_budget(can_start: bool, max_resource: u32) -> Next {
    if can_start {
        Next::New {
            bracket: 0,
            budget: max_resource,
        }
    } else {
        Next::Done
    }
}
