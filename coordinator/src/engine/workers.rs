//! The workers this coordinator has heard from since it started: their
//! slots, what each slot runs now, and how busy they were over the last
//! hour. Live bookkeeping for the dashboard and `/metrics`, not state the
//! engine decides anything on (leases live in each study's task), so it is
//! not stored: after a restart it fills again as workers re-register.

use hpo_proto::{TrialId, WorkerId};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

/// How far back utilisation looks.
pub const WINDOW_MS: i64 = 3_600_000;

#[derive(Debug, Clone, PartialEq)]
pub struct RunningSlot {
    pub slot: String,
    pub trial: TrialId,
    pub since_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerView {
    pub id: WorkerId,
    pub hostname: String,
    pub slots: Vec<String>,
    pub registered_at_ms: i64,
    pub last_seen_ms: i64,
    /// Heard from within the lease time.
    pub connected: bool,
    pub running: Vec<RunningSlot>,
    /// Busy slot-time over available slot-time in the last hour (or since it
    /// registered, if later).
    pub utilisation: f64,
}

#[derive(Debug, Default)]
struct Entry {
    hostname: String,
    slots: Vec<String>,
    registered_at_ms: i64,
    last_seen_ms: i64,
    running: BTreeMap<TrialId, (String, i64)>,
    /// Finished busy intervals (start, end) that end within the window.
    done: VecDeque<(i64, i64)>,
}

impl Entry {
    fn close(&mut self, trial: TrialId, now: i64) {
        if let Some((_, start)) = self.running.remove(&trial) {
            self.done.push_back((start, now.max(start)));
        }
    }

    fn prune(&mut self, now: i64) {
        while self
            .done
            .front()
            .is_some_and(|(_, end)| *end < now - WINDOW_MS)
        {
            self.done.pop_front();
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Workers {
    map: Mutex<HashMap<WorkerId, Entry>>,
}

impl Workers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<WorkerId, Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A (re-)registration: slots and hostname replace the old ones; trials
    /// the coordinator believes it runs stay tracked.
    pub fn register(&self, id: &WorkerId, hostname: &str, slots: &[String], now: i64) {
        let mut map = self.lock();
        let e = map.entry(id.clone()).or_insert_with(|| Entry {
            registered_at_ms: now,
            ..Entry::default()
        });
        e.hostname = hostname.to_string();
        e.slots = slots.to_vec();
        e.last_seen_ms = now;
    }

    /// Notes that the worker called; false when it is unknown (it must
    /// register again).
    pub fn seen(&self, id: &WorkerId, now: i64) -> bool {
        match self.lock().get_mut(id) {
            Some(e) => {
                e.last_seen_ms = now;
                true
            }
            None => false,
        }
    }

    pub fn started(&self, id: &WorkerId, slot: &str, trial: TrialId, now: i64) {
        if let Some(e) = self.lock().get_mut(id) {
            e.last_seen_ms = now;
            e.running.insert(trial, (slot.to_string(), now));
        }
    }

    pub fn ended(&self, id: &WorkerId, trial: TrialId, now: i64) {
        if let Some(e) = self.lock().get_mut(id) {
            e.close(trial, now);
            e.prune(now);
        }
    }

    /// The worker says it runs exactly `trials`: anything else it was
    /// tracked as running has ended (or was lost).
    pub fn heartbeat(&self, id: &WorkerId, trials: &[TrialId], now: i64) {
        if let Some(e) = self.lock().get_mut(id) {
            e.last_seen_ms = now;
            let gone: Vec<TrialId> = e
                .running
                .keys()
                .filter(|t| !trials.contains(t))
                .copied()
                .collect();
            for t in gone {
                e.close(t, now);
            }
            e.prune(now);
        }
    }

    /// Every worker, connected ones first, then by id.
    pub fn snapshot(&self, now: i64, ttl_ms: i64) -> Vec<WorkerView> {
        let map = self.lock();
        let mut out: Vec<WorkerView> = map
            .iter()
            .map(|(id, e)| {
                let from = (now - WINDOW_MS).max(e.registered_at_ms);
                let span = (now - from).max(1) as f64 * e.slots.len().max(1) as f64;
                let busy: i64 = e
                    .done
                    .iter()
                    .map(|(s, t)| (t.min(&now) - s.max(&from)).max(0))
                    .chain(
                        e.running
                            .values()
                            .map(|(_, s)| (now - *s.max(&from)).max(0)),
                    )
                    .sum();
                WorkerView {
                    id: id.clone(),
                    hostname: e.hostname.clone(),
                    slots: e.slots.clone(),
                    registered_at_ms: e.registered_at_ms,
                    last_seen_ms: e.last_seen_ms,
                    connected: now - e.last_seen_ms <= ttl_ms,
                    running: e
                        .running
                        .iter()
                        .map(|(t, (slot, since))| RunningSlot {
                            slot: slot.clone(),
                            trial: *t,
                            since_ms: *since,
                        })
                        .collect(),
                    utilisation: (busy as f64 / span).clamp(0.0, 1.0),
                }
            })
            .collect();
        out.sort_by(|a, b| b.connected.cmp(&a.connected).then(a.id.cmp(&b.id)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpo_proto::StudyId;

    fn t(n: u32) -> TrialId {
        TrialId {
            study: StudyId(1),
            number: n,
        }
    }

    #[test]
    fn utilisation_counts_busy_slot_time_in_the_window() {
        let w = Workers::default();
        let id = WorkerId("w".into());
        let slots = vec!["cpu:0".to_string(), "cpu:1".to_string()];
        w.register(&id, "host", &slots, 0);
        assert!(w.seen(&id, 0));
        assert!(!w.seen(&WorkerId("other".into()), 0));
        w.started(&id, "cpu:0", t(0), 0);
        w.ended(&id, t(0), 1000);
        w.started(&id, "cpu:1", t(1), 500);
        let v = &w.snapshot(1000, 1000)[0];
        // Slot 0 busy 1000 ms, slot 1 busy 500 ms, of 2 × 1000.
        assert!((v.utilisation - 0.75).abs() < 1e-12, "{}", v.utilisation);
        assert_eq!(v.running.len(), 1);
        assert_eq!(v.running[0].slot, "cpu:1");
        assert!(v.connected);
        // A heartbeat without trial 1 ends it; later the window forgets it.
        w.heartbeat(&id, &[], 2000);
        assert!(w.snapshot(2000, 100)[0].running.is_empty());
        let later = 2000 + WINDOW_MS + 10;
        w.heartbeat(&id, &[], later);
        let v = &w.snapshot(later, 100)[0];
        assert_eq!(v.utilisation, 0.0);
        assert!(!w.snapshot(later + 1000, 100)[0].connected);
    }
}
