//! Report latency while a model-based sampler is fitting: the issue's "sampler
//! work must not block the coordinator".
//!
//! Study A (`gp`, 6 parameters) is loaded with N completed trials straight
//! into storage; the engine resumes it, and a worker's acquire makes it fit
//! and propose on a blocking thread. Meanwhile a second worker keeps
//! reporting metrics to study B (random search) and to a running trial of
//! study A itself. Prints how long the proposal took and the report latencies
//! (median, p99, max) during it, next to the same reports with no fit running.
//!
//! Run: `cargo bench -p hpo-coordinator --bench fit_latency`
//! Environment: HPO_BENCH_N (history size, default 1000), HPO_BENCH_ALGORITHM
//! (default gp).

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use hpo_coordinator::engine::{Engine, EngineConfig};
use hpo_coordinator::storage::{MemoryStorage, Placement, Storage};
use hpo_proto::study::StudySpec;
use hpo_proto::{MetricValues, StudyId, TrialState, WorkerId};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn study(algorithm: &str, n: usize) -> String {
    format!(
        r#"
name = "{algorithm}"
seed = 3
[objective]
metric = "loss"
direction = "minimize"
[search]
algorithm = "{algorithm}"
max_trials = {}
max_parallel = 4
[trainer]
kind = "simulated"
epochs = 100000
[params]
a = {{ type = "float", low = 0.0, high = 1.0 }}
b = {{ type = "float", low = 0.0, high = 1.0 }}
c = {{ type = "float", low = 1e-4, high = 1.0, log = true }}
d = {{ type = "float", low = 0.0, high = 1.0 }}
e = {{ type = "int", low = 1, high = 64 }}
f = {{ type = "float", low = 0.0, high = 1.0 }}
"#,
        n + 100
    )
}

fn loss(v: f64) -> MetricValues {
    [("loss".to_string(), v)].into_iter().collect()
}

fn stats(mut v: Vec<f64>) -> String {
    if v.is_empty() {
        return "no reports".into();
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    format!(
        "{} reports: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        v.len(),
        q(0.5),
        q(0.99),
        v[v.len() - 1]
    )
}

/// Loads study `text` with `n` completed trials whose configurations come
/// from random search (so they are valid) and whose values are a smooth
/// function of them.
fn preload(storage: &dyn Storage, text: &str, n: usize) -> StudyId {
    let spec = StudySpec::parse(text, "bench.toml").expect("study");
    let record = storage
        .create_study(spec.clone(), text.into(), 3, 0)
        .expect("study");
    let mut random = spec.clone();
    random.search.algorithm = hpo_proto::study::Algorithm::Random;
    let mut sampler = hpo_coordinator::sampler::for_study(&random, 3);
    let w = WorkerId("preload".into());
    for i in 0..n {
        let params = sampler.propose(i as u32, &[]).expect("params");
        let v: f64 = params
            .values()
            .filter_map(|p| p.as_f64())
            .map(|x| (x.min(1.0) - 0.3).powi(2))
            .sum();
        let t = storage
            .create_trial(record.id, params, Placement::default(), 0)
            .expect("trial");
        storage
            .claim_trial(record.id, &w, "cpu:0", 0)
            .expect("claim");
        storage
            .append_metrics(t.id, 1, 1, &loss(v))
            .expect("metrics");
        storage
            .finish_trial(t.id, TrialState::Completed, Some(v), "", 0)
            .expect("finish");
    }
    record.id
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("HPO_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let algorithm = std::env::var("HPO_BENCH_ALGORITHM").unwrap_or_else(|_| "gp".into());
    let storage = Arc::new(MemoryStorage::new());
    let a = preload(&*storage, &study(&algorithm, n), n);
    let b = preload(&*storage, &study("random", 0), 0);
    let engine = Engine::start(storage, EngineConfig::default()).expect("engine");
    let (wa, wb) = (WorkerId("a".into()), WorkerId("b".into()));
    engine
        .register(&wa, "bench", vec!["cpu:0".into()])
        .expect("register");
    engine
        .register(&wb, "bench", vec!["cpu:0".into()])
        .expect("register");
    // One running trial in each study to report to (A's first proposal is
    // timed too, as the first fit).
    let (mut ta, mut tb, mut first) = (None, None, Duration::ZERO);
    while ta.is_none() || tb.is_none() {
        let t0 = Instant::now();
        let got = engine
            .acquire(&wb, "cpu:0", None)
            .await
            .expect("acquire")
            .expect("a trial");
        if got.trial.study == a && ta.is_none() {
            first = t0.elapsed();
            ta = Some(got);
        } else if got.trial.study == b && tb.is_none() {
            tb = Some(got);
        }
    }
    let (ta, tb) = (ta.expect("a"), tb.expect("b"));
    let mut step = 0u32;
    let mut report = |engine: Engine, t: hpo_proto::Assignment| {
        step += 1;
        let s = step;
        async move {
            let start = Instant::now();
            engine
                .report(&WorkerId("b".into()), t.trial, t.attempt, s, loss(0.5))
                .await
                .expect("report");
            start.elapsed().as_secs_f64() * 1e3
        }
    };
    // Baseline: no fit running.
    let mut idle = Vec::new();
    for i in 0..400u32 {
        let t = if i.is_multiple_of(2) {
            tb.clone()
        } else {
            ta.clone()
        };
        idle.push(report(engine.clone(), t).await);
    }
    // Now make study A propose (fit + acquisition) while reports go on.
    let fitting = {
        let engine = engine.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let got = engine.acquire(&wa, "cpu:0", None).await.expect("acquire");
            (start.elapsed(), got.map(|g| g.trial))
        })
    };
    let mut during = Vec::new();
    let mut during_a = Vec::new();
    let mut i = 0u64;
    while !fitting.is_finished() {
        if i.is_multiple_of(2) {
            during.push(report(engine.clone(), tb.clone()).await);
        } else {
            during_a.push(report(engine.clone(), ta.clone()).await);
        }
        i += 1;
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let (took, trial) = fitting.await.expect("fit task");
    println!("{algorithm} study with {n} completed trials, 2 worker threads");
    println!(
        "  first proposal (from the acquire of its first trial): {:.1} ms",
        first.as_secs_f64() * 1e3
    );
    println!(
        "  proposal timed under load: {:.1} ms (trial {:?})",
        took.as_secs_f64() * 1e3,
        trial
    );
    println!("  reports with no fit running: {}", stats(idle));
    println!(
        "  reports to another study during the fit: {}",
        stats(during)
    );
    println!(
        "  reports to the fitting study during the fit: {}",
        stats(during_a)
    );
    engine.shutdown().await;
}
