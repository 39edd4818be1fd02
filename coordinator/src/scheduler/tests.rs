//! Every scheduler, driven through simulated studies: nothing is lost, no
//! epoch is paid twice, budgets are milestones, and the same inputs give the
//! same decisions, also from a scheduler re-created mid-study (a coordinator
//! restart). Then the worked examples of each algorithm.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::sampler::mix;
use hpo_proto::study::ScheduleSpec;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const ALL: [SchedulerKind; 6] = SchedulerKind::ALL;

fn schedule(kind: SchedulerKind, r: u32, max: u32, eta: u32) -> ScheduleSpec {
    ScheduleSpec {
        algorithm: kind,
        min_resource: r,
        max_resource: max,
        reduction_factor: eta,
        grace_period: 2,
        min_trials: 3,
        ..ScheduleSpec::default()
    }
}

fn study(schedule: ScheduleSpec) -> StudySpec {
    let mut spec = StudySpec::parse(
        &format!(
            r#"
name = "s"
[objective]
metric = "loss"
direction = "minimize"
[search]
algorithm = "random"
max_trials = 10
[trainer]
kind = "simulated"
epochs = {}
[params]
a = {{ type = "float", low = 0.0, high = 1.0 }}
"#,
            schedule.max_resource
        ),
        "s.toml",
    )
    .unwrap();
    spec.schedule = schedule;
    spec
}

// ---------------------------------------------------------------------------
// The simulated study.

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Next {
        can_start: bool,
        answer: Next,
    },
    Report {
        number: u32,
        step: u32,
        decision: Decision,
    },
    Discard(Vec<u32>),
    Fail {
        number: u32,
        step: u32,
    },
}

#[derive(Debug, Clone)]
struct SimConfig {
    schedule: ScheduleSpec,
    direction: Direction,
    workers: usize,
    max_trials: u32,
    seed: u64,
    /// Every 7th trial advances one step per 5 ticks.
    stragglers: bool,
    /// Trials numbered 3 mod `fail_every` crash just before their budget.
    fail_every: Option<u32>,
    /// Ask a freshly created scheduler every question too and compare, and
    /// check ASHA's answers against a plain rendering of its rule (both slow).
    check_restart: bool,
}

impl SimConfig {
    fn new(kind: SchedulerKind, r: u32, max: u32, eta: u32) -> Self {
        SimConfig {
            schedule: schedule(kind, r, max, eta),
            direction: Direction::Maximize,
            workers: 4,
            max_trials: 60,
            seed: 7,
            stragglers: false,
            fail_every: None,
            check_restart: true,
        }
    }
}

struct Sim {
    cfg: SimConfig,
    spec: StudySpec,
    sched: Box<dyn Scheduler>,
    trials: Vec<SchedTrial>,
    slots: Vec<Option<u32>>,
    /// Steps each trial reported, in order, over all its runs.
    reported: Vec<Vec<u32>>,
    log: Vec<Event>,
    done: bool,
    ladder: Vec<u32>,
}

/// A trial's fixed quality in [0, 1).
fn quality(seed: u64, n: u32) -> f64 {
    ChaCha8Rng::seed_from_u64(mix(seed, u64::from(n))).r#gen::<f64>()
}

/// The objective of trial `n` at `step`: its quality, approached as it
/// trains, plus a little noise so rankings cross between rungs.
fn objective(seed: u64, direction: Direction, n: u32, step: u32) -> f64 {
    let noise = (mix(seed ^ 0x5eed, u64::from(n) << 20 | u64::from(step)) >> 11) as f64
        / (1u64 << 53) as f64;
    let v = quality(seed, n) * (1.0 - 0.5 / f64::from(step).sqrt()) + 0.02 * (noise - 0.5);
    match direction {
        Direction::Maximize => v,
        Direction::Minimize => 1.0 - v,
    }
}

impl Sim {
    fn new(cfg: SimConfig) -> Self {
        let spec = study(cfg.schedule.clone());
        let s = &cfg.schedule;
        Sim {
            sched: for_study(&spec, cfg.seed),
            spec,
            trials: Vec::new(),
            slots: vec![None; cfg.workers],
            reported: Vec::new(),
            log: Vec::new(),
            done: false,
            ladder: milestones(s.min_resource, s.max_resource, s.reduction_factor),
            cfg,
        }
    }

    fn kind(&self) -> SchedulerKind {
        self.cfg.schedule.algorithm
    }

    fn fresh(&self) -> Option<Box<dyn Scheduler>> {
        self.cfg
            .check_restart
            .then(|| for_study(&self.spec, self.cfg.seed))
    }

    fn ask_next(&mut self, can_start: bool) -> Next {
        let h = History {
            trials: &self.trials,
            direction: self.cfg.direction,
        };
        let answer = self.sched.next(&h, can_start);
        if let Some(mut f) = self.fresh() {
            assert_eq!(
                f.next(&h, can_start),
                answer,
                "a re-created scheduler decides otherwise"
            );
        }
        let asha = matches!(
            self.kind(),
            SchedulerKind::Asha | SchedulerKind::AsyncHyperband
        );
        if asha && self.cfg.check_restart {
            match self.asha_reference() {
                Some(p) => assert_eq!(answer, p, "ASHA skipped a promotion"),
                None => assert!(!matches!(answer, Next::Promote { .. }), "{answer:?}"),
            }
        }
        self.log.push(Event::Next { can_start, answer });
        answer
    }

    /// ASHA's promotion rule written plainly (sort every rung on every
    /// call): top rungs first, brackets in order, the best paused trial in
    /// the top `floor(c / η)` of its rung.
    fn asha_reference(&self) -> Option<Next> {
        let async_hb = self.kind() == SchedulerKind::AsyncHyperband;
        let s = &self.cfg.schedule;
        let brackets = if async_hb {
            s.brackets.unwrap_or(u32::MAX).min(self.ladder.len() as u32)
        } else {
            1
        };
        let eta = s.reduction_factor as usize;
        let d = self.cfg.direction;
        for level in (0..self.ladder.len() - 1).rev() {
            for b in 0..brackets as usize {
                let Some(i) = level.checked_sub(b) else {
                    continue;
                };
                let m = self.ladder[level];
                let mut rung: Vec<rank::Standing> = self
                    .trials
                    .iter()
                    .filter(|t| t.bracket as usize == b && t.value_at(m).is_some())
                    .map(|t| rank::standing(t, i as u32, m))
                    .collect();
                rung.sort_by(|x, y| rank::rank_cmp(d, x, y));
                let keep = rung.len() / eta;
                let found = rung[..keep].iter().find(|st| {
                    let t = &self.trials[st.1 as usize];
                    t.state == TrialState::Paused && t.rung as usize == i
                });
                if let Some(st) = found {
                    return Some(Next::Promote {
                        number: st.1,
                        rung: i as u32 + 1,
                        budget: self.ladder[level + 1],
                    });
                }
            }
        }
        None
    }

    fn discard(&mut self) {
        let h = History {
            trials: &self.trials,
            direction: self.cfg.direction,
        };
        let out = self.sched.discard(&h);
        if let Some(mut f) = self.fresh() {
            assert_eq!(
                f.discard(&h),
                out,
                "a re-created scheduler discards otherwise"
            );
        }
        if out.is_empty() {
            return;
        }
        for &n in &out {
            let t = &mut self.trials[n as usize];
            assert_eq!(
                t.state,
                TrialState::Paused,
                "discarded trial {n} is not paused"
            );
            t.state = TrialState::Stopped;
        }
        self.log.push(Event::Discard(out));
    }

    fn check_budget(&self, bracket: u32, rung: u32, budget: u32) {
        let max = self.cfg.schedule.max_resource;
        match self.kind() {
            SchedulerKind::None | SchedulerKind::Median => assert_eq!(budget, max),
            SchedulerKind::Asha | SchedulerKind::SuccessiveHalving => {
                assert_eq!(budget, self.ladder[rung as usize])
            }
            SchedulerKind::AsyncHyperband => {
                assert_eq!(budget, self.ladder[(bracket + rung) as usize])
            }
            SchedulerKind::Hyperband => {
                let s = &self.cfg.schedule;
                let b = s
                    .brackets
                    .unwrap_or(self.ladder.len() as u32)
                    .min(self.ladder.len() as u32);
                assert_eq!(budget, self.ladder[(bracket % b + rung) as usize])
            }
        }
    }

    /// ASHA's rule, checked apart from the scheduler: a promoted trial is
    /// among the best `floor(c / η)` of the trials of its bracket that
    /// reached its rung's milestone.
    fn check_asha_promotion(&self, number: u32, rung: u32) {
        let t = &self.trials[number as usize];
        let offset = match self.kind() {
            SchedulerKind::AsyncHyperband => t.bracket as usize,
            _ => 0,
        };
        let i = rung - 1;
        let m = self.ladder[offset + i as usize];
        let mut members: Vec<rank::Standing> = self
            .trials
            .iter()
            .filter(|u| u.bracket == t.bracket && u.value_at(m).is_some())
            .map(|u| rank::standing(u, i, m))
            .collect();
        let d = self.cfg.direction;
        members.sort_by(|a, b| rank::rank_cmp(d, a, b));
        let k = members.len() / self.cfg.schedule.reduction_factor as usize;
        assert!(
            members[..k].iter().any(|s| s.1 == number),
            "trial {number} promoted from outside the top {k} of {}",
            members.len()
        );
    }

    fn check_one_bracket_active(&self) {
        if !matches!(
            self.kind(),
            SchedulerKind::SuccessiveHalving | SchedulerKind::Hyperband
        ) {
            return;
        }
        let mut active = self.trials.iter().filter(|t| rank::active(t));
        if let Some(first) = active.next() {
            assert!(
                active.all(|t| t.bracket == first.bracket),
                "two bracket instances run at once"
            );
        }
    }

    /// Fills free slots the way the study task does.
    fn fill(&mut self) {
        for slot in 0..self.slots.len() {
            if self.done || self.slots[slot].is_some() {
                continue;
            }
            let can_start = (self.trials.len() as u32) < self.cfg.max_trials;
            match self.ask_next(can_start) {
                Next::New { bracket, budget } => {
                    assert!(can_start, "a new trial although the study may not add one");
                    self.check_budget(bracket, 0, budget);
                    let number = self.trials.len() as u32;
                    self.trials.push(SchedTrial {
                        number,
                        state: TrialState::Waiting,
                        bracket,
                        rung: 0,
                        budget,
                        values: Vec::new(),
                    });
                    self.reported.push(Vec::new());
                    self.discard();
                    self.trials[number as usize].state = TrialState::Running;
                    self.slots[slot] = Some(number);
                }
                Next::Promote {
                    number,
                    rung,
                    budget,
                } => {
                    let t = &self.trials[number as usize];
                    assert_eq!(
                        t.state,
                        TrialState::Paused,
                        "promoted trial {number} is not paused"
                    );
                    assert!(!self.slots.contains(&Some(number)));
                    assert_eq!(rung, t.rung + 1, "promotions climb one rung");
                    let reached = t.values.last().map_or(0, |v| v.0);
                    assert!(budget > reached, "a promotion must add budget");
                    self.check_budget(t.bracket, rung, budget);
                    let asha = matches!(
                        self.kind(),
                        SchedulerKind::Asha | SchedulerKind::AsyncHyperband
                    );
                    if asha && self.cfg.check_restart {
                        self.check_asha_promotion(number, rung);
                    }
                    let t = &mut self.trials[number as usize];
                    t.state = TrialState::Waiting;
                    t.rung = rung;
                    t.budget = budget;
                    self.discard();
                    self.trials[number as usize].state = TrialState::Running;
                    self.slots[slot] = Some(number);
                }
                Next::Wait => {
                    if matches!(
                        self.kind(),
                        SchedulerKind::Asha | SchedulerKind::AsyncHyperband
                    ) {
                        assert!(
                            !can_start,
                            "ASHA left a slot idle while it could start a trial"
                        );
                    }
                    break;
                }
                Next::Done => {
                    self.done = true;
                    break;
                }
            }
            self.check_one_bracket_active();
        }
    }

    fn speed(&self, n: u32) -> u64 {
        if self.cfg.stragglers && n.is_multiple_of(7) {
            5
        } else {
            1
        }
    }

    /// One step of trial `n`, and what follows from the scheduler's answer.
    fn step(&mut self, slot: usize, n: u32) {
        let max = self.cfg.schedule.max_resource;
        let t = &self.trials[n as usize];
        let step = t.values.last().map_or(1, |v| v.0 + 1);
        assert!(step <= t.budget, "trial {n} trains past its budget");
        if self
            .cfg
            .fail_every
            .is_some_and(|f| n % f == 3 % f && step == t.budget)
        {
            self.trials[n as usize].state = TrialState::Failed;
            self.slots[slot] = None;
            self.log.push(Event::Fail { number: n, step });
            self.discard();
            return;
        }
        let value = objective(self.cfg.seed, self.cfg.direction, n, step);
        self.trials[n as usize].values.push((step, value));
        self.reported[n as usize].push(step);
        let h = History {
            trials: &self.trials,
            direction: self.cfg.direction,
        };
        let decision = self.sched.on_report(&h, n, step, value);
        if let Some(mut f) = self.fresh() {
            assert_eq!(
                f.on_report(&h, n, step, value),
                decision,
                "a re-created scheduler answers otherwise"
            );
        }
        self.log.push(Event::Report {
            number: n,
            step,
            decision,
        });
        let budget = self.trials[n as usize].budget;
        let new_state = match decision {
            Decision::Continue if step >= max => Some(TrialState::Completed),
            Decision::Continue => {
                assert!(
                    step < budget,
                    "Continue at budget {budget} < {max} (trial {n})"
                );
                None
            }
            Decision::Pause => {
                assert!(
                    step == budget && budget < max,
                    "Pause off budget (trial {n}, step {step})"
                );
                Some(TrialState::Paused)
            }
            Decision::Stop => Some(TrialState::Stopped),
        };
        if let Some(state) = new_state {
            self.trials[n as usize].state = state;
            self.slots[slot] = None;
        }
        self.discard();
    }

    fn run(mut self) -> Self {
        let mut tick = 0u64;
        loop {
            self.fill();
            if self.slots.iter().all(Option::is_none) {
                assert!(self.done, "the scheduler waits with nothing running");
                break;
            }
            tick += 1;
            assert!(tick < 10_000_000, "the study does not end");
            for slot in 0..self.slots.len() {
                if let Some(n) = self.slots[slot]
                    && tick.is_multiple_of(self.speed(n))
                {
                    self.step(slot, n);
                }
            }
        }
        // Done stays Done, also for a re-created scheduler, also once the
        // study has stopped the trials still paused.
        for _ in 0..2 {
            assert_eq!(self.ask_next(false), Next::Done);
            for t in &mut self.trials {
                if t.state == TrialState::Paused {
                    t.state = TrialState::Stopped;
                }
            }
        }
        self
    }

    /// The trials of `bracket` that reported step `m`, best first.
    fn reached(&self, bracket: u32, m: u32) -> Vec<(f64, u32)> {
        let mut v: Vec<(f64, u32)> = self
            .trials
            .iter()
            .filter(|t| t.bracket == bracket)
            .filter_map(|t| t.value_at(m).map(|v| (v, t.number)))
            .collect();
        let d = self.cfg.direction;
        v.sort_by(|a, b| rank::rank_cmp(d, &(Some(a.0), a.1), &(Some(b.0), b.1)));
        v
    }
}

fn check_conformance(sim: &Sim) {
    let what = format!("{:?}", sim.cfg);
    assert!(sim.trials.len() as u32 <= sim.cfg.max_trials, "{what}");
    for (t, steps) in sim.trials.iter().zip(&sim.reported) {
        assert!(
            matches!(
                t.state,
                TrialState::Completed | TrialState::Stopped | TrialState::Failed
            ),
            "trial {} lost in state {} ({what})",
            t.number,
            t.state
        );
        let expect: Vec<u32> = (1..=steps.len() as u32).collect();
        assert_eq!(
            steps, &expect,
            "trial {} paid an epoch twice or skipped one ({what})",
            t.number
        );
    }
    assert!(
        sim.trials.iter().any(|t| t.state == TrialState::Completed),
        "no trial reached the full budget ({what})"
    );
}

fn configs() -> Vec<SimConfig> {
    let mut out = Vec::new();
    for kind in ALL {
        for direction in [Direction::Maximize, Direction::Minimize] {
            for (workers, stragglers, fail_every) in
                [(1, false, None), (4, true, None), (16, true, Some(5))]
            {
                for (r, max, eta) in [(1, 27, 3), (2, 20, 2)] {
                    let mut c = SimConfig::new(kind, r, max, eta);
                    c.direction = direction;
                    c.workers = workers;
                    c.stragglers = stragglers;
                    c.fail_every = fail_every;
                    out.push(c);
                }
            }
        }
    }
    out
}

#[test]
fn every_scheduler_loses_nothing_and_pays_no_epoch_twice() {
    for cfg in configs() {
        let sim = Sim::new(cfg).run();
        check_conformance(&sim);
    }
}

#[test]
fn every_scheduler_is_deterministic() {
    for cfg in configs() {
        let a = Sim::new(cfg.clone()).run();
        let mut other = cfg.clone();
        other.check_restart = false;
        let b = Sim::new(other).run();
        assert_eq!(a.log, b.log, "{cfg:?}");
        assert_eq!(a.trials, b.trials, "{cfg:?}");
    }
}

#[test]
fn for_study_picks_the_named_scheduler() {
    for kind in ALL {
        let s = for_study(&study(schedule(kind, 1, 9, 3)), 1);
        assert_eq!(s.name(), kind.as_str());
    }
}

#[test]
fn with_a_limited_bracket_count_hyperband_uses_the_first_brackets() {
    let mut cfg = SimConfig::new(SchedulerKind::Hyperband, 1, 27, 3);
    cfg.schedule.brackets = Some(2);
    cfg.workers = 8;
    cfg.max_trials = 27 + 12 + 27;
    let sim = Sim::new(cfg).run();
    check_conformance(&sim);
    // Instances 0, 1, 2 run brackets 0, 1, 0: first budgets 1, 3, 1.
    let mut firsts: Vec<(u32, u32)> = Vec::new();
    for e in &sim.log {
        if let Event::Next {
            answer: Next::New { bracket, budget },
            ..
        } = *e
            && firsts.last().is_none_or(|f| f.0 != bracket)
        {
            firsts.push((bracket, budget));
        }
    }
    assert_eq!(firsts, [(0, 1), (1, 3), (2, 1)]);
    let sizes: Vec<usize> = (0..3)
        .map(|k| sim.trials.iter().filter(|t| t.bracket == k).count())
        .collect();
    assert_eq!(sizes, [27, 12, 27]);
    check_halving(&sim, 1, &[(12, 3), (4, 9), (1, 27)]);
}

#[test]
fn async_hyperband_draws_brackets_by_size_and_only_the_allowed_ones() {
    let mut cfg = SimConfig::new(SchedulerKind::AsyncHyperband, 1, 81, 3);
    cfg.workers = 8;
    cfg.max_trials = 400;
    cfg.check_restart = false;
    let sim = Sim::new(cfg.clone()).run();
    check_conformance(&sim);
    let mut count = [0u32; 5];
    for t in &sim.trials {
        count[t.bracket as usize] += 1;
    }
    // Weights 81, 34, 15, 8, 5 of 143: bracket 0 gets the most, 4 the least.
    assert!(
        count[0] > count[1] && count[1] > count[2] && count[2] > count[4],
        "{count:?}"
    );
    // Within a bracket nobody is promoted past R, and bracket 4 trains to R.
    assert!(
        sim.trials.iter().filter(|t| t.bracket == 4).all(|t| t
            .values
            .first()
            .is_some_and(|v| v.0 == 1)
            && t.budget == 81)
    );
    cfg.schedule.brackets = Some(2);
    let sim = Sim::new(cfg).run();
    assert!(sim.trials.iter().all(|t| t.bracket < 2));
    check_conformance(&sim);
}

// ---------------------------------------------------------------------------
// Bracket arithmetic.

fn table(plans: &[BracketPlan]) -> Vec<Vec<(u32, u32)>> {
    plans
        .iter()
        .map(|p| p.rungs.iter().map(|r| (r.n, r.resource)).collect())
        .collect()
}

#[test]
fn hyperband_brackets_match_the_papers_table() {
    // Li et al. 2018, Table 1: η = 3, R = 81.
    assert_eq!(milestones(1, 81, 3), [1, 3, 9, 27, 81]);
    assert_eq!(
        table(&hyperband_brackets(1, 81, 3)),
        vec![
            vec![(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)],
            vec![(34, 3), (11, 9), (3, 27), (1, 81)],
            vec![(15, 9), (5, 27), (1, 81)],
            vec![(8, 27), (2, 81)],
            vec![(5, 81)],
        ]
    );
}

#[test]
fn hyperband_brackets_with_eta_two() {
    // s_max = 4; n = ceil(5/(s+1) · 2^s): s=4: 16, s=3: ceil(10) = 10,
    // s=2: ceil(6.67) = 7, s=1: ceil(5) = 5, s=0: 5; each rung keeps
    // floor(n/2).
    assert_eq!(milestones(1, 16, 2), [1, 2, 4, 8, 16]);
    assert_eq!(
        table(&hyperband_brackets(1, 16, 2)),
        vec![
            vec![(16, 1), (8, 2), (4, 4), (2, 8), (1, 16)],
            vec![(10, 2), (5, 4), (2, 8), (1, 16)],
            vec![(7, 4), (3, 8), (1, 16)],
            vec![(5, 8), (2, 16)],
            vec![(5, 16)],
        ]
    );
}

#[test]
fn when_r_is_no_power_of_eta_times_r_the_top_rung_is_r() {
    // s_max = levels(1, 52, 3) = 3 (27 <= 52 < 81): four rungs, the last
    // one the full budget in place of 27.
    assert_eq!(milestones(1, 52, 3), [1, 3, 9, 52]);
    assert_eq!(
        table(&hyperband_brackets(1, 52, 3)),
        vec![
            vec![(27, 1), (9, 3), (3, 9), (1, 52)],
            vec![(12, 3), (4, 9), (1, 52)],
            vec![(6, 9), (2, 52)],
            vec![(4, 52)],
        ]
    );
    assert_eq!(milestones(2, 20, 2), [2, 4, 8, 20]);
    assert_eq!(milestones(3, 3, 3), [3]);
    assert_eq!(milestones(2, 5, 3), [5]);
}

// ---------------------------------------------------------------------------
// Synchronous successive halving and Hyperband.

fn check_halving(sim: &Sim, bracket: u32, rungs: &[(u32, u32)]) {
    for (i, &(n, m)) in rungs.iter().enumerate() {
        let here = sim.reached(bracket, m);
        assert_eq!(here.len() as u32, n, "bracket {bracket} rung {i} at {m}");
        if let Some(&(_, next)) = rungs.get(i + 1) {
            let promoted: Vec<u32> = sim.reached(bracket, next).iter().map(|e| e.1).collect();
            let mut best: Vec<u32> = here[..promoted.len()].iter().map(|e| e.1).collect();
            let mut promoted = promoted;
            best.sort_unstable();
            promoted.sort_unstable();
            assert_eq!(
                promoted, best,
                "bracket {bracket}: promoted from rung {i} are its best"
            );
        }
    }
}

#[test]
fn successive_halving_keeps_the_best_third_of_each_rung() {
    for direction in [Direction::Maximize, Direction::Minimize] {
        for (max, sizes) in [
            (27, vec![(27, 1), (9, 3), (3, 9), (1, 27)]),
            (81, vec![(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)]),
        ] {
            let mut cfg = SimConfig::new(SchedulerKind::SuccessiveHalving, 1, max, 3);
            cfg.direction = direction;
            cfg.workers = 100;
            cfg.max_trials = max;
            cfg.stragglers = true;
            let sim = Sim::new(cfg).run();
            check_conformance(&sim);
            check_halving(&sim, 0, &sizes);
            assert!(sim.trials.iter().all(|t| t.bracket == 0));
        }
    }
}

#[test]
fn successive_halving_repeats_its_bracket_numbering_instances() {
    let mut cfg = SimConfig::new(SchedulerKind::SuccessiveHalving, 1, 9, 3);
    cfg.workers = 5;
    cfg.max_trials = 9 * 3 + 4;
    let sim = Sim::new(cfg).run();
    check_conformance(&sim);
    for k in 0..3 {
        check_halving(&sim, k, &[(9, 1), (3, 3), (1, 9)]);
    }
    // The last instance is cut short at 4 trials: it still trains its best
    // to the full budget.
    check_halving(&sim, 3, &[(4, 1), (1, 3), (1, 9)]);
}

#[test]
fn hyperband_runs_the_papers_brackets_in_turn() {
    let mut cfg = SimConfig::new(SchedulerKind::Hyperband, 1, 81, 3);
    cfg.workers = 40;
    cfg.max_trials = 81 + 34 + 15 + 8 + 5;
    cfg.stragglers = true;
    cfg.check_restart = false;
    let sim = Sim::new(cfg).run();
    check_conformance(&sim);
    for (k, plan) in hyperband_brackets(1, 81, 3).iter().enumerate() {
        let rungs: Vec<(u32, u32)> = plan.rungs.iter().map(|r| (r.n, r.resource)).collect();
        check_halving(&sim, k as u32, &rungs);
    }
}

#[test]
fn synchronous_halving_idles_while_a_rung_waits_for_a_straggler() {
    let mut cfg = SimConfig::new(SchedulerKind::SuccessiveHalving, 1, 27, 3);
    cfg.workers = 4;
    cfg.stragglers = true;
    let sim = Sim::new(cfg.clone()).run();
    let waits = sim
        .log
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Next {
                    answer: Next::Wait,
                    can_start: true
                }
            )
        })
        .count();
    assert!(waits > 0, "synchronous halving never waited");
    // ASHA in the same study never does.
    cfg.schedule.algorithm = SchedulerKind::Asha;
    let sim = Sim::new(cfg).run();
    assert!(!sim.log.iter().any(|e| matches!(
        e,
        Event::Next {
            answer: Next::Wait,
            can_start: true
        }
    )));
}

#[test]
fn synchronous_rungs_count_failed_trials_as_done_and_worst() {
    let mut cfg = SimConfig::new(SchedulerKind::SuccessiveHalving, 1, 9, 3);
    cfg.workers = 9;
    cfg.max_trials = 9;
    cfg.fail_every = Some(4); // trials 3 and 7 crash before their first rung
    let sim = Sim::new(cfg).run();
    check_conformance(&sim);
    assert_eq!(sim.trials[3].state, TrialState::Failed);
    assert_eq!(sim.trials[7].state, TrialState::Failed);
    // Rung 0 had 9 members, so 3 are promoted, from the 7 that reached it.
    let promoted = sim.reached(0, 3);
    assert_eq!(promoted.len(), 3);
    assert!(promoted.iter().all(|e| e.1 != 3 && e.1 != 7));
}

#[test]
fn discard_stops_the_losers_of_a_complete_rung_only() {
    let ladder = [1, 3, 9];
    let mk = |n: u32, state, rung: u32, v: &[f64]| SchedTrial {
        number: n,
        state,
        bracket: 0,
        rung,
        budget: ladder[rung as usize],
        values: v
            .iter()
            .enumerate()
            .map(|(i, &x)| (i as u32 + 1, x))
            .collect(),
    };
    let mut s =
        SyncHyperband::successive_halving(&schedule(SchedulerKind::SuccessiveHalving, 1, 9, 3));
    let mut trials: Vec<SchedTrial> = (0..9)
        .map(|n| mk(n, TrialState::Paused, 0, &[f64::from(n)]))
        .collect();
    trials[4].state = TrialState::Running;
    let mut h = |t: &[SchedTrial]| -> Vec<u32> {
        s.discard(&History {
            trials: t,
            direction: Direction::Maximize,
        })
    };
    assert!(h(&trials).is_empty(), "rung 0 is not complete");
    trials[4].state = TrialState::Paused;
    // Complete: the best three are 8, 7, 6; the rest lose.
    assert_eq!(h(&trials), [0, 1, 2, 3, 4, 5]);
    let mut s2 =
        SyncHyperband::successive_halving(&schedule(SchedulerKind::SuccessiveHalving, 1, 9, 3));
    let next = s2.next(
        &History {
            trials: &trials,
            direction: Direction::Maximize,
        },
        true,
    );
    assert_eq!(
        next,
        Next::Promote {
            number: 8,
            rung: 1,
            budget: 3
        }
    );
}

// ---------------------------------------------------------------------------
// ASHA.

#[test]
fn asha_promotes_the_best_of_the_first_eta_trials() {
    for direction in [Direction::Maximize, Direction::Minimize] {
        let mut cfg = SimConfig::new(SchedulerKind::Asha, 1, 27, 3);
        cfg.workers = 1;
        cfg.direction = direction;
        let sim = Sim::new(cfg).run();
        check_conformance(&sim);
        let answers: Vec<Next> = sim
            .log
            .iter()
            .filter_map(|e| match e {
                Event::Next { answer, .. } => Some(*answer),
                _ => None,
            })
            .collect();
        let first = answers
            .iter()
            .position(|a| matches!(a, Next::Promote { .. }))
            .unwrap();
        assert_eq!(first, 3, "three new trials come before the first promotion");
        let best = sim.trials[..3]
            .iter()
            .map(|t| (t.value_at(1).unwrap(), t.number))
            .reduce(|a, b| if direction.better(b.0, a.0) { b } else { a })
            .unwrap()
            .1;
        assert_eq!(
            answers[3],
            Next::Promote {
                number: best,
                rung: 1,
                budget: 3
            }
        );
    }
}

#[test]
fn asha_promotes_only_the_top_fraction_of_each_rung() {
    let mut cfg = SimConfig::new(SchedulerKind::Asha, 1, 27, 3);
    cfg.workers = 6;
    cfg.max_trials = 90;
    cfg.stragglers = true;
    let sim = Sim::new(cfg).run();
    check_conformance(&sim);
    // Every promotion was checked against the rule as it happened (see
    // `check_asha_promotion`); each rung promoted someone.
    for m in [3, 9, 27] {
        assert!(!sim.reached(0, m).is_empty(), "nobody reached {m}");
    }
}

#[test]
fn asha_ranks_a_failed_trial_last_and_never_promotes_it() {
    let mk = |n: u32, state, v: f64| SchedTrial {
        number: n,
        state,
        bracket: 0,
        rung: 0,
        budget: 1,
        values: vec![(1, v)],
    };
    let trials = vec![
        mk(0, TrialState::Failed, 9.0),
        mk(1, TrialState::Paused, 1.0),
        mk(2, TrialState::Paused, 2.0),
    ];
    let mut s = Asha::new(&schedule(SchedulerKind::Asha, 1, 9, 3));
    let h = History {
        trials: &trials,
        direction: Direction::Maximize,
    };
    assert_eq!(
        s.next(&h, false),
        Next::Promote {
            number: 2,
            rung: 1,
            budget: 3
        }
    );
}

// ---------------------------------------------------------------------------
// Median stopping rule.

fn median_history(others: &[&[f64]], own: &[f64]) -> Vec<SchedTrial> {
    let mk = |n: usize, v: &[f64], state| SchedTrial {
        number: n as u32,
        state,
        bracket: 0,
        rung: 0,
        budget: 10,
        values: v
            .iter()
            .enumerate()
            .map(|(i, &x)| (i as u32 + 1, x))
            .collect(),
    };
    let mut t: Vec<SchedTrial> = others
        .iter()
        .enumerate()
        .map(|(n, v)| mk(n, v, TrialState::Completed))
        .collect();
    t.push(mk(others.len(), own, TrialState::Running));
    t
}

fn median_says(direction: Direction, others: &[&[f64]], own: &[f64]) -> Decision {
    let trials = median_history(others, own);
    let mut s = MedianStopping::new(&schedule(SchedulerKind::Median, 1, 10, 3));
    let h = History {
        trials: &trials,
        direction,
    };
    let step = own.len() as u32;
    s.on_report(&h, trials.len() as u32 - 1, step, own[own.len() - 1])
}

#[test]
fn median_stops_a_trial_worse_than_the_median_after_the_grace_period() {
    use Decision::{Continue, Stop};
    let others: [&[f64]; 3] = [&[0.1, 0.5], &[0.2, 0.6], &[0.3, 0.7]];
    let max = Direction::Maximize;
    // Median at step 2 is 0.6.
    assert_eq!(median_says(max, &others, &[0.1, 0.55]), Stop);
    assert_eq!(median_says(max, &others, &[0.1, 0.65]), Continue);
    assert_eq!(
        median_says(max, &others, &[0.1, 0.6]),
        Continue,
        "equal is not worse"
    );
    // Its best so far counts, not its last value.
    assert_eq!(median_says(max, &others, &[0.9, 0.1]), Continue);
    // Grace period 2: nothing is stopped at step 1.
    assert_eq!(median_says(max, &others, &[0.0]), Continue);
    // Fewer than min_trials (3) others at this step: no verdict.
    assert_eq!(median_says(max, &others[..2], &[0.1, 0.0]), Continue);
    let min = Direction::Minimize;
    assert_eq!(median_says(min, &others, &[0.9, 0.65]), Stop);
    assert_eq!(median_says(min, &others, &[0.9, 0.55]), Continue);
    // Four others: the median is the mean of the middle two (0.6 and 0.7).
    let four: [&[f64]; 4] = [&[0.1, 0.5], &[0.2, 0.6], &[0.3, 0.7], &[0.3, 0.8]];
    assert_eq!(median_says(max, &four, &[0.1, 0.64]), Stop);
    assert_eq!(median_says(max, &four, &[0.1, 0.65]), Continue);
    // A diverged trial is stopped.
    assert_eq!(median_says(max, &others, &[f64::NAN, f64::NAN]), Stop);
}

#[test]
fn median_cache_follows_a_step_reported_again() {
    let others: [&[f64]; 3] = [&[0.1, 0.5], &[0.2, 0.6], &[0.3, 0.7]];
    let mut trials = median_history(&others, &[0.1, 0.55]);
    let mut s = MedianStopping::new(&schedule(SchedulerKind::Median, 1, 10, 3));
    let dir = Direction::Maximize;
    let ask = |s: &mut MedianStopping, t: &[SchedTrial], n: u32, step: u32| {
        let h = History {
            trials: t,
            direction: dir,
        };
        let v = t[n as usize].value_at(step).unwrap();
        let mut fresh = MedianStopping::new(&schedule(SchedulerKind::Median, 1, 10, 3));
        let answer = s.on_report(&h, n, step, v);
        assert_eq!(fresh.on_report(&h, n, step, v), answer);
        answer
    };
    assert_eq!(ask(&mut s, &trials, 3, 2), Decision::Stop);
    // Trial 2 is run again (another attempt) and reports step 2 lower:
    // the median at step 2 drops to 0.5.
    trials[2].values[1].1 = 0.4;
    trials[2].state = TrialState::Running;
    assert_eq!(ask(&mut s, &trials, 2, 2), Decision::Stop);
    assert_eq!(ask(&mut s, &trials, 3, 2), Decision::Continue);
    // Two new trials join with high values at step 2: the median of trial
    // 3's others rises to 0.6.
    for n in [4, 5] {
        trials.push(SchedTrial {
            number: n,
            state: TrialState::Running,
            bracket: 0,
            rung: 0,
            budget: 10,
            values: vec![(1, 0.0), (2, 0.9)],
        });
        assert_eq!(ask(&mut s, &trials, n, 2), Decision::Continue);
    }
    assert_eq!(ask(&mut s, &trials, 3, 2), Decision::Stop);
}

#[test]
fn none_trains_everything_to_the_full_budget() {
    let mut cfg = SimConfig::new(SchedulerKind::None, 1, 9, 3);
    cfg.workers = 3;
    cfg.max_trials = 7;
    let sim = Sim::new(cfg).run();
    check_conformance(&sim);
    assert!(
        sim.trials
            .iter()
            .all(|t| t.state == TrialState::Completed && t.values.len() == 9)
    );
}

/// A study of the simulator's size: `cargo test --release -- --ignored
/// large_studies --nocapture` prints the time each scheduler takes.
#[test]
#[ignore]
fn large_studies() {
    // Many small brackets, then one wide one (2048 trials in rung 0).
    let shapes = ALL
        .into_iter()
        .map(|k| (k, 81, 3))
        .chain(ALL[2..].iter().map(|&k| (k, 2048, 2)));
    for (kind, max, eta) in shapes {
        let mut cfg = SimConfig::new(kind, 1, max, eta);
        cfg.workers = 64;
        cfg.max_trials = 10_000;
        cfg.stragglers = true;
        cfg.check_restart = false;
        let t0 = std::time::Instant::now();
        let sim = Sim::new(cfg).run();
        let calls = sim.log.len();
        println!(
            "{:>18} R={max:<4}: {:>6} trials, {:>8} events, {:?}",
            kind.as_str(),
            sim.trials.len(),
            calls,
            t0.elapsed()
        );
        check_conformance(&sim);
    }
}

#[test]
fn rank_keys_order_like_rank_cmp() {
    let values = [
        Some(-f64::INFINITY),
        Some(-2.5),
        Some(-1.0),
        Some(-0.0),
        Some(0.0),
        Some(1e-300),
        Some(1.0),
        Some(3.0),
        Some(f64::INFINITY),
        None,
    ];
    for direction in [Direction::Maximize, Direction::Minimize] {
        for (i, &a) in values.iter().enumerate() {
            for (j, &b) in values.iter().enumerate() {
                for (na, nb) in [(1, 2), (2, 1), (1, 1)] {
                    let (x, y) = ((a, na), (b, nb));
                    if i == j && na == nb {
                        continue;
                    }
                    let keys =
                        rank::RankKey::new(direction, x).cmp(&rank::RankKey::new(direction, y));
                    assert_eq!(keys, rank::rank_cmp(direction, &x, &y), "{x:?} {y:?}");
                }
            }
        }
    }
}
