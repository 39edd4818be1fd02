//! The task that owns one running study: its sampler, its leases and its stop
//! rules. Every change to the study's trials goes through this task, so there
//! is no lock and no race between two workers asking at once.

use super::{EngineError, Event};
use crate::sampler::{self, Sampler, TrialView};
use crate::storage::{Requeue, Storage, StudyRecord, TrialRecord};
use hpo_proto::study::Scope;
use hpo_proto::{
    Assignment, Decision, MetricValues, Outcome, StudyId, StudyState, TrialId, TrialState,
    WorkerId, now_ms,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A running trial's lease and what it has reported in its current attempt.
struct Lease {
    worker: WorkerId,
    attempt: u32,
    deadline: Instant,
    last: Option<f64>,
    best: Option<f64>,
    last_step: Option<u32>,
    /// This trial reached the study's target.
    reached_target: bool,
    /// The coordinator has told it to stop (the study is ending).
    stop_sent: bool,
}

pub(super) struct StudyActor {
    record: StudyRecord,
    storage: Arc<dyn Storage>,
    sampler: Box<dyn Sampler>,
    lease_ttl: Duration,
    running: BTreeMap<u32, Lease>,
    waiting: u32,
    /// Trial number n is history[n].
    history: Vec<TrialView>,
    exhausted: bool,
    /// Set when a stop rule fired: no new trials; running ones are stopped.
    stopping: Option<(StudyState, String)>,
    ended: bool,
}

impl StudyActor {
    /// Rebuilds the study's state from storage (a new study, or one that was
    /// running when the coordinator stopped).
    pub(super) fn load(
        record: StudyRecord,
        storage: Arc<dyn Storage>,
        lease_ttl: Duration,
    ) -> Result<Self, EngineError> {
        let sampler = sampler::for_study(&record.spec, record.seed);
        let trials = storage.trials(record.id)?;
        let deadline = Instant::now() + lease_ttl;
        let mut running = BTreeMap::new();
        let mut waiting = 0;
        let mut history = Vec::with_capacity(trials.len());
        for t in &trials {
            match t.state {
                TrialState::Waiting => waiting += 1,
                TrialState::Running => {
                    // Its worker gets a full lease to reconnect and resume.
                    let mut lease = Lease {
                        worker: t.worker.clone().unwrap_or_else(|| WorkerId(String::new())),
                        attempt: t.attempt,
                        deadline,
                        last: None,
                        best: None,
                        last_step: t.last_step,
                        reached_target: false,
                        stop_sent: false,
                    };
                    for m in storage.metrics(t.id)? {
                        if m.attempt == t.attempt
                            && let Some(v) = m.values.get(&record.spec.objective.metric)
                        {
                            observe(&mut lease, &record, *v);
                        }
                    }
                    running.insert(t.id.number, lease);
                }
                _ => {}
            }
            history.push(view(t));
        }
        Ok(StudyActor {
            record,
            storage,
            sampler,
            lease_ttl,
            running,
            waiting,
            history,
            exhausted: false,
            stopping: None,
            ended: false,
        })
    }

    pub(super) fn id(&self) -> StudyId {
        self.record.id
    }

    /// Serves events until the study ends or the engine shuts down.
    pub(super) async fn run(mut self, mut events: mpsc::Receiver<Event>, tick: Duration) {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A study may already be over when it is loaded (all trials done
        // before a crash that came before its end was recorded).
        self.after_change();
        while !self.ended {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => self.handle(ev),
                    None => break,
                },
                _ = interval.tick() => self.on_tick(),
            }
        }
        tracing::debug!(study = %self.record.id, "study task stopped");
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Acquire { worker, reply } => {
                let _ = reply.send(self.on_acquire(&worker));
            }
            Event::Report {
                worker,
                number,
                attempt,
                step,
                values,
                reply,
            } => {
                let _ = reply.send(self.on_report(&worker, number, attempt, step, &values));
            }
            Event::Heartbeat {
                worker,
                numbers,
                reply,
            } => {
                let _ = reply.send(self.on_heartbeat(&worker, &numbers));
            }
            Event::Finish {
                worker,
                number,
                attempt,
                outcome,
                reply,
            } => {
                let _ = reply.send(self.on_finish(&worker, number, attempt, outcome));
            }
            Event::Cancel { reply } => {
                let r = self.begin_stop(StudyState::Cancelled, "cancelled");
                let r = r.map(|()| {
                    self.after_change();
                });
                let _ = reply.send(r);
            }
        }
        self.check_duration();
    }

    fn trial_id(&self, number: u32) -> TrialId {
        TrialId {
            study: self.record.id,
            number,
        }
    }

    fn on_acquire(&mut self, worker: &WorkerId) -> Result<Option<Assignment>, EngineError> {
        self.check_duration();
        if self.stopping.is_some() || self.ended {
            return Ok(None);
        }
        if self.running.len() as u32 >= self.record.spec.search.max_parallel {
            return Ok(None);
        }
        let now = now_ms();
        if self.waiting == 0 {
            let number = self.history.len() as u32;
            if self.exhausted || number >= self.record.spec.search.max_trials {
                return Ok(None);
            }
            let Some(params) = self.sampler.propose(number, &self.history) else {
                self.exhausted = true;
                self.after_change();
                return Ok(None);
            };
            let t = self.storage.create_trial(self.record.id, params, now)?;
            self.history.push(view(&t));
            self.waiting += 1;
        }
        let Some(t) = self.storage.claim_trial(self.record.id, worker, now)? else {
            return Err(EngineError::Internal(format!(
                "study {} counted a waiting trial that storage does not have",
                self.record.id
            )));
        };
        self.waiting -= 1;
        self.history[t.id.number as usize] = view(&t);
        self.running.insert(
            t.id.number,
            Lease {
                worker: worker.clone(),
                attempt: t.attempt,
                deadline: Instant::now() + self.lease_ttl,
                last: None,
                best: None,
                last_step: None,
                reached_target: false,
                stop_sent: false,
            },
        );
        tracing::info!(study = %self.record.id, trial = t.id.number, worker = %worker, attempt = t.attempt, "trial started");
        let spec = &self.record.spec;
        Ok(Some(Assignment {
            trial: t.id,
            attempt: t.attempt,
            study_name: spec.name.clone(),
            params: t.params,
            trainer: spec.trainer.clone(),
            seed: sampler::mix(self.record.seed, t.id.number as u64 + 1),
            metric: spec.objective.metric.clone(),
        }))
    }

    /// Why a trial that is not leased cannot take a worker's call.
    fn not_leased(&self, number: u32, worker: &WorkerId, attempt: u32) -> EngineError {
        let id = self.trial_id(number);
        match self.storage.trial(id) {
            Ok(None) => EngineError::NotFound(format!("trial {id} not found")),
            Ok(Some(t)) if t.state.is_terminal() => EngineError::FailedPrecondition(format!(
                "trial {id} has already ended ({})",
                t.state
            )),
            Ok(Some(t)) if t.state == TrialState::Waiting => {
                EngineError::FailedPrecondition(format!(
                    "trial {id} is not leased to worker {worker} (it is waiting to be run again)"
                ))
            }
            Ok(Some(t)) => EngineError::FailedPrecondition(format!(
                "trial {id} attempt {attempt} is not leased to worker {worker} (attempt {} is)",
                t.attempt
            )),
            Err(e) => e.into(),
        }
    }

    fn lease_of(
        &mut self,
        number: u32,
        worker: &WorkerId,
        attempt: u32,
    ) -> Result<&mut Lease, EngineError> {
        let ok = self
            .running
            .get(&number)
            .is_some_and(|l| &l.worker == worker && l.attempt == attempt);
        if !ok {
            return Err(self.not_leased(number, worker, attempt));
        }
        self.running
            .get_mut(&number)
            .ok_or_else(|| EngineError::Internal("lease vanished".into()))
    }

    fn on_report(
        &mut self,
        worker: &WorkerId,
        number: u32,
        attempt: u32,
        step: u32,
        values: &MetricValues,
    ) -> Result<Decision, EngineError> {
        let id = self.trial_id(number);
        self.lease_of(number, worker, attempt)?;
        self.storage.append_metrics(id, attempt, step, values)?;
        // Disjoint field borrows: the hottest path clones nothing.
        let Some(lease) = self.running.get_mut(&number) else {
            return Err(EngineError::Internal("lease vanished".into()));
        };
        lease.deadline = Instant::now() + self.lease_ttl;
        lease.last_step = Some(lease.last_step.map_or(step, |s| s.max(step)));
        let metric = &self.record.spec.objective.metric;
        if let Some(v) = values.get(metric).copied() {
            if !v.is_finite() {
                let reason = format!("objective `{metric}` is {v} at step {step}");
                self.end_trial(number, TrialState::Failed, &reason)?;
                self.after_change();
                return Ok(Decision::Stop);
            }
            observe(lease, &self.record, v);
            if lease.reached_target && self.stopping.is_none() {
                tracing::info!(study = %self.record.id, trial = number, value = v, "target reached");
                self.begin_stop(StudyState::Completed, "target")?;
            }
        }
        if self.stopping.is_some() {
            if let Some(lease) = self.running.get_mut(&number) {
                lease.stop_sent = true;
            }
            return Ok(Decision::Stop);
        }
        Ok(Decision::Continue)
    }

    /// Renews this worker's leases; returns the trials it must stop.
    fn on_heartbeat(&mut self, worker: &WorkerId, numbers: &[u32]) -> Vec<u32> {
        let deadline = Instant::now() + self.lease_ttl;
        let stopping = self.stopping.is_some();
        let mut stop = Vec::new();
        for n in numbers {
            match self.running.get_mut(n) {
                Some(lease) if &lease.worker == worker => {
                    lease.deadline = deadline;
                    if stopping {
                        lease.stop_sent = true;
                        stop.push(*n);
                    }
                }
                // Not ours (any more): the worker must drop it.
                _ => stop.push(*n),
            }
        }
        stop
    }

    fn on_finish(
        &mut self,
        worker: &WorkerId,
        number: u32,
        attempt: u32,
        outcome: Outcome,
    ) -> Result<TrialState, EngineError> {
        let id = self.trial_id(number);
        if !self.running.contains_key(&number) {
            // A finish that repeats one already applied (a retried call, or a
            // trial the coordinator failed itself) is answered, not refused.
            if let Some(t) = self.storage.trial(id)?
                && t.state.is_terminal()
                && t.worker.as_ref() == Some(worker)
                && t.attempt == attempt
            {
                return Ok(t.state);
            }
        }
        let epochs = self.record.spec.trainer.epochs;
        let metric = self.record.spec.objective.metric.clone();
        let cancelled = matches!(self.stopping, Some((StudyState::Cancelled, _)));
        let lease = self.lease_of(number, worker, attempt)?;
        let state = match outcome {
            Outcome::Interrupted => {
                if self.stopping.is_some() {
                    self.end_trial(
                        number,
                        stop_state(cancelled),
                        "interrupted while the study was ending",
                    )?
                } else {
                    self.storage.requeue_trial(
                        id,
                        Requeue::Interrupted,
                        &format!("worker {worker} was interrupted"),
                    )?;
                    self.running.remove(&number);
                    self.waiting += 1;
                    self.history[number as usize].state = TrialState::Waiting;
                    tracing::info!(study = %self.record.id, trial = number, worker = %worker, "trial interrupted, requeued");
                    TrialState::Waiting
                }
            }
            Outcome::Failed(reason) => self.end_trial(number, TrialState::Failed, &reason)?,
            Outcome::Completed => {
                if lease.last.is_none() {
                    let reason = format!("the trainer reported no `{metric}`");
                    self.end_trial(number, TrialState::Failed, &reason)?
                } else if lease.reached_target
                    || lease.last_step.unwrap_or(0) >= epochs
                    || !lease.stop_sent
                {
                    self.end_trial(number, TrialState::Completed, "")?
                } else {
                    let reason = self
                        .stopping
                        .as_ref()
                        .map(|(_, r)| r.clone())
                        .unwrap_or_default();
                    self.end_trial(
                        number,
                        stop_state(cancelled),
                        &format!("study ended: {reason}"),
                    )?
                }
            }
        };
        self.after_change();
        Ok(state)
    }

    /// Moves a leased trial to a terminal state with its objective value.
    fn end_trial(
        &mut self,
        number: u32,
        state: TrialState,
        reason: &str,
    ) -> Result<TrialState, EngineError> {
        let id = self.trial_id(number);
        let value =
            self.running
                .get(&number)
                .and_then(|l| match self.record.spec.objective.scope {
                    Scope::Last => l.last,
                    Scope::Best => l.best,
                });
        let t = self
            .storage
            .finish_trial(id, state, value, reason, now_ms())?;
        self.running.remove(&number);
        self.history[number as usize] = view(&t);
        tracing::info!(study = %self.record.id, trial = number, state = %state, value = ?value, reason, "trial ended");
        Ok(state)
    }

    /// A stop rule fired: no new trials, waiting ones end now, running ones
    /// are told to stop at their next report or heartbeat.
    fn begin_stop(&mut self, state: StudyState, reason: &str) -> Result<(), EngineError> {
        if self.stopping.is_some() || self.ended {
            return Ok(());
        }
        tracing::info!(study = %self.record.id, reason, "study stopping");
        self.stopping = Some((state, reason.to_string()));
        let trial_state = stop_state(state == StudyState::Cancelled);
        for t in self.storage.trials(self.record.id)? {
            if t.state == TrialState::Waiting {
                let t = self
                    .storage
                    .finish_trial(t.id, trial_state, None, reason, now_ms())?;
                self.history[t.id.number as usize] = view(&t);
            }
        }
        self.waiting = 0;
        Ok(())
    }

    fn check_duration(&mut self) {
        let Some(max) = self.record.spec.search.max_duration else {
            return;
        };
        let elapsed_ms = now_ms().saturating_sub(self.record.created_at_ms);
        if self.stopping.is_none() && !self.ended && elapsed_ms >= max.as_millis() as i64 {
            if let Err(e) = self.begin_stop(StudyState::Completed, "max_duration") {
                tracing::error!(study = %self.record.id, error = %e, "cannot stop study");
            }
            self.after_change();
        }
    }

    fn on_tick(&mut self) {
        self.check_duration();
        let now = Instant::now();
        let expired: Vec<u32> = self
            .running
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(n, _)| *n)
            .collect();
        for number in expired {
            if let Err(e) = self.expire(number) {
                tracing::error!(study = %self.record.id, trial = number, error = %e, "cannot expire lease");
            }
        }
        self.after_change();
    }

    /// A lease ran out: its worker is gone. Run the trial again elsewhere,
    /// unless it has used up its retries or the study is ending.
    fn expire(&mut self, number: u32) -> Result<(), EngineError> {
        let id = self.trial_id(number);
        let Some(lease) = self.running.get(&number) else {
            return Ok(());
        };
        let worker = lease.worker.clone();
        let why = format!("worker {worker} stopped heartbeating");
        if let Some((state, _)) = &self.stopping {
            let s = stop_state(*state == StudyState::Cancelled);
            self.end_trial(number, s, &why)?;
            return Ok(());
        }
        let lost = self.storage.trial(id)?.map_or(0, |t| t.lost_leases);
        let retries = self.record.spec.search.max_retries;
        if lost + 1 > retries {
            let reason = format!(
                "lost its worker {} time(s), more than max_retries = {retries}; last: {why}",
                lost + 1
            );
            self.end_trial(number, TrialState::Failed, &reason)?;
        } else {
            self.storage.requeue_trial(id, Requeue::LeaseLost, &why)?;
            self.running.remove(&number);
            self.waiting += 1;
            self.history[number as usize].state = TrialState::Waiting;
            tracing::warn!(study = %self.record.id, trial = number, worker = %worker, "lease expired, trial requeued");
        }
        Ok(())
    }

    /// Ends the study when nothing is left to do.
    fn after_change(&mut self) {
        if self.ended || !self.running.is_empty() {
            return;
        }
        let end = if let Some((state, reason)) = &self.stopping {
            Some((*state, reason.clone()))
        } else if self.waiting == 0
            && (self.exhausted || self.history.len() as u32 >= self.record.spec.search.max_trials)
        {
            Some((StudyState::Completed, "max_trials".to_string()))
        } else {
            None
        };
        if let Some((state, reason)) = end {
            match self
                .storage
                .end_study(self.record.id, state, &reason, now_ms())
            {
                Ok(r) => {
                    tracing::info!(study = %self.record.id, state = %state, reason, "study ended");
                    self.record = r;
                    self.ended = true;
                }
                Err(e) => tracing::error!(study = %self.record.id, error = %e, "cannot end study"),
            }
        }
    }
}

fn stop_state(cancelled: bool) -> TrialState {
    if cancelled {
        TrialState::Cancelled
    } else {
        TrialState::Stopped
    }
}

fn observe(lease: &mut Lease, record: &StudyRecord, v: f64) {
    let dir = record.spec.objective.direction;
    lease.last = Some(v);
    lease.best = Some(match lease.best {
        Some(b) if !dir.better(v, b) => b,
        _ => v,
    });
    let value = match record.spec.objective.scope {
        Scope::Last => v,
        Scope::Best => lease.best.unwrap_or(v),
    };
    if let Some(target) = record.spec.search.target
        && dir.reaches(value, target)
    {
        lease.reached_target = true;
    }
}

fn view(t: &TrialRecord) -> TrialView {
    TrialView {
        number: t.id.number,
        params: t.params.clone(),
        state: t.state,
        value: t.value,
    }
}
