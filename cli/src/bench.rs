//! `hpo bench`: a whole distributed study in seconds. The real engine (study
//! task, sampler, scheduler, pause and resume with checkpoints) runs on a
//! tokio runtime whose clock is paused: simulated workers "train" by
//! sleeping the time each step costs in the table, and tokio jumps the
//! clock to the next wake-up whenever every task waits. No gRPC: the workers
//! call the engine directly, which is the layer every gRPC handler calls.

use crate::InvalidStudy;
use anyhow::{Context, Result, bail};
use hpo_coordinator::engine::{Engine, EngineConfig};
use hpo_coordinator::storage::MemoryStorage;
use hpo_proto::study::SchedulerKind;
use hpo_proto::{Assignment, Decision, Direction, Outcome, StudySpec, StudyState, WorkerId};
use hpo_worker::table::Table;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// A study file whose trainer is `table`.
    study: PathBuf,
    /// Simulated workers (one slot each).
    #[arg(long, default_value_t = 64)]
    workers: u32,
    /// Schedulers to compare (default: the study's); comma-separated.
    #[arg(long, value_delimiter = ',')]
    scheduler: Vec<String>,
    /// Samplers to pair with each scheduler (default: the study's);
    /// comma-separated. Runs are labelled `sampler+scheduler` then.
    #[arg(long, value_delimiter = ',')]
    sampler: Vec<String>,
    /// The runs "epochs to ...'s final best" is measured against: a
    /// scheduler, or a `sampler+scheduler` label.
    #[arg(long, default_value = "none")]
    baseline: String,
    /// Curve tables to run on (default: the study's `trainer.dataset`).
    #[arg(long)]
    dataset: Vec<PathBuf>,
    /// Runs per (table, scheduler), with seeds 1..=N.
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Total resource (epochs) per run (default: the study's
    /// `search.max_total_resource`).
    #[arg(long)]
    budget: Option<u64>,
    /// Print the comparison as a Markdown table.
    #[arg(long)]
    markdown: bool,
    /// Print every run's figures as one JSON object per line instead.
    #[arg(long, conflicts_with = "markdown")]
    json: bool,
}

/// What one simulated run measured.
#[derive(Debug, Clone)]
struct RunResult {
    dataset: String,
    scheduler: String,
    seed: u64,
    direction: Direction,
    /// Best objective of a trial trained to the full budget.
    best: Option<f64>,
    regret: Option<f64>,
    /// Simulated seconds until the final best was found.
    time_to_best: f64,
    /// Simulated seconds until the study ended.
    wall: f64,
    /// Resource units (epochs) trained.
    epochs: u64,
    /// Busy time / (workers × time), until the resource budget was spent.
    utilisation: f64,
    trials: usize,
    /// (simulated seconds, epochs so far, best so far), at each improvement.
    trajectory: Vec<(f64, u64, f64)>,
}

pub fn run(args: BenchArgs) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&args.study)
        .map_err(|e| InvalidStudy(format!("{}: cannot read: {e}", args.study.display())))?;
    let name = args
        .study
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "study".into());
    let spec = StudySpec::parse(&text, &name).map_err(|e| InvalidStudy(e.to_string()))?;
    if spec.trainer.kind != "table" {
        return Err(InvalidStudy(format!(
            "{name}: trainer.kind: hpo bench simulates the `table` trainer, got `{}`",
            spec.trainer.kind
        ))
        .into());
    }
    let configs = match spec.trainer.settings.get("configs") {
        Some(hpo_proto::ParamValue::Categorical(p)) => PathBuf::from(p),
        _ => {
            return Err(InvalidStudy(format!(
                "{name}: trainer.configs: missing (expected the path of the configurations CSV)"
            ))
            .into());
        }
    };
    let datasets = if args.dataset.is_empty() {
        vec![PathBuf::from(&spec.trainer.dataset)]
    } else {
        args.dataset.clone()
    };
    let schedulers: Vec<SchedulerKind> = if args.scheduler.is_empty() {
        vec![spec.schedule.algorithm]
    } else {
        args.scheduler
            .iter()
            .map(|s| {
                SchedulerKind::parse(s.trim()).ok_or_else(|| {
                    let names: Vec<&str> = SchedulerKind::ALL.iter().map(|k| k.as_str()).collect();
                    anyhow::anyhow!(
                        "--scheduler: unknown scheduler `{s}` (expected one of: {})",
                        names.join(", ")
                    )
                })
            })
            .collect::<Result<_>>()?
    };
    let samplers: Vec<Option<String>> = if args.sampler.is_empty() {
        vec![None]
    } else {
        args.sampler
            .iter()
            .map(|s| Some(s.trim().to_string()))
            .collect()
    };
    let mut results = Vec::new();
    for dataset in &datasets {
        let table = Table::cached(&configs, dataset)
            .with_context(|| format!("cannot load the table {}", dataset.display()))?;
        let reference = table.best_final(&spec.objective.metric, spec.objective.direction);
        for kind in &schedulers {
            for sampler in &samplers {
                for seed in 1..=args.seeds {
                    let study =
                        variant(&text, *kind, sampler.as_deref(), dataset, seed, args.budget)?;
                    let started = std::time::Instant::now();
                    let mut r = simulate(&study, &name, args.workers, &table)?;
                    r.dataset = dataset_name(dataset);
                    r.scheduler = match sampler {
                        Some(s) => format!("{s}+{}", kind.as_str()),
                        None => kind.as_str().to_string(),
                    };
                    r.seed = seed;
                    r.regret = match (reference, r.best) {
                        (Some(best), Some(found)) => Some(match spec.objective.direction {
                            Direction::Maximize => best - found,
                            Direction::Minimize => found - best,
                        }),
                        _ => None,
                    };
                    eprintln!(
                        "{} {:<18} seed {seed}: regret {}, {} epochs, {} trials, simulated {}, utilisation {:.1}% ({:.2}s real)",
                        r.dataset,
                        r.scheduler,
                        opt(r.regret, 3),
                        r.epochs,
                        r.trials,
                        hours(r.wall),
                        100.0 * r.utilisation,
                        started.elapsed().as_secs_f64()
                    );
                    results.push(r);
                }
            }
        }
    }
    if args.json {
        for r in &results {
            println!("{}", run_json(r));
        }
    } else if results.len() == 1 {
        print_single(&results[0], &spec);
    } else {
        print_comparison(&results, args.markdown, &args.baseline);
    }
    Ok(ExitCode::SUCCESS)
}

fn dataset_name(p: &Path) -> String {
    let n = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    n.trim_end_matches(".gz")
        .trim_end_matches(".csv")
        .trim_start_matches("task_")
        .to_string()
}

/// The study file with the scheduler, table, seed and budget of one run.
fn variant(
    text: &str,
    kind: SchedulerKind,
    sampler: Option<&str>,
    dataset: &Path,
    seed: u64,
    budget: Option<u64>,
) -> Result<String> {
    let mut doc: toml::Table = text.parse().context("study file")?;
    doc.insert("seed".into(), toml::Value::Integer(seed as i64));
    if let Some(toml::Value::Table(t)) = doc.get_mut("trainer") {
        t.insert(
            "dataset".into(),
            toml::Value::String(dataset.display().to_string()),
        );
    }
    if let Some(toml::Value::Table(t)) = doc.get_mut("search") {
        if let Some(b) = budget {
            t.insert("max_total_resource".into(), toml::Value::Integer(b as i64));
        }
        if let Some(s) = sampler {
            t.insert("algorithm".into(), toml::Value::String(s.into()));
        }
    }
    let schedule = doc
        .entry("schedule")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(t) = schedule {
        t.insert(
            "algorithm".into(),
            toml::Value::String(kind.as_str().into()),
        );
    }
    Ok(toml::to_string(&doc)?)
}

/// Shared by the simulated workers.
#[derive(Default)]
struct Tally {
    /// (end, duration) of every simulated step, in simulated seconds.
    steps: Vec<(f64, f64)>,
    /// When the study's resource budget ran out: the end of the search.
    /// Steps after it are the drain of trials told to stop.
    spent_at: Option<f64>,
    epochs: u64,
    best: Option<f64>,
    trajectory: Vec<(f64, u64, f64)>,
}

fn simulate(study: &str, name: &str, workers: u32, table: &Arc<Table>) -> Result<RunResult> {
    let spec = StudySpec::parse(study, name).map_err(|e| InvalidStudy(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    runtime.block_on(async {
        let engine = Engine::start(
            Arc::new(MemoryStorage::new()),
            EngineConfig {
                // Simulated workers never vanish; ticks only check leases.
                lease_ttl: Duration::from_secs(365 * 86_400),
                tick: Duration::from_secs(3600),
                ..EngineConfig::default()
            },
        )?;
        let id = engine.submit(study, name).await?;
        let start = Instant::now();
        let tally = Arc::new(Mutex::new(Tally::default()));
        let wake = Arc::new(Notify::new());
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..workers {
            let worker = Worker {
                budget: spec.search.max_total_resource,
                engine: engine.clone(),
                id: WorkerId(format!("sim-{w}")),
                table: table.clone(),
                tally: tally.clone(),
                wake: wake.clone(),
                direction: spec.objective.direction,
                metric: spec.objective.metric.clone(),
                start,
            };
            engine.register(&worker.id, "simulated", vec!["sim:0".into()])?;
            tasks.spawn(worker.run(id));
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        let wall = start.elapsed().as_secs_f64();
        let info = engine.study_info(id)?;
        engine.shutdown().await;
        let t = tally.lock().unwrap_or_else(|e| e.into_inner());
        // Utilisation over the search itself: up to the moment its budget
        // was spent (after that, running trials only finish their epoch).
        let until = t.spent_at.unwrap_or(wall).min(wall);
        let busy: f64 = t
            .steps
            .iter()
            .map(|(end, cost)| (end.min(until) - (end - cost)).max(0.0))
            .sum();
        Ok(RunResult {
            dataset: String::new(),
            scheduler: String::new(),
            seed: 0,
            direction: spec.objective.direction,
            best: t.best,
            regret: None,
            time_to_best: t.trajectory.last().map_or(0.0, |p| p.0),
            wall,
            epochs: t.epochs,
            utilisation: if until > 0.0 {
                busy / (f64::from(workers) * until)
            } else {
                0.0
            },
            trials: info.counts.finished() as usize,
            trajectory: t.trajectory.clone(),
        })
    })
}

struct Worker {
    budget: Option<u64>,
    engine: Engine,
    id: WorkerId,
    table: Arc<Table>,
    tally: Arc<Mutex<Tally>>,
    wake: Arc<Notify>,
    direction: Direction,
    metric: String,
    start: Instant,
}

impl Worker {
    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn run(self, study: hpo_proto::StudyId) -> Result<()> {
        loop {
            // Armed before asking, so a slot freed in between is not missed.
            let freed = self.wake.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.engine.acquire(&self.id, "sim", None).await? {
                Some(a) => {
                    self.segment(&a).await?;
                    self.wake.notify_waiters();
                }
                None => {
                    if self.engine.study_state(study)? != StudyState::Running {
                        self.wake.notify_waiters();
                        return Ok(());
                    }
                    // Idle until a slot frees up (or a minute, as a safety net).
                    let _ = tokio::time::timeout(Duration::from_secs(60), freed).await;
                }
            }
        }
    }

    /// Trains one segment of a trial: from its checkpoint to its budget.
    async fn segment(&self, a: &Assignment) -> Result<()> {
        let config = self.table.nearest(&a.params)?;
        let start = match &a.resume {
            Some(c) => {
                let bytes = self.engine.get_checkpoint(&self.id, a.attempt, c).await?;
                if bytes != checkpoint(config, c.step) {
                    bail!("trial {} resumed from another checkpoint", a.trial);
                }
                c.step
            }
            None => 0,
        };
        for step in start + 1..=a.budget {
            let cost = self.table.step_cost(config, step);
            if cost > 0.0 {
                tokio::time::sleep(Duration::from_secs_f64(cost)).await;
            }
            let Some(values) = self.table.metrics(config, step) else {
                let reason = format!("the table has no step {step}");
                self.engine
                    .finish(&self.id, a.trial, a.attempt, Outcome::Failed(reason))
                    .await?;
                return Ok(());
            };
            {
                let now = self.start.elapsed().as_secs_f64();
                let mut t = self.tally();
                t.steps.push((now, cost));
                t.epochs += 1;
                if self.budget.is_some_and(|b| t.epochs >= b) && t.spent_at.is_none() {
                    t.spent_at = Some(now);
                }
            }
            let decision = self
                .engine
                .report(&self.id, a.trial, a.attempt, step, values)
                .await?;
            match decision {
                Decision::Continue if step < a.budget => continue,
                Decision::Continue => break,
                Decision::Stop => {
                    self.engine
                        .finish(&self.id, a.trial, a.attempt, Outcome::Completed)
                        .await?;
                    return Ok(());
                }
                Decision::Pause => {
                    let bytes = checkpoint(config, step);
                    let c = hpo_proto::CheckpointRef {
                        trial: a.trial,
                        attempt: a.attempt,
                        step,
                        size: bytes.len() as u64,
                        crc32: crc32(&bytes),
                    };
                    self.engine.put_checkpoint(&self.id, c, bytes).await?;
                    self.engine
                        .finish(&self.id, a.trial, a.attempt, Outcome::Paused { step })
                        .await?;
                    return Ok(());
                }
            }
        }
        let last = a.budget;
        let value = self
            .table
            .metrics(config, last)
            .and_then(|m| m.get(&self.metric).copied());
        let state = self
            .engine
            .finish(&self.id, a.trial, a.attempt, Outcome::Completed)
            .await?;
        if state == hpo_proto::TrialState::Completed
            && last == a.max_resource
            && let Some(v) = value
        {
            let now = self.start.elapsed().as_secs_f64();
            let mut t = self.tally();
            if t.best.is_none_or(|b| self.direction.better(v, b)) {
                t.best = Some(v);
                let epochs = t.epochs;
                t.trajectory.push((now, epochs, v));
            }
        }
        Ok(())
    }
}

fn checkpoint(config: usize, step: u32) -> Vec<u8> {
    format!("{config}:{step}").into_bytes()
}

fn crc32(bytes: &[u8]) -> u32 {
    // The engine checks it like any upload; the same function as workers use.
    crc32fast::hash(bytes)
}

fn run_json(r: &RunResult) -> serde_json::Value {
    serde_json::json!({
        "dataset": r.dataset,
        "scheduler": r.scheduler,
        "seed": r.seed,
        "best": r.best,
        "regret": r.regret,
        "time_to_best_s": r.time_to_best,
        "wall_s": r.wall,
        "epochs": r.epochs,
        "utilisation": r.utilisation,
        "trials": r.trials,
        "trajectory": r.trajectory.iter().map(|(t, e, v)| serde_json::json!({"time_s": t, "epochs": e, "best": v})).collect::<Vec<_>>(),
    })
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

fn hours(secs: f64) -> String {
    if secs >= 3600.0 {
        format!("{:.1} h", secs / 3600.0)
    } else {
        format!("{:.0} s", secs)
    }
}

fn print_single(r: &RunResult, spec: &StudySpec) {
    println!(
        "{} on {} with {} workers",
        r.scheduler, r.dataset, spec.search.max_parallel
    );
    println!("best {} over simulated time:", spec.objective.metric);
    println!("  {:>10}  {:>8}  {:>10}", "time", "epochs", "best");
    for (t, e, v) in &r.trajectory {
        println!("  {:>10}  {:>8}  {:>10.4}", hours(*t), e, v);
    }
    println!("final best     {}", opt(r.best, 4));
    println!("regret         {}", opt(r.regret, 4));
    println!("resource       {} epochs in {} trials", r.epochs, r.trials);
    println!("wall-clock     {} simulated", hours(r.wall));
    println!("utilisation    {:.1}%", 100.0 * r.utilisation);
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Per scheduler: regret, time, epochs and utilisation over every run, and
/// how many of the baseline's epochs (`--baseline`, default `none`) it needed to reach the baseline's
/// search's final regret on the same table and seed.
fn print_comparison(results: &[RunResult], markdown: bool, baseline_label: &str) {
    let mut order: Vec<String> = Vec::new();
    for r in results {
        if !order.contains(&r.scheduler) {
            order.push(r.scheduler.clone());
        }
    }
    let baseline: BTreeMap<(String, u64), &RunResult> = results
        .iter()
        .filter(|r| r.scheduler == baseline_label)
        .map(|r| ((r.dataset.clone(), r.seed), r))
        .collect();
    let headers = [
        "scheduler",
        "runs",
        "mean regret",
        "median regret",
        "time to final best",
        "simulated wall-clock",
        "epochs",
        "utilisation",
        "epochs to the baseline's final best",
    ];
    let mut rows = Vec::new();
    for s in &order {
        let runs: Vec<&RunResult> = results.iter().filter(|r| &r.scheduler == s).collect();
        let regrets: Vec<f64> = runs.iter().filter_map(|r| r.regret).collect();
        let mut fractions = Vec::new();
        let mut reached = 0;
        for r in &runs {
            let Some(base) = baseline.get(&(r.dataset.clone(), r.seed)) else {
                continue;
            };
            let Some(target) = base.best else { continue };
            if base.epochs == 0 {
                continue;
            }
            // The first point at least as good as the baseline's final best.
            let first = r
                .trajectory
                .iter()
                .find(|(_, _, v)| *v == target || r.direction.better(*v, target));
            match first {
                Some((_, e, _)) => {
                    reached += 1;
                    fractions.push(*e as f64 / base.epochs as f64);
                }
                None => fractions.push(f64::INFINITY),
            }
        }
        let frac = if fractions.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{:.2} (median; reached in {reached}/{})",
                median(fractions.clone()),
                fractions.len()
            )
        };
        rows.push(vec![
            s.clone(),
            runs.len().to_string(),
            format!("{:.3}", mean(&regrets)),
            format!("{:.3}", median(regrets.clone())),
            hours(mean(
                &runs.iter().map(|r| r.time_to_best).collect::<Vec<_>>(),
            )),
            hours(mean(&runs.iter().map(|r| r.wall).collect::<Vec<_>>())),
            format!(
                "{:.0}",
                mean(&runs.iter().map(|r| r.epochs as f64).collect::<Vec<_>>())
            ),
            format!(
                "{:.1}%",
                100.0 * mean(&runs.iter().map(|r| r.utilisation).collect::<Vec<_>>())
            ),
            frac,
        ]);
    }
    if markdown {
        println!("| {} |", headers.join(" | "));
        println!("|{}", "---|".repeat(headers.len()));
        for r in rows {
            println!("| {} |", r.join(" | "));
        }
    } else {
        let widths: Vec<usize> = (0..headers.len())
            .map(|i| {
                rows.iter()
                    .map(|r| r[i].len())
                    .chain([headers[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<String>| {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
        };
        println!("{}", line(headers.iter().map(|h| h.to_string()).collect()));
        for r in rows {
            println!("{}", line(r));
        }
    }
}
