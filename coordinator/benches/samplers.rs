//! Sampler proposal latency: how long one `propose` takes with a history of
//! n finished trials in a 6-parameter space (log float, float, stepped int,
//! int, stepped float, categorical).
//!
//! For each sampler and each n, a history of n completed trials is built once
//! (configurations from random search, values from a smooth test function),
//! then `propose(n, history)` is timed on fresh samplers with different
//! seeds, as the study task calls it for trial n. Prints the median and the
//! maximum per n.
//!
//! Run: `cargo bench -p hpo-coordinator --bench samplers`
//! Environment:
//!   HPO_BENCH_SAMPLERS  comma-separated algorithms (default random,sobol,tpe,gp)
//!   HPO_BENCH_SIZES     comma-separated history sizes
//!                       (default 50,200,500,1000,2000)
//!   HPO_BENCH_REPS      timed proposals per size (default 51)
//!   HPO_BENCH_GP_STEPS  gp: sequential proposals timed per size (default 40;
//!                       gp keeps one sampler, see `bench_gp`)

/// The allocator the `hpo` binary uses, so the figures are the product's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use hpo_coordinator::sampler::{TrialView, for_study};
use hpo_coordinator::space;
use hpo_proto::study::StudySpec;
use hpo_proto::{Params, TrialState};
use std::time::{Duration, Instant};

const DEFAULT_SAMPLERS: [&str; 4] = ["random", "sobol", "tpe", "gp"];
const DEFAULT_SIZES: [usize; 5] = [50, 200, 500, 1000, 2000];

fn env_list(name: &str) -> Option<Vec<String>> {
    std::env::var(name).ok().map(|v| {
        v.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

fn spec(algorithm: &str) -> StudySpec {
    let text = format!(
        r#"
name = "bench"
[objective]
metric = "loss"
direction = "minimize"
[search]
algorithm = "{algorithm}"
max_trials = 100000
[trainer]
kind = "simulated"
epochs = 1
[params]
lr = {{ type = "float", low = 1e-5, high = 1e-1, log = true }}
momentum = {{ type = "float", low = 0.0, high = 0.99 }}
width = {{ type = "int", low = 16, high = 512, step = 16 }}
depth = {{ type = "int", low = 1, high = 8 }}
dropout = {{ type = "float", low = 0.0, high = 0.5, step = 0.05 }}
act = ["relu", "tanh", "gelu", "silu"]
"#
    );
    StudySpec::parse(&text, "bench.toml").unwrap_or_else(|e| panic!("{e}"))
}

/// A smooth objective over the unit cube, minimum inside the space.
fn objective(spec: &StudySpec, p: &Params) -> f64 {
    spec.params
        .iter()
        .enumerate()
        .map(|(i, (k, s))| {
            let u = space::to_unit(s, &p[k]).unwrap_or(0.5);
            let target = 0.2 + 0.1 * i as f64;
            (u - target).powi(2)
        })
        .sum()
}

/// n completed trials, configurations from random search.
fn history(n: usize) -> Vec<TrialView> {
    let spec = spec("random");
    let mut random = for_study(&spec, 12345);
    (0..n as u32)
        .map(|number| {
            let params = random
                .propose(number, &[])
                .unwrap_or_else(|| panic!("random search proposes forever"));
            let value = objective(&spec, &params);
            TrialView {
                number,
                params,
                state: TrialState::Completed,
                value: Some(value),
            }
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Times `reps` proposals of trial n after n completed trials, for each n.
fn bench_sampler(algorithm: &str, sizes: &[usize], histories: &[Vec<TrialView>], reps: u64) {
    let spec = spec(algorithm);
    for (&n, history) in sizes.iter().zip(histories) {
        // One untimed proposal warms caches and the allocator.
        let _ = for_study(&spec, u64::MAX).propose(n as u32, history);
        let mut times: Vec<Duration> = (0..reps)
            .map(|seed| {
                let mut sampler = for_study(&spec, seed);
                let start = Instant::now();
                let p = sampler.propose(n as u32, history);
                let elapsed = start.elapsed();
                assert!(p.is_some(), "{algorithm} proposed nothing");
                elapsed
            })
            .collect();
        times.sort();
        let median = times[times.len() / 2];
        let max = times[times.len() - 1];
        println!(
            "{algorithm:>8}  n = {n:>5}  median {:>8.3} ms  max {:>8.3} ms  ({reps} proposals)",
            ms(median),
            ms(max)
        );
    }
}

/// The GP sampler as a study task drives it: one sampler kept across
/// proposals, each proposal's trial finished before the next. The first
/// proposal after n trials (a fresh sampler, so it fits the hyperparameters:
/// what a restarted coordinator pays once) is reported apart; then `steps`
/// proposals each add one completed trial, and their median and maximum
/// (which include the refits the schedule calls for) are reported.
fn bench_gp(sizes: &[usize], histories: &[Vec<TrialView>], steps: usize) {
    let spec = spec("gp");
    for (&n, history) in sizes.iter().zip(histories) {
        let mut history = history.clone();
        let mut sampler = for_study(&spec, 7);
        let start = Instant::now();
        let first = sampler.propose(n as u32, &history);
        let cold = start.elapsed();
        let mut params = first.unwrap_or_else(|| panic!("gp proposed nothing"));
        let mut times = Vec::with_capacity(steps);
        for k in 0..steps {
            let number = (n + k) as u32;
            let value = objective(&spec, &params);
            history.push(TrialView {
                number,
                params,
                state: TrialState::Completed,
                value: Some(value),
            });
            let start = Instant::now();
            let p = sampler.propose(number + 1, &history);
            times.push(start.elapsed());
            params = p.unwrap_or_else(|| panic!("gp proposed nothing"));
        }
        times.sort();
        let median = times[times.len() / 2];
        let max = times[times.len() - 1];
        println!(
            "{:>8}  n = {n:>5}  median {:>8.3} ms  max {:>8.3} ms  ({steps} sequential proposals; first, with a cold fit: {:.3} ms)",
            "gp",
            ms(median),
            ms(max),
            ms(cold)
        );
    }
}

fn main() {
    let samplers = env_list("HPO_BENCH_SAMPLERS")
        .unwrap_or_else(|| DEFAULT_SAMPLERS.iter().map(|s| s.to_string()).collect());
    let sizes: Vec<usize> = match env_list("HPO_BENCH_SIZES") {
        Some(v) => v
            .iter()
            .map(|s| {
                s.parse()
                    .unwrap_or_else(|_| panic!("HPO_BENCH_SIZES: {s} is not a count"))
            })
            .collect(),
        None => DEFAULT_SIZES.to_vec(),
    };
    let reps: u64 = std::env::var("HPO_BENCH_REPS")
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("HPO_BENCH_REPS: {v} is not a count"))
        })
        .unwrap_or(51)
        .max(1);
    let histories: Vec<Vec<TrialView>> = sizes.iter().map(|&n| history(n)).collect();
    println!("proposal latency, 6 parameters, history of n completed trials");
    for algorithm in &samplers {
        if algorithm == "gp" {
            let steps: usize = std::env::var("HPO_BENCH_GP_STEPS")
                .ok()
                .map(|v| {
                    v.parse()
                        .unwrap_or_else(|_| panic!("HPO_BENCH_GP_STEPS: {v} is not a count"))
                })
                .unwrap_or(40)
                .max(1);
            bench_gp(&sizes, &histories, steps);
            continue;
        }
        bench_sampler(algorithm, &sizes, &histories, reps);
    }
}
