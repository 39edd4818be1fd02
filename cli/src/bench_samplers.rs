//! `hpo bench-samplers`: sampler quality on the standard test functions,
//! through the whole path: an embedded coordinator serving gRPC on
//! 127.0.0.1:0 and a real worker (the `function` trainer, one slot per
//! parallel trial) in this process. For each (function, sampler, parallelism,
//! seed) one study runs `--evals` trials; the report gives, per sampler, the
//! median and interquartile range over seeds of the regret (best value so far
//! minus the global minimum) after 25, 50 and 100 evaluations.

use anyhow::{Context, Result, bail};
use hpo_coordinator::engine::{Engine, EngineConfig};
use hpo_coordinator::storage::MemoryStorage;
use hpo_proto::StudyState;
use hpo_sdk::Client;
use hpo_worker::functions::TestFunction;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct BenchSamplersArgs {
    /// Test functions (default: all six); comma-separated.
    #[arg(long, value_delimiter = ',')]
    functions: Vec<String>,
    /// Samplers to compare; comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "random,sobol,tpe,gp")]
    samplers: Vec<String>,
    /// Trials running at once (max_parallel, and the worker's slots).
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    parallel: Vec<u32>,
    /// Runs per combination, with seeds 1..=N.
    #[arg(long, default_value_t = 10)]
    seeds: u64,
    /// Evaluations per run.
    #[arg(long, default_value_t = 100)]
    evals: u32,
    /// Print Markdown tables.
    #[arg(long)]
    markdown: bool,
    /// Print one JSON object per run instead.
    #[arg(long, conflicts_with = "markdown")]
    json: bool,
}

/// Regret after each evaluation of one run, in trial-number order.
struct Run {
    function: &'static str,
    sampler: String,
    parallel: u32,
    seed: u64,
    /// best-so-far regret after 1, 2, ... evaluations.
    regret: Vec<f64>,
    seconds: f64,
}

pub async fn run(args: BenchSamplersArgs) -> Result<ExitCode> {
    let functions: Vec<TestFunction> = if args.functions.is_empty() {
        TestFunction::ALL.to_vec()
    } else {
        args.functions
            .iter()
            .map(|f| {
                TestFunction::parse(f.trim()).with_context(|| {
                    format!(
                        "--functions: unknown function `{f}` (expected one of: {})",
                        hpo_worker::functions::NAMES.join(", ")
                    )
                })
            })
            .collect::<Result<_>>()?
    };
    if args.parallel.contains(&0) {
        bail!("--parallel: expected numbers >= 1");
    }
    let mut runs = Vec::new();
    for &parallel in &args.parallel {
        // One coordinator and one worker per parallelism: the worker has as
        // many slots as trials may run at once.
        let engine = Engine::start(
            Arc::new(MemoryStorage::new()),
            EngineConfig {
                tick: Duration::from_millis(100),
                ..EngineConfig::default()
            },
        )?;
        let devices = format!("cpu:{parallel}")
            .parse()
            .map_err(anyhow::Error::msg)?;
        let local =
            crate::local::Local::start(engine, devices, Duration::from_millis(20), None).await?;
        let url = local.url.clone();
        let client = Client::connect(&url).await?;
        for &function in &functions {
            for sampler in &args.samplers {
                for seed in 1..=args.seeds {
                    let started = Instant::now();
                    let study = study_file(function, sampler, parallel, seed, args.evals);
                    let id = client
                        .submit(&study, "bench-samplers.toml")
                        .await
                        .with_context(|| format!("sampler `{sampler}`"))?;
                    loop {
                        let info = client.study(id).await?;
                        if info.state != StudyState::Running {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    let trials = client.trials(id, false).await?;
                    let mut best = f64::INFINITY;
                    let regret = trials
                        .iter()
                        .map(|t| {
                            if let Some(v) = t.value {
                                best = best.min(v);
                            }
                            best - function.optimum()
                        })
                        .collect();
                    let r = Run {
                        function: function.name(),
                        sampler: sampler.clone(),
                        parallel,
                        seed,
                        regret,
                        seconds: started.elapsed().as_secs_f64(),
                    };
                    eprintln!(
                        "{} {:<6} parallel {parallel} seed {seed}: regret {:.4} after {} evaluations ({:.1}s)",
                        r.function,
                        r.sampler,
                        r.regret.last().copied().unwrap_or(f64::NAN),
                        r.regret.len(),
                        r.seconds
                    );
                    runs.push(r);
                }
            }
        }
        local.stop().await?;
    }
    if args.json {
        for r in &runs {
            println!(
                "{}",
                serde_json::json!({
                    "function": r.function,
                    "sampler": r.sampler,
                    "parallel": r.parallel,
                    "seed": r.seed,
                    "regret": r.regret,
                    "seconds": r.seconds,
                })
            );
        }
    } else {
        report(&runs, &functions, &args);
    }
    Ok(ExitCode::SUCCESS)
}

fn study_file(f: TestFunction, sampler: &str, parallel: u32, seed: u64, evals: u32) -> String {
    let mut params = String::new();
    for (i, (low, high)) in f.domain().iter().enumerate() {
        params.push_str(&format!(
            "x{} = {{ type = \"float\", low = {low:?}, high = {high:?} }}\n",
            i + 1
        ));
    }
    format!(
        r#"name = "{name}-{sampler}-p{parallel}-s{seed}"
seed = {seed}
[objective]
metric = "value"
direction = "minimize"
[search]
algorithm = "{sampler}"
max_trials = {evals}
max_parallel = {parallel}
[trainer]
kind = "function"
function = "{name}"
epochs = 1
[params]
{params}"#,
        name = f.name()
    )
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn cell(runs: &[&Run], after: usize) -> String {
    let mut v: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.regret.get(after - 1).copied())
        .collect();
    if v.is_empty() {
        return "-".into();
    }
    v.sort_by(|a, b| a.total_cmp(b));
    format!(
        "{} [{}, {}]",
        num(quantile(&v, 0.5)),
        num(quantile(&v, 0.25)),
        num(quantile(&v, 0.75))
    )
}

fn num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 0.01 && v.abs() < 1000.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.1e}")
    }
}

fn report(runs: &[Run], functions: &[TestFunction], args: &BenchSamplersArgs) {
    let checkpoints: Vec<usize> = [25, 50, 100]
        .into_iter()
        .filter(|k| *k <= args.evals as usize)
        .collect();
    for f in functions {
        if args.markdown {
            println!(
                "\n**{}** (regret: median [IQR] over {} seeds)\n",
                f.name(),
                args.seeds
            );
            let mut head = vec!["sampler".to_string(), "parallel".to_string()];
            head.extend(checkpoints.iter().map(|k| format!("after {k}")));
            println!("| {} |", head.join(" | "));
            println!("|{}", "---|".repeat(head.len()));
        } else {
            println!(
                "\n{} (regret: median [IQR] over {} seeds)",
                f.name(),
                args.seeds
            );
        }
        for &parallel in &args.parallel {
            for s in &args.samplers {
                let these: Vec<&Run> = runs
                    .iter()
                    .filter(|r| r.function == f.name() && &r.sampler == s && r.parallel == parallel)
                    .collect();
                let cells: Vec<String> = checkpoints.iter().map(|k| cell(&these, *k)).collect();
                if args.markdown {
                    println!("| {s} | {parallel} | {} |", cells.join(" | "));
                } else {
                    println!("  {s:<7} parallel {parallel:<2} {}", cells.join("   "));
                }
            }
        }
    }
}
