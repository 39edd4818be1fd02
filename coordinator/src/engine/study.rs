//! The task that owns one running study: its sampler, its scheduler, its
//! leases and its stop rules. Every change to the study's trials goes through
//! this task, so there is no lock and no race between two workers asking at
//! once.
//!
//! A trial runs in segments: a new trial trains to the budget its scheduler
//! gave it, then is paused (its checkpoint stored), stopped or completed; a
//! promotion puts a paused trial back in the queue with a larger budget and
//! the next worker resumes it from its checkpoint.

use super::{EngineError, Event, LiveEvent, LiveKind};
use crate::checkpoints::CheckpointStore;
use crate::sampler::{self, Sampler, TrialView};
use crate::scheduler::{self, History, Next, SchedTrial, Scheduler};
use crate::storage::{Placement, Requeue, Storage, StudyRecord, TrialRecord};
use crate::telemetry::Telemetry;
use hpo_proto::study::{Algorithm, Scope};
use hpo_proto::{
    Assignment, CheckpointRef, Decision, MetricValues, Outcome, StudyId, StudyState, TrialId,
    TrialState, WorkerId, now_ms,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
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
    /// A user asked to stop it: the next report ends it, with this reason.
    user_stop: Option<String>,
    /// The resource level this segment trains to.
    budget: u32,
}

type AcquireReply = oneshot::Sender<Result<Option<Assignment>, EngineError>>;
type ProposalRx = oneshot::Receiver<(Box<dyn Sampler>, Option<hpo_proto::Params>)>;

/// The proposal in flight; never resolves when there is none (the select
/// guard keeps it from being polled then anyway).
async fn proposed(
    rx: &mut Option<ProposalRx>,
) -> Result<(Box<dyn Sampler>, Option<hpo_proto::Params>), oneshot::error::RecvError> {
    match rx {
        Some(rx) => rx.await,
        None => std::future::pending().await,
    }
}

/// A new trial whose configuration is being proposed off the runtime.
struct Proposal {
    bracket: u32,
    budget: u32,
    waiters: Vec<(WorkerId, String, AcquireReply)>,
}

/// What an acquire gets now. Returned once per acquire and matched at once.
#[allow(clippy::large_enum_variant)]
enum Acquired {
    Trial(Assignment),
    Nothing,
    /// A configuration is being proposed: the caller waits for it.
    Pending,
}

/// What woke the study task. One lives for one turn of the loop, so its
/// size does not matter.
#[allow(clippy::large_enum_variant)]
enum Wake {
    Event(Option<Event>),
    Proposed(Result<(Box<dyn Sampler>, Option<hpo_proto::Params>), oneshot::error::RecvError>),
    Tick,
}

pub(super) struct StudyActor {
    record: StudyRecord,
    storage: Arc<dyn Storage>,
    checkpoints: Arc<CheckpointStore>,
    /// None while a proposal is being computed off the runtime.
    sampler: Option<Box<dyn Sampler>>,
    /// Model-based samplers (seconds of fitting at worst) propose on a
    /// blocking thread, so the study's reports are answered meanwhile.
    off_thread: bool,
    /// The proposal in flight and the acquires waiting for it.
    proposal: Option<Proposal>,
    proposal_rx: Option<ProposalRx>,
    scheduler: Box<dyn Scheduler>,
    /// The scheduler's view of trial n is sched[n].
    sched: Vec<SchedTrial>,
    /// Resource units trained so far: the highest step of each trial, summed.
    resource_used: u64,
    /// With `keep_best`: the final model kept, of the best completed trial
    /// so far, and its value.
    best_model: Option<(CheckpointRef, f64)>,
    lease_ttl: Duration,
    running: BTreeMap<u32, Lease>,
    waiting: u32,
    /// Trial number n is history[n].
    history: Vec<TrialView>,
    /// Completed trials of the studies `warm_start` names: the model-based
    /// sampler sees them first, numbered before this study's trials.
    warm: Vec<TrialView>,
    exhausted: bool,
    /// The scheduler answered `Done`: it will hand out nothing more.
    sched_done: bool,
    /// Set when a stop rule fired: no new trials; running ones are stopped.
    stopping: Option<(StudyState, String)>,
    ended: bool,
    live: broadcast::Sender<LiveEvent>,
    telemetry: Arc<Telemetry>,
}

impl StudyActor {
    /// Rebuilds the study's state from storage (a new study, or one that was
    /// running when the coordinator stopped).
    pub(super) fn load(
        record: StudyRecord,
        storage: Arc<dyn Storage>,
        checkpoints: Arc<CheckpointStore>,
        lease_ttl: Duration,
        live: broadcast::Sender<LiveEvent>,
        telemetry: Arc<Telemetry>,
    ) -> Result<Self, EngineError> {
        let sampler = sampler::for_study(&record.spec, record.seed);
        let mut warm = Vec::new();
        for earlier in super::warm_start_studies(&*storage, &record.spec, Some(record.id))? {
            for t in storage.trials(earlier.id)? {
                if t.state == TrialState::Completed && t.value.is_some_and(f64::is_finite) {
                    let mut v = view(&t);
                    v.number = warm.len() as u32;
                    warm.push(v);
                }
            }
        }
        if !warm.is_empty() {
            tracing::info!(study = %record.id, trials = warm.len(), "warm start from earlier studies");
        }
        let off_thread = matches!(
            record.spec.search.algorithm,
            Algorithm::Gp | Algorithm::Tpe | Algorithm::Bohb
        );
        let scheduler = scheduler::for_study(&record.spec, record.seed);
        let metric = record.spec.objective.metric.clone();
        let max_resource = record.spec.schedule.max_resource;
        let trials = storage.trials(record.id)?;
        let deadline = Instant::now() + lease_ttl;
        let mut running = BTreeMap::new();
        let mut waiting = 0;
        let mut history = Vec::with_capacity(trials.len());
        let mut sched = Vec::with_capacity(trials.len());
        let mut resource_used = 0u64;
        let mut best_model: Option<(CheckpointRef, f64)> = None;
        let direction = record.spec.objective.direction;
        for t in &trials {
            if record.spec.schedule.keep_best
                && t.state == TrialState::Completed
                && let Some(v) = t.value
                && best_model
                    .as_ref()
                    .is_none_or(|(_, b)| direction.better(v, *b))
                && let Some(c) = checkpoints.find(t.id, t.attempt, max_resource)?
            {
                best_model = Some((c, v));
            }
            // The scheduler's history: every attempt's objective per step, a
            // later attempt's report of a step replacing an earlier one.
            let mut values: BTreeMap<u32, f64> = BTreeMap::new();
            let points = if t.attempt > 0 {
                storage.metrics(t.id)?
            } else {
                Vec::new()
            };
            for m in &points {
                if let Some(v) = m.values.get(&metric) {
                    values.insert(m.step, *v);
                }
            }
            resource_used += u64::from(values.keys().next_back().copied().unwrap_or(0));
            sched.push(SchedTrial {
                number: t.id.number,
                state: t.state,
                bracket: t.placement.bracket,
                rung: t.placement.rung,
                budget: budget_of(t, max_resource),
                values: values.into_iter().collect(),
            });
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
                        user_stop: None,
                        budget: budget_of(t, max_resource),
                    };
                    for m in points {
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
            checkpoints,
            off_thread,
            sampler: Some(sampler),
            proposal: None,
            proposal_rx: None,
            scheduler,
            sched,
            resource_used,
            best_model,
            lease_ttl,
            running,
            waiting,
            history,
            warm,
            exhausted: false,
            sched_done: false,
            stopping: None,
            ended: false,
            live,
            telemetry,
        })
    }

    /// Tells live views (the dashboard) about a trial's new state.
    fn publish_trial(&self, number: u32, state: TrialState) {
        let _ = self.live.send(LiveEvent {
            study: self.record.id.0,
            trial: Some(number),
            kind: LiveKind::Trial,
            state: Some(state.to_string()),
            step: None,
            value: None,
        });
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
            let mut rx = self.proposal_rx.take();
            let wake = tokio::select! {
                ev = events.recv() => Wake::Event(ev),
                r = proposed(&mut rx), if rx.is_some() => Wake::Proposed(r),
                _ = interval.tick() => Wake::Tick,
            };
            match wake {
                Wake::Event(Some(ev)) => {
                    self.proposal_rx = rx;
                    self.handle(ev);
                }
                Wake::Event(None) => break,
                Wake::Proposed(r) => self.on_proposed(r),
                Wake::Tick => {
                    self.proposal_rx = rx;
                    self.on_tick();
                }
            }
        }
        tracing::debug!(study = %self.record.id, "study task stopped");
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Acquire {
                worker,
                slot,
                reply,
            } => self.acquire(worker, slot, reply),
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
            Event::StopTrial {
                number,
                reason,
                reply,
            } => {
                let r = self.on_stop_trial(number, &reason);
                let _ = reply.send(r);
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

    /// The study may still add trials.
    fn can_start(&self) -> bool {
        !self.exhausted
            && (self.history.len() as u32) < self.record.spec.search.max_trials
            && self.stopping.is_none()
    }

    /// Answers an acquire now, or once the configuration being proposed for
    /// it is ready.
    fn acquire(&mut self, worker: WorkerId, slot: String, reply: AcquireReply) {
        if let Some(p) = &mut self.proposal {
            p.waiters.push((worker, slot, reply));
            return;
        }
        match self.on_acquire(&worker, &slot) {
            Ok(Acquired::Trial(a)) => {
                let _ = reply.send(Ok(Some(a)));
            }
            Ok(Acquired::Nothing) => {
                let _ = reply.send(Ok(None));
            }
            Ok(Acquired::Pending) => {
                if let Some(p) = &mut self.proposal {
                    p.waiters.push((worker, slot, reply));
                }
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// A proposal made off the runtime is back: the sampler returns, the new
    /// trial is stored, and the acquires that waited are served.
    fn on_proposed(
        &mut self,
        result: Result<(Box<dyn Sampler>, Option<hpo_proto::Params>), oneshot::error::RecvError>,
    ) {
        let Some(proposal) = self.proposal.take() else {
            return;
        };
        match result {
            Ok((sampler, params)) => {
                self.sampler = Some(sampler);
                match params {
                    Some(params) if self.stopping.is_none() && !self.ended => {
                        let placement = Placement {
                            bracket: proposal.bracket,
                            rung: 0,
                            budget: proposal.budget,
                        };
                        if let Err(e) = self.add_trial(params, placement) {
                            tracing::error!(study = %self.record.id, error = %e, "cannot store a proposed trial");
                        }
                    }
                    Some(_) => {}
                    None => self.exhausted = true,
                }
            }
            Err(_) => {
                // The proposing thread panicked: the sampler is lost. A fresh
                // one refits from the history on its next proposal.
                tracing::error!(study = %self.record.id, "sampler failed; starting a fresh one");
                self.sampler = Some(sampler::for_study(&self.record.spec, self.record.seed));
            }
        }
        for (worker, slot, reply) in proposal.waiters {
            self.acquire(worker, slot, reply);
        }
        self.after_change();
    }

    /// What the sampler sees for trial `number`: the warm-start trials, then
    /// this study's, numbered on from them.
    fn sampler_history(&self, number: u32) -> (u32, Vec<TrialView>) {
        let k = self.warm.len() as u32;
        let own = if self.record.spec.search.algorithm == Algorithm::Bohb {
            // BOHB models the results at one budget, not the final values.
            sampler::bohb_view(&self.record.spec, &self.history, &self.sched).trials
        } else {
            self.history.clone()
        };
        let mut all = Vec::with_capacity(self.warm.len() + own.len());
        all.extend(self.warm.iter().cloned());
        all.extend(own.into_iter().map(|t| TrialView {
            number: t.number + k,
            ..t
        }));
        (number + k, all)
    }

    /// Stores a new waiting trial and adds it to the views.
    fn add_trial(
        &mut self,
        params: hpo_proto::Params,
        placement: Placement,
    ) -> Result<(), EngineError> {
        let t = self
            .storage
            .create_trial(self.record.id, params, placement, now_ms())?;
        self.history.push(view(&t));
        self.sched.push(SchedTrial {
            number: t.id.number,
            state: t.state,
            bracket: placement.bracket,
            rung: placement.rung,
            budget: placement.budget,
            values: Vec::new(),
        });
        self.waiting += 1;
        self.publish_trial(t.id.number, t.state);
        Ok(())
    }

    fn on_acquire(&mut self, worker: &WorkerId, slot: &str) -> Result<Acquired, EngineError> {
        self.check_duration();
        if self.stopping.is_some() || self.ended {
            return Ok(Acquired::Nothing);
        }
        if self.running.len() as u32 >= self.record.spec.search.max_parallel {
            return Ok(Acquired::Nothing);
        }
        let now = now_ms();
        if self.waiting == 0 {
            let can_start = self.can_start();
            let next = self.scheduler.next(
                &History {
                    trials: &self.sched,
                    direction: self.record.spec.objective.direction,
                },
                can_start,
            );
            match next {
                Next::Promote {
                    number,
                    rung,
                    budget,
                } => {
                    let Some(st) = self.sched.get(number as usize) else {
                        return Err(EngineError::Internal(format!(
                            "scheduler promoted trial {number}, which does not exist"
                        )));
                    };
                    let placement = Placement {
                        bracket: st.bracket,
                        rung,
                        budget,
                    };
                    let t = self
                        .storage
                        .promote_trial(self.trial_id(number), placement)?;
                    tracing::info!(study = %self.record.id, trial = number, rung, budget, "trial promoted");
                    self.refresh(&t);
                    self.waiting += 1;
                }
                Next::New { bracket, budget } => {
                    let number = self.history.len() as u32;
                    if !can_start {
                        return Err(EngineError::Internal(format!(
                            "scheduler {} started a trial the study may not add",
                            self.scheduler.name()
                        )));
                    }
                    // With a warm start the sampler numbers trials after the
                    // earlier studies', so enqueued ones are taken here.
                    if !self.warm.is_empty()
                        && let Some(p) = self.record.spec.search.enqueue.get(number as usize)
                    {
                        let placement = Placement {
                            bracket,
                            rung: 0,
                            budget,
                        };
                        self.add_trial(p.clone(), placement)?;
                        return self.claim(worker, slot, now);
                    }
                    let Some(mut sampler) = self.sampler.take() else {
                        return Err(EngineError::Internal("sampler missing".into()));
                    };
                    if self.off_thread {
                        // Fit and propose on a blocking thread with a copy of
                        // the history; this task goes on answering reports.
                        let (at, history) = self.sampler_history(number);
                        let (tx, rx) = oneshot::channel();
                        tokio::task::spawn_blocking(move || {
                            let params = sampler.propose(at, &history);
                            let _ = tx.send((sampler, params));
                        });
                        self.proposal = Some(Proposal {
                            bracket,
                            budget,
                            waiters: Vec::new(),
                        });
                        self.proposal_rx = Some(rx);
                        return Ok(Acquired::Pending);
                    }
                    let proposed = if self.warm.is_empty()
                        && self.record.spec.search.algorithm != Algorithm::Bohb
                    {
                        sampler.propose(number, &self.history)
                    } else {
                        let (at, history) = self.sampler_history(number);
                        sampler.propose(at, &history)
                    };
                    self.sampler = Some(sampler);
                    let Some(params) = proposed else {
                        self.exhausted = true;
                        self.after_change();
                        return Ok(Acquired::Nothing);
                    };
                    let placement = Placement {
                        bracket,
                        rung: 0,
                        budget,
                    };
                    self.add_trial(params, placement)?;
                }
                Next::Wait => return Ok(Acquired::Nothing),
                Next::Done => {
                    self.sched_done = true;
                    self.after_change();
                    return Ok(Acquired::Nothing);
                }
            }
        }
        self.claim(worker, slot, now)
    }

    /// Leases the lowest-numbered waiting trial to `worker`.
    fn claim(&mut self, worker: &WorkerId, slot: &str, now: i64) -> Result<Acquired, EngineError> {
        let Some(t) = self
            .storage
            .claim_trial(self.record.id, worker, slot, now)?
        else {
            return Err(EngineError::Internal(format!(
                "study {} counted a waiting trial that storage does not have",
                self.record.id
            )));
        };
        self.waiting -= 1;
        self.refresh(&t);
        let spec = &self.record.spec;
        let budget = budget_of(&t, spec.schedule.max_resource);
        self.running.insert(
            t.id.number,
            Lease {
                worker: worker.clone(),
                attempt: t.attempt,
                deadline: Instant::now() + self.lease_ttl,
                last: None,
                best: None,
                last_step: t.checkpoint.as_ref().map(|c| c.step),
                reached_target: false,
                stop_sent: false,
                user_stop: None,
                budget,
            },
        );
        tracing::info!(study = %self.record.id, trial = t.id.number, worker = %worker, attempt = t.attempt, budget, resume = ?t.checkpoint.as_ref().map(|c| c.step), "trial started");
        Ok(Acquired::Trial(Assignment {
            trial: t.id,
            attempt: t.attempt,
            study_name: spec.name.clone(),
            params: t.params,
            trainer: spec.trainer.clone(),
            seed: sampler::mix(self.record.seed, t.id.number as u64 + 1),
            metric: spec.objective.metric.clone(),
            resource: spec.schedule.resource,
            budget,
            max_resource: spec.schedule.max_resource,
            resume: t.checkpoint,
            save_final: spec.schedule.keep_best,
        }))
    }

    /// Copies a stored trial's state into the sampler's and scheduler's views.
    fn refresh(&mut self, t: &TrialRecord) {
        self.publish_trial(t.id.number, t.state);
        let n = t.id.number as usize;
        if let Some(h) = self.history.get_mut(n) {
            *h = view(t);
        }
        if let Some(s) = self.sched.get_mut(n) {
            s.state = t.state;
            s.bracket = t.placement.bracket;
            s.rung = t.placement.rung;
            s.budget = budget_of(t, self.record.spec.schedule.max_resource);
        }
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
        let max_resource = self.record.spec.schedule.max_resource;
        // Disjoint field borrows: the hottest path clones nothing.
        let Some(lease) = self.running.get_mut(&number) else {
            return Err(EngineError::Internal("lease vanished".into()));
        };
        lease.deadline = Instant::now() + self.lease_ttl;
        lease.last_step = Some(lease.last_step.map_or(step, |s| s.max(step)));
        let budget = lease.budget;
        let metric = &self.record.spec.objective.metric;
        let Some(v) = values.get(metric).copied() else {
            if self.stopping.is_some() {
                lease.stop_sent = true;
                return Ok(Decision::Stop);
            }
            return Ok(if step >= budget && budget < max_resource {
                Decision::Pause
            } else {
                Decision::Continue
            });
        };
        let _ = self.live.send(LiveEvent {
            study: self.record.id.0,
            trial: Some(number),
            kind: LiveKind::Report,
            state: None,
            step: Some(step),
            value: Some(v),
        });
        if let Some(reason) = lease.user_stop.take() {
            observe(lease, &self.record, v);
            let reason = format!("{reason} at step {step}");
            self.end_trial(number, TrialState::Stopped, &reason)?;
            self.after_change();
            return Ok(Decision::Stop);
        }
        if !v.is_finite() {
            let reason = format!("objective `{metric}` is {v} at step {step}");
            self.end_trial(number, TrialState::Failed, &reason)?;
            self.after_change();
            return Ok(Decision::Stop);
        }
        observe(lease, &self.record, v);
        let reached_target = lease.reached_target;
        if let Some(st) = self.sched.get_mut(number as usize) {
            let high = st.values.last().map_or(0, |(s, _)| *s);
            if step > high {
                self.resource_used += u64::from(step - high);
            }
            match st.values.binary_search_by_key(&step, |(s, _)| *s) {
                Ok(i) => st.values[i].1 = v,
                Err(i) => st.values.insert(i, (step, v)),
            }
        }
        if reached_target && self.stopping.is_none() {
            tracing::info!(study = %self.record.id, trial = number, value = v, "target reached");
            self.begin_stop(StudyState::Completed, "target")?;
        }
        if let Some(max) = self.record.spec.search.max_total_resource
            && self.resource_used >= max
            && self.stopping.is_none()
        {
            tracing::info!(study = %self.record.id, used = self.resource_used, "resource budget spent");
            self.begin_stop(StudyState::Completed, "max_total_resource")?;
        }
        if self.stopping.is_some() {
            if let Some(lease) = self.running.get_mut(&number) {
                lease.stop_sent = true;
            }
            return Ok(Decision::Stop);
        }
        let mut decision = self.scheduler.on_report(
            &History {
                trials: &self.sched,
                direction: self.record.spec.objective.direction,
            },
            number,
            step,
            v,
        );
        // The trainer stops at its budget whatever it is told: below the
        // full budget that is a pause.
        if decision == Decision::Continue && step >= budget && budget < max_resource {
            decision = Decision::Pause;
        }
        if decision == Decision::Stop {
            let reason = format!("stopped by {} at step {step}", self.scheduler.name());
            self.end_trial(number, TrialState::Stopped, &reason)?;
            self.after_change();
        }
        Ok(decision)
    }

    /// A user's stop: a waiting or paused trial ends now (keeping the value a
    /// paused one reached); a running one is told to stop at its next report.
    fn on_stop_trial(&mut self, number: u32, reason: &str) -> Result<(), EngineError> {
        let id = self.trial_id(number);
        let Some(state) = self.history.get(number as usize).map(|h| h.state) else {
            return Err(EngineError::NotFound(format!("trial {id} not found")));
        };
        match state {
            TrialState::Running => {
                if let Some(lease) = self.running.get_mut(&number) {
                    lease.user_stop = Some(reason.to_string());
                }
            }
            TrialState::Waiting => {
                let value = self.storage.trial(id)?.and_then(|t| t.value);
                let t =
                    self.storage
                        .finish_trial(id, TrialState::Stopped, value, reason, now_ms())?;
                self.waiting = self.waiting.saturating_sub(1);
                self.refresh(&t);
                self.drop_checkpoints(id);
                self.after_change();
            }
            TrialState::Paused => {
                self.stop_paused(number, TrialState::Stopped, reason)?;
                self.after_change();
            }
            s => {
                return Err(EngineError::FailedPrecondition(format!(
                    "trial {id} has already ended ({s})"
                )));
            }
        }
        Ok(())
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
        let epochs = self.record.spec.schedule.max_resource;
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
                    self.sched[number as usize].state = TrialState::Waiting;
                    tracing::info!(study = %self.record.id, trial = number, worker = %worker, "trial interrupted, requeued");
                    TrialState::Waiting
                }
            }
            Outcome::Failed(reason) => self.end_trial(number, TrialState::Failed, &reason)?,
            Outcome::Paused { step } => self.pause(number, attempt, step)?,
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
        let value = self.lease_value(number);
        let t = self
            .storage
            .finish_trial(id, state, value, reason, now_ms())?;
        self.running.remove(&number);
        self.refresh(&t);
        let kept = state == TrialState::Completed && self.keep_model(&t)?;
        if !kept {
            self.drop_checkpoints(id);
        }
        tracing::info!(study = %self.record.id, trial = number, state = %state, value = ?value, reason, "trial ended");
        Ok(state)
    }

    /// With `keep_best`: keeps a completed trial's final model if it is the
    /// best so far (deleting the one it displaces and the trial's older
    /// checkpoints). False when there is nothing to keep.
    fn keep_model(&mut self, t: &TrialRecord) -> Result<bool, EngineError> {
        if !self.record.spec.schedule.keep_best {
            return Ok(false);
        }
        let Some(v) = t.value else {
            return Ok(false);
        };
        let max = self.record.spec.schedule.max_resource;
        let Some(model) = self.checkpoints.find(t.id, t.attempt, max)? else {
            return Ok(false);
        };
        let direction = self.record.spec.objective.direction;
        if self
            .best_model
            .as_ref()
            .is_some_and(|(_, b)| !direction.better(v, *b))
        {
            return Ok(false);
        }
        if let Some((old, _)) = self.best_model.take() {
            self.drop_checkpoints(old.trial);
        }
        if let Some(previous) = &t.checkpoint
            && let Err(e) = self.checkpoints.delete(previous)
        {
            tracing::warn!(study = %t.id.study, trial = t.id.number, error = %e, "cannot delete a checkpoint");
        }
        tracing::info!(study = %t.id.study, trial = t.id.number, value = v, "keeping the best trial's final model");
        self.best_model = Some((model, v));
        Ok(true)
    }

    /// The trial's objective so far in its current lease, by the study's scope.
    fn lease_value(&self, number: u32) -> Option<f64> {
        let lease = self.running.get(&number)?;
        match self.record.spec.objective.scope {
            Scope::Last => lease.last,
            Scope::Best => lease.best,
        }
    }

    /// A trial that ended needs no checkpoint any more.
    fn drop_checkpoints(&self, id: TrialId) {
        if let Err(e) = self.checkpoints.delete_trial(id) {
            tracing::warn!(study = %id.study, trial = id.number, error = %e, "cannot delete checkpoints");
        }
    }

    /// The worker stopped the trial at `step` and uploaded its checkpoint:
    /// the trial gives its slot back until a promotion.
    fn pause(&mut self, number: u32, attempt: u32, step: u32) -> Result<TrialState, EngineError> {
        let id = self.trial_id(number);
        let Some(checkpoint) = self.checkpoints.find(id, attempt, step)? else {
            let reason = format!("paused at step {step} without uploading its checkpoint");
            return self.end_trial(number, TrialState::Failed, &reason);
        };
        let value = self.lease_value(number);
        if let Some((state, reason)) = self.stopping.clone() {
            let s = stop_state(state == StudyState::Cancelled);
            return self.end_trial(number, s, &format!("study ended: {reason}"));
        }
        let previous = self.storage.trial(id)?.and_then(|t| t.checkpoint);
        let rung = self.sched.get(number as usize).map_or(0, |s| s.rung);
        let reason = format!("paused at rung {rung} (step {step})");
        let t = self
            .storage
            .pause_trial(id, attempt, checkpoint.clone(), value, &reason)?;
        if let Some(old) = previous
            && old != checkpoint
            && let Err(e) = self.checkpoints.delete(&old)
        {
            tracing::warn!(study = %id.study, trial = number, error = %e, "cannot delete an old checkpoint");
        }
        self.running.remove(&number);
        self.refresh(&t);
        tracing::info!(study = %self.record.id, trial = number, step, value = ?value, "trial paused");
        Ok(TrialState::Paused)
    }

    /// Stops the paused trials the scheduler will never promote.
    fn discard(&mut self) -> Result<(), EngineError> {
        let numbers = self.scheduler.discard(&History {
            trials: &self.sched,
            direction: self.record.spec.objective.direction,
        });
        for number in numbers {
            let paused = self
                .sched
                .get(number as usize)
                .is_some_and(|s| s.state == TrialState::Paused);
            if paused {
                self.stop_paused(number, TrialState::Stopped, "not promoted")?;
            }
        }
        Ok(())
    }

    /// Ends a paused trial for good, keeping its value.
    fn stop_paused(
        &mut self,
        number: u32,
        state: TrialState,
        reason: &str,
    ) -> Result<(), EngineError> {
        let id = self.trial_id(number);
        let value = self.storage.trial(id)?.and_then(|t| t.value);
        let t = self
            .storage
            .finish_trial(id, state, value, reason, now_ms())?;
        self.refresh(&t);
        self.drop_checkpoints(id);
        Ok(())
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
            if matches!(t.state, TrialState::Waiting | TrialState::Paused) {
                let t = self
                    .storage
                    .finish_trial(t.id, trial_state, t.value, reason, now_ms())?;
                self.refresh(&t);
                self.drop_checkpoints(t.id);
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
            self.sched[number as usize].state = TrialState::Waiting;
            self.publish_trial(number, TrialState::Waiting);
            Telemetry::inc(&self.telemetry.lease_expiries);
            tracing::warn!(study = %self.record.id, trial = number, worker = %worker, "lease expired, trial requeued");
        }
        Ok(())
    }

    /// Stops paused trials the scheduler gave up on, and ends the study when
    /// nothing is left to do.
    fn after_change(&mut self) {
        if self.ended {
            return;
        }
        if self.stopping.is_none()
            && let Err(e) = self.discard()
        {
            tracing::error!(study = %self.record.id, error = %e, "cannot stop discarded trials");
        }
        if !self.running.is_empty() || self.waiting > 0 || self.proposal.is_some() {
            return;
        }
        let end = if let Some((state, reason)) = &self.stopping {
            Some((*state, reason.clone()))
        } else {
            // Nothing runs or waits: the study is over unless the scheduler
            // still has work (a promotion, or a new trial). A `Wait` with
            // nothing running could never change, so it ends the study too.
            let next = if self.sched_done {
                Next::Done
            } else {
                {
                    let can_start = self.can_start();
                    self.scheduler.next(
                        &History {
                            trials: &self.sched,
                            direction: self.record.spec.objective.direction,
                        },
                        can_start,
                    )
                }
            };
            match next {
                Next::Done | Next::Wait => {
                    let reason = if self.exhausted
                        || self.history.len() as u32 >= self.record.spec.search.max_trials
                    {
                        "max_trials"
                    } else {
                        "scheduler finished"
                    };
                    Some((StudyState::Completed, reason.to_string()))
                }
                Next::Promote { .. } | Next::New { .. } => None,
            }
        };
        let Some((state, reason)) = end else {
            return;
        };
        // Paused trials that were never promoted end with their value.
        let paused: Vec<u32> = self
            .sched
            .iter()
            .filter(|s| s.state == TrialState::Paused)
            .map(|s| s.number)
            .collect();
        let trial_state = stop_state(state == StudyState::Cancelled);
        for number in paused {
            if let Err(e) =
                self.stop_paused(number, trial_state, "not promoted before the study ended")
            {
                tracing::error!(study = %self.record.id, trial = number, error = %e, "cannot stop paused trial");
            }
        }
        match self
            .storage
            .end_study(self.record.id, state, &reason, now_ms())
        {
            Ok(r) => {
                tracing::info!(study = %self.record.id, state = %state, reason, resource_used = self.resource_used, "study ended");
                let _ = self.live.send(LiveEvent {
                    study: self.record.id.0,
                    trial: None,
                    kind: LiveKind::Study,
                    state: Some(state.to_string()),
                    step: None,
                    value: None,
                });
                self.record = r;
                self.ended = true;
                let keep = self.best_model.as_ref().map(|(c, _)| c);
                if let Err(e) = self.checkpoints.delete_study_except(self.record.id, keep) {
                    tracing::warn!(study = %self.record.id, error = %e, "cannot delete checkpoints");
                }
            }
            Err(e) => tracing::error!(study = %self.record.id, error = %e, "cannot end study"),
        }
    }
}

/// The budget of a trial's current segment; 0 in records of releases before
/// schedulers existed, which always trained to the full budget.
fn budget_of(t: &TrialRecord, max_resource: u32) -> u32 {
    if t.placement.budget == 0 {
        max_resource
    } else {
        t.placement.budget
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
