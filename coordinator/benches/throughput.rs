//! Coordinator throughput: simulated workers over real gRPC on loopback.
//!
//! A real coordinator (`hpo_coordinator::run`, sled storage in a temporary
//! directory; every acknowledged write is durable at the chosen level) serves on its own
//! tokio runtime in its own thread; the simulated workers run on a second
//! runtime. Each worker has its own connection, as real workers (separate
//! processes, usually separate hosts) do, registers with one slot and loops:
//! acquire, 10 metric reports (steps 1..=10), finish as completed. No trainer
//! runs: the benchmark measures the coordinator and the protocol only.
//!
//! For each concurrency level a fresh study is submitted, the workers warm up,
//! then calls that end inside a fixed wall-clock window are counted and timed.
//!
//! Run: `cargo bench -p hpo-coordinator --bench throughput`
//! Environment:
//!   HPO_BENCH_SECS    measured window per level, seconds (default 5)
//!   HPO_BENCH_WARMUP  warm-up per level, seconds (default 1)
//!   HPO_BENCH_LEVELS  comma-separated worker counts (default 1,8,64)
//!   HPO_BENCH_DIR     parent directory of the sled data dir (default: the
//!                     system temp dir; durability costs depend on its disk)
//!   HPO_BENCH_DURABILITY `process` (default: acknowledged writes survive
//!                     kill -9) or `sync` (also power loss: fdatasync per
//!                     group commit)
//!   HPO_BENCH_STORAGE `sled` (default) or `memory`: a diagnostic run without
//!                     storage or durability, to see what flushing costs

/// The allocator the `hpo` binary uses, so the figures are the product's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use hpo_proto::{Decision, MetricValues, Outcome, WorkerId};
use hpo_sdk::{Client, WorkerClient};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

/// Metric reports per trial (the study's `epochs`).
const STEPS: u32 = 10;
const DEFAULT_LEVELS: [usize; 3] = [1, 8, 64];
const SLOT: &str = "slot0";

fn env_secs(name: &str, default: f64) -> Duration {
    let secs = match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("{name}={v}: expected a number of seconds")),
        Err(_) => default,
    };
    assert!(secs.is_finite() && secs >= 0.0, "{name} must be >= 0");
    Duration::from_secs_f64(secs)
}

fn env_levels() -> Vec<usize> {
    match std::env::var("HPO_BENCH_LEVELS") {
        Ok(v) => v
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .unwrap_or_else(|| panic!("HPO_BENCH_LEVELS={v}: expected e.g. 1,8,64"))
            })
            .collect(),
        Err(_) => DEFAULT_LEVELS.to_vec(),
    }
}

fn study_toml(workers: usize) -> String {
    format!(
        r#"
name = "bench-{workers}"
seed = 7

[objective]
metric = "loss"
direction = "minimize"

[search]
algorithm = "random"
max_trials = 1000000
max_parallel = {workers}

[trainer]
kind = "simulated"
epochs = {STEPS}

[params]
x = {{ type = "float", low = 0.0, high = 1.0 }}
y = {{ type = "float", low = 0.0, high = 1.0 }}
"#
    )
}

/// When each call ended and how long it took.
#[derive(Default)]
struct Samples {
    acquire: Vec<(Instant, Duration)>,
    report: Vec<(Instant, Duration)>,
    finish: Vec<(Instant, Duration)>,
}

impl Samples {
    fn extend(&mut self, other: Samples) {
        self.acquire.extend(other.acquire);
        self.report.extend(other.report);
        self.finish.extend(other.finish);
    }
}

/// Durations of the calls that ended inside [from, to], sorted.
fn window(samples: &[(Instant, Duration)], from: Instant, to: Instant) -> Vec<Duration> {
    let mut d: Vec<Duration> = samples
        .iter()
        .filter(|(end, _)| *end >= from && *end <= to)
        .map(|(_, d)| *d)
        .collect();
    d.sort_unstable();
    d
}

/// Nearest-rank percentile of sorted durations, in milliseconds.
fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
}

async fn timed<T>(log: &mut Vec<(Instant, Duration)>, call: impl Future<Output = T>) -> T {
    let start = Instant::now();
    let out = call.await;
    let end = Instant::now();
    log.push((end, end - start));
    out
}

/// One simulated worker: connects, registers, waits for the others, then
/// runs trials until told to stop (finishing the trial it holds).
async fn worker(
    url: String,
    id: WorkerId,
    ready: Arc<Barrier>,
    stop: Arc<AtomicBool>,
) -> Result<Samples, String> {
    let channel = hpo_sdk::connect(&url).await.map_err(|e| e.to_string())?;
    let client = WorkerClient::new(channel, id.clone());
    client
        .register("bench", &[SLOT.to_string()])
        .await
        .map_err(|e| format!("{id}: register: {e}"))?;
    ready.wait().await;
    let mut s = Samples::default();
    let mut values = MetricValues::new();
    while !stop.load(Ordering::Relaxed) {
        let assignment = timed(&mut s.acquire, client.acquire(SLOT))
            .await
            .map_err(|e| format!("{id}: acquire: {e}"))?
            .ok_or_else(|| {
                format!("{id}: acquire returned no trial (max_parallel or max_trials too low?)")
            })?;
        let (trial, attempt) = (assignment.trial, assignment.attempt);
        for step in 1..=STEPS {
            values.insert("loss".to_string(), 1.0 / f64::from(step));
            let decision = timed(&mut s.report, client.report(trial, attempt, step, &values))
                .await
                .map_err(|e| format!("{id}: report {trial} step {step}: {e}"))?;
            if decision != Decision::Continue {
                return Err(format!(
                    "{id}: coordinator said {decision:?} to {trial} at step {step}"
                ));
            }
        }
        timed(
            &mut s.finish,
            client.finish(trial, attempt, &Outcome::Completed),
        )
        .await
        .map_err(|e| format!("{id}: finish {trial}: {e}"))?;
    }
    Ok(s)
}

struct Row {
    workers: usize,
    trials_per_s: f64,
    reports_per_s: f64,
    /// p50 and p99 in ms for acquire, report, finish.
    latency: [(f64, f64); 3],
    trials: usize,
}

async fn level(url: &str, workers: usize, warmup: Duration, secs: Duration) -> Row {
    let studies = Client::connect(url).await.expect("connect study client");
    let study = studies
        .submit(&study_toml(workers), "bench.toml")
        .await
        .expect("submit the benchmark study");

    let ready = Arc::new(Barrier::new(workers + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..workers)
        .map(|i| {
            let id = WorkerId(format!("bench-{workers}-{i}"));
            tokio::spawn(worker(url.to_string(), id, ready.clone(), stop.clone()))
        })
        .collect();
    ready.wait().await;
    let from = Instant::now() + warmup;
    let to = from + secs;
    tokio::time::sleep_until(to.into()).await;
    stop.store(true, Ordering::Relaxed);

    let mut all = Samples::default();
    for t in tasks {
        match t.await.expect("worker task panicked") {
            Ok(s) => all.extend(s),
            Err(e) => panic!("worker failed: {e}"),
        }
    }
    // Every worker finished its last trial: nothing runs, so cancelling ends
    // the study at once and the next level's acquires go to its own study.
    studies
        .cancel(study)
        .await
        .expect("cancel the benchmark study");

    let acquire = window(&all.acquire, from, to);
    let report = window(&all.report, from, to);
    let finish = window(&all.finish, from, to);
    let s = secs.as_secs_f64();
    let pct = |d: &[Duration]| (percentile_ms(d, 50.0), percentile_ms(d, 99.0));
    Row {
        workers,
        trials_per_s: finish.len() as f64 / s,
        reports_per_s: report.len() as f64 / s,
        latency: [pct(&acquire), pct(&report), pct(&finish)],
        trials: finish.len(),
    }
}

fn main() {
    let secs = env_secs("HPO_BENCH_SECS", 5.0);
    let warmup = env_secs("HPO_BENCH_WARMUP", 1.0);
    let levels = env_levels();
    assert!(secs > Duration::ZERO, "HPO_BENCH_SECS must be > 0");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let durable = match std::env::var("HPO_BENCH_STORAGE").as_deref() {
        Err(_) | Ok("sled") => true,
        Ok("memory") => false,
        Ok(other) => panic!("HPO_BENCH_STORAGE={other}: expected sled or memory"),
    };

    let data = match std::env::var_os("HPO_BENCH_DIR") {
        Some(dir) => tempfile::TempDir::new_in(dir),
        None => tempfile::TempDir::new(),
    }
    .expect("create a temporary data dir");

    // The coordinator: its own runtime (default size: one thread per core) in
    // its own thread, as in `hpo server`.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let addr = listener.local_addr().expect("listener address");
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let durability = match std::env::var("HPO_BENCH_DURABILITY").as_deref() {
        Ok("sync") => hpo_coordinator::storage::Durability::Sync,
        Ok("process") | Err(_) => hpo_coordinator::storage::Durability::Process,
        Ok(other) => panic!("HPO_BENCH_DURABILITY={other}: expected process or sync"),
    };
    let config = hpo_coordinator::Config {
        data_dir: durable.then(|| data.path().to_path_buf()),
        durability,
        engine: Default::default(),
    };
    let server = std::thread::Builder::new()
        .name("coordinator".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .thread_name("coordinator-rt")
                .enable_all()
                .build()
                .expect("coordinator runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                hpo_coordinator::run(listener, config, async move {
                    let _ = shutdown_rx.await;
                })
                .await
            })
        })
        .expect("spawn the coordinator thread");

    // The simulated workers: a second runtime of the same (default) size.
    let clients = tokio::runtime::Builder::new_multi_thread()
        .thread_name("workers-rt")
        .enable_all()
        .build()
        .expect("client runtime");
    let url = format!("http://{addr}");

    println!("hpo coordinator throughput: simulated workers over gRPC on loopback");
    let mut env = format!(
        "HPO_BENCH_SECS={} HPO_BENCH_WARMUP={} HPO_BENCH_LEVELS={}",
        secs.as_secs_f64(),
        warmup.as_secs_f64(),
        levels
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(","),
    );
    for var in ["HPO_BENCH_DIR", "HPO_BENCH_STORAGE"] {
        if let Some(v) = std::env::var_os(var) {
            env.push_str(&format!(" {var}={}", v.to_string_lossy()));
        }
    }
    println!("reproduce: {env} cargo bench -p hpo-coordinator --bench throughput");
    println!(
        "machine: {cores} core(s); coordinator and workers each on a {cores}-thread tokio runtime"
    );
    if durable {
        println!(
            "storage: sled in {}, durability {:?}: every acknowledged write survives {}",
            data.path().display(),
            durability,
            match durability {
                hpo_coordinator::storage::Durability::Process => "kill -9 of the coordinator",
                hpo_coordinator::storage::Durability::Sync =>
                    "power loss (fdatasync per group commit)",
            }
        );
    } else {
        println!(
            "storage: memory -- NO durability (diagnostic run; not comparable with the target)"
        );
    }
    println!(
        "each trial = acquire + {STEPS} reports + finish; one connection per worker; counts and latencies over {:.1} s after {:.1} s warm-up",
        secs.as_secs_f64(),
        warmup.as_secs_f64()
    );
    println!();

    let rows: Vec<Row> = clients.block_on(async {
        let mut rows = Vec::new();
        for &n in &levels {
            rows.push(level(&url, n, warmup, secs).await);
        }
        rows
    });

    println!(
        "{:>7} {:>9} {:>10} {:>8} | {:>17} | {:>17} | {:>17}",
        "workers",
        "trials/s",
        "reports/s",
        "trials",
        "acquire p50/p99",
        "report p50/p99",
        "finish p50/p99"
    );
    println!("{}", "-".repeat(7 + 1 + 9 + 1 + 10 + 1 + 8 + 3 * 20));
    for r in &rows {
        let lat = |(p50, p99): (f64, f64)| format!("{p50:>7.3} / {p99:>7.3}");
        println!(
            "{:>7} {:>9.0} {:>10.0} {:>8} | {:>17} | {:>17} | {:>17}",
            r.workers,
            r.trials_per_s,
            r.reports_per_s,
            r.trials,
            lat(r.latency[0]),
            lat(r.latency[1]),
            lat(r.latency[2]),
        );
    }
    println!("(latencies in ms)");
    if let Some(r) = rows.iter().find(|r| r.workers == 8).filter(|_| durable) {
        let met = r.trials_per_s >= 1000.0 && r.reports_per_s >= 15000.0;
        println!(
            "target at 8 workers on a 2-core machine: >= 1000 trials/s and >= 15000 reports/s: {}",
            if met { "met" } else { "NOT met" }
        );
    }

    drop(clients);
    let _ = shutdown_tx.send(());
    server
        .join()
        .expect("coordinator thread panicked")
        .expect("coordinator failed");
    drop(data);
}
