//! The dashboard at scale: a study of 10,000 trials with 100 steps each in a
//! sled data dir, served by the real router on 127.0.0.1:0; times every API
//! response the study page makes, first with a cold cache (the first visit
//! after a coordinator start) and then warm, and the whole page's requests
//! made at once as the browser makes them.
//!
//! Run: `cargo bench -p hpo-coordinator --bench dashboard`
//! Environment: HPO_BENCH_TRIALS (default 10000), HPO_BENCH_STEPS (100),
//! HPO_BENCH_DIR (keep the data dir there and reuse it on the next run).

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use hpo_coordinator::engine::{Engine, EngineConfig};
use hpo_coordinator::http::{HttpConfig, router};
use hpo_coordinator::storage::{Durability, Placement, SledStorage, Storage};
use hpo_proto::study::StudySpec;
use hpo_proto::{MetricValues, ParamValue, Params, StudyId, TrialState, WorkerId};
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::{Duration, Instant};

const STUDY: &str = r#"
name = "big"
seed = 5
[objective]
metric = "val_loss"
direction = "minimize"
[search]
algorithm = "random"
max_trials = 10000
[trainer]
kind = "simulated"
epochs = 100
[params]
lr = { type = "float", low = 1e-5, high = 1e-1, log = true }
dropout = { type = "float", low = 0.0, high = 0.5 }
layers = { type = "int", low = 1, high = 8 }
width = { type = "int", low = 16, high = 1024, log = true }
wd = { type = "float", low = 1e-6, high = 1e-2, log = true }
act = ["relu", "gelu", "tanh"]
"#;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Writes the study through the storage verbs a coordinator uses.
fn populate(storage: &dyn Storage, trials: usize, steps: u32) -> StudyId {
    let mut text = STUDY.replace("max_trials = 10000", &format!("max_trials = {trials}"));
    text = text.replace("epochs = 100", &format!("epochs = {steps}"));
    let spec = StudySpec::parse(&text, "big.toml").expect("study");
    let record = storage
        .create_study(spec.clone(), text.clone(), 5, 0)
        .expect("study");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let worker = WorkerId("bench".into());
    let start = Instant::now();
    for n in 0..trials {
        let lr: f64 = 10f64.powf(rng.gen_range(-5.0..-1.0));
        let params: Params = [
            ("lr".to_string(), ParamValue::Float(lr)),
            ("dropout".into(), ParamValue::Float(rng.gen_range(0.0..0.5))),
            ("layers".into(), ParamValue::Int(rng.gen_range(1..=8))),
            ("width".into(), ParamValue::Int(rng.gen_range(16..=1024))),
            (
                "wd".into(),
                ParamValue::Float(10f64.powf(rng.gen_range(-6.0..-2.0))),
            ),
            (
                "act".into(),
                ParamValue::Categorical(["relu", "gelu", "tanh"][rng.gen_range(0..3)].into()),
            ),
        ]
        .into_iter()
        .collect();
        let t = storage
            .create_trial(record.id, params, Placement::default(), n as i64)
            .expect("trial");
        storage
            .claim_trial(record.id, &worker, "cpu:0", n as i64)
            .expect("claim");
        // Some trials stop early, as a scheduler would make them.
        let last = if n % 3 == 0 { steps } else { steps / 4 };
        let floor = (lr.log10() + 3.0).powi(2) * 0.1 + 0.2;
        let mut v = 0.0;
        for step in 1..=last {
            v = floor + 2.0 / f64::from(step) + rng.r#gen::<f64>() * 0.01;
            let values: MetricValues = [("val_loss".to_string(), v), ("loss".to_string(), v * 0.9)]
                .into_iter()
                .collect();
            storage
                .append_metrics(t.id, 1, step, &values)
                .expect("metrics");
        }
        let state = if last == steps {
            TrialState::Completed
        } else {
            TrialState::Stopped
        };
        storage
            .finish_trial(t.id, state, Some(v), "", n as i64 + 1)
            .expect("finish");
        if n % 1000 == 999 {
            eprintln!("  {} trials written ({:.0?})", n + 1, start.elapsed());
        }
    }
    storage.flush().expect("flush");
    record.id
}

async fn time_get(client: reqwest::Client, url: String) -> (Duration, usize) {
    let start = Instant::now();
    let r = client.get(&url).send().await.expect("request");
    assert!(r.status().is_success(), "{url}: {}", r.status());
    let body = r.bytes().await.expect("body");
    (start.elapsed(), body.len())
}

fn main() {
    let trials = env_usize("HPO_BENCH_TRIALS", 10_000);
    let steps = env_usize("HPO_BENCH_STEPS", 100) as u32;
    let kept = std::env::var("HPO_BENCH_DIR").ok();
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = kept
        .as_ref()
        .map_or_else(|| tmp.path().to_path_buf(), std::path::PathBuf::from);
    let storage = Arc::new(SledStorage::open(&dir, Durability::Process).expect("sled"));
    let existing = storage.studies().expect("studies");
    let id = match existing.first() {
        Some(s) => {
            eprintln!("reusing study {} in {}", s.id, dir.display());
            s.id
        }
        None => {
            eprintln!(
                "writing {trials} trials × {steps} steps to {}",
                dir.display()
            );
            let start = Instant::now();
            let id = populate(&*storage, trials, steps);
            eprintln!("written in {:.1?}", start.elapsed());
            id
        }
    };
    drop(existing);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let engine = Engine::start(storage, EngineConfig::default()).expect("engine");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (_down_tx, down_rx) = tokio::sync::watch::channel(false);
        let app = router(engine.clone(), HttpConfig::default(), down_rx);
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        let page = [
            format!("/api/studies/{id}"),
            format!("/api/studies/{id}/history"),
            format!("/api/studies/{id}/curves"),
            format!("/api/studies/{id}/params"),
            format!("/api/studies/{id}/importance"),
            format!("/api/studies/{id}/trials?sort=value&page=1&per_page=50"),
        ];
        println!(
            "dashboard API, study of {trials} trials × {steps} steps (sled), one request at a time"
        );
        for (label, round) in [("cold", 0), ("warm", 1), ("warm", 2)] {
            if round == 2 {
                // Wait out the running-study cache so "warm" means the same
                // data cache, not a cached answer.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            for path in &page {
                let (d, bytes) = time_get(client.clone(), format!("{base}{path}")).await;
                println!(
                    "  {label:>4}  {:>8.1} ms  {:>8} bytes  {path}",
                    d.as_secs_f64() * 1e3,
                    bytes
                );
            }
        }
        // The page as a browser loads it: every request at once.
        for round in 0..3 {
            let start = Instant::now();
            let futs = page
                .iter()
                .map(|p| time_get(client.clone(), format!("{base}{p}")));
            let results = futures_join(futs.collect()).await;
            let total: usize = results.iter().map(|r| r.1).sum();
            println!(
                "  whole study page, requests in parallel (round {}): {:.1} ms, {} bytes",
                round + 1,
                start.elapsed().as_secs_f64() * 1e3,
                total
            );
        }
        let (d, _) = time_get(client.clone(), format!("{base}/api/studies")).await;
        println!("  studies list: {:.1} ms", d.as_secs_f64() * 1e3);
        let (d, _) = time_get(
            client.clone(),
            format!("{base}/api/studies/{id}/trials?sort=param.lr&order=desc&page=100&per_page=50"),
        )
        .await;
        println!(
            "  trials table, page 100 by a parameter: {:.1} ms",
            d.as_secs_f64() * 1e3
        );
        let (d, bytes) = time_get(
            client.clone(),
            format!("{base}/api/studies/{id}/trials.csv"),
        )
        .await;
        println!(
            "  CSV export of every trial: {:.1} ms, {bytes} bytes",
            d.as_secs_f64() * 1e3
        );
        server.abort();
        engine.shutdown().await;
    });
}

/// Awaits every future concurrently on the runtime.
async fn futures_join<F, T>(futs: Vec<F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("request task"));
    }
    out
}
