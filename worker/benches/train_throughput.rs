//! Training throughput of hpo's tch trainers against the same model, data
//! and batch size in plain PyTorch (`pytorch_baseline.py`, run with the
//! repository's .venv Python, the same torch 2.13 wheel libtorch comes from).
//!
//! `cargo bench -p hpo-worker --bench train_throughput`
//! Environment: `HPO_BENCH_MODELS` (mlp,cnn), `HPO_BENCH_EPOCHS` (3),
//! `HPO_BENCH_BATCH` (128), `HPO_BENCH_TRAIN` (training examples, 60000),
//! `HPO_BENCH_DEVICE` (cpu or cuda:0), `HPO_BENCH_PYTHON` (.venv/bin/python).
//! Fashion-MNIST from `$HPO_TEST_DATA/fashion-mnist` or Debian's package.

use hpo_proto::{
    Assignment, Decision, MetricValues, ParamValue, Params, Resource, StudyId, TrainerConfig,
    TrialId,
};
use hpo_worker::data::DataCache;
use hpo_worker::device::Device;
use hpo_worker::trainer::{Reporter, Trainers, TrialJob};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

struct Clock {
    at: Vec<Instant>,
    accuracy: f64,
}

impl Reporter for Clock {
    fn report(&mut self, _step: u32, values: MetricValues) -> Decision {
        self.at.push(Instant::now());
        self.accuracy = values.get("val_accuracy").copied().unwrap_or(f64::NAN);
        Decision::Continue
    }
    fn stop_requested(&self) -> bool {
        false
    }
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn data_dir() -> Option<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("HPO_TEST_DATA") {
        roots.push(PathBuf::from(d));
    }
    roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    roots.push(PathBuf::from("/usr/share/datasets"));
    roots
        .into_iter()
        .map(|r| r.join("fashion-mnist"))
        .find(|d| d.join("train-images-idx3-ubyte.gz").is_file())
}

/// The architecture both sides train, as the trainer's parameters.
fn params(model: &str, batch: i64, train: i64) -> Params {
    let mut p: Vec<(&str, ParamValue)> = vec![
        ("optimizer", ParamValue::Categorical("adam".into())),
        ("lr", ParamValue::Float(1e-3)),
        ("batch_size", ParamValue::Int(batch)),
        ("train_subset", ParamValue::Int(train)),
    ];
    match model {
        "mlp" => {
            p.push(("hidden", ParamValue::Int(256)));
            p.push(("layers", ParamValue::Int(2)));
        }
        _ => {
            p.push(("conv_layers", ParamValue::Int(2)));
            p.push(("channels", ParamValue::Int(32)));
            p.push(("kernel_size", ParamValue::Int(3)));
            p.push(("batch_norm", ParamValue::Int(1)));
            p.push(("pool", ParamValue::Categorical("max".into())));
            p.push(("hidden", ParamValue::Int(128)));
        }
    }
    p.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let Some(dir) = data_dir() else {
        eprintln!(
            "skipping: no fashion-mnist (set HPO_TEST_DATA or install dataset-fashion-mnist)"
        );
        return;
    };
    let epochs: u32 = env("HPO_BENCH_EPOCHS", "3").parse().unwrap_or(3);
    let batch: i64 = env("HPO_BENCH_BATCH", "128").parse().unwrap_or(128);
    let train: i64 = env("HPO_BENCH_TRAIN", "60000").parse().unwrap_or(60000);
    let device = match env("HPO_BENCH_DEVICE", "cpu").as_str() {
        "cpu" => Device::Cpu(0),
        d => Device::Cuda(d.trim_start_matches("cuda:").parse().unwrap_or(0)),
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = env(
        "HPO_BENCH_PYTHON",
        &root.join(".venv/bin/python").display().to_string(),
    );
    let data = Arc::new(DataCache::new());
    let spec = format!("idx:{}", dir.display());
    let trainers = Trainers::new(data.clone());
    println!(
        "| model | hpo (tch) samples/s | PyTorch samples/s | hpo / PyTorch | hpo val_accuracy | PyTorch val_accuracy |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for model in env("HPO_BENCH_MODELS", "mlp,cnn").split(',') {
        let Some(trainer) = trainers.get(model) else {
            eprintln!("no trainer `{model}`");
            continue;
        };
        let job = TrialJob {
            assignment: Assignment {
                trial: TrialId {
                    study: StudyId(1),
                    number: 0,
                },
                attempt: 0,
                study_name: "bench".into(),
                params: params(model, batch, train),
                trainer: TrainerConfig {
                    kind: model.into(),
                    dataset: spec.clone(),
                    epochs,
                    ..Default::default()
                },
                seed: 1,
                metric: "val_accuracy".into(),
                resource: Resource::Epochs,
                budget: epochs,
                max_resource: epochs,
                resume: None,
                save_final: false,
            },
            device,
            resume: None,
        };
        // Load and prepare the data once, outside the timing, as a worker's
        // cache does for every trial after its first.
        let _ = data.get(&spec, hpo_worker::data::DATA_SEED);
        let mut clock = Clock {
            at: Vec::new(),
            accuracy: f64::NAN,
        };
        let start = Instant::now();
        if let Err(e) = trainer.train(&job, &mut clock) {
            eprintln!("{model}: {e}");
            continue;
        }
        let mut previous = start;
        let ours: Vec<f64> = clock
            .at
            .iter()
            .map(|t| {
                let rate = train as f64 / t.duration_since(previous).as_secs_f64();
                previous = *t;
                rate
            })
            .collect();
        let out = std::process::Command::new(&python)
            .arg(root.join("worker/benches/pytorch_baseline.py"))
            .arg(&dir)
            .args([
                model,
                &epochs.to_string(),
                &batch.to_string(),
                &train.to_string(),
            ])
            .output();
        let theirs: Option<serde_json::Value> = out
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice(&o.stdout).ok());
        let (their_rate, their_acc) = match &theirs {
            Some(v) => (
                median(
                    v["samples_per_sec"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
                        .unwrap_or_default(),
                ),
                v["val_accuracy"].as_f64().unwrap_or(f64::NAN),
            ),
            None => (f64::NAN, f64::NAN),
        };
        let our_rate = median(ours.clone());
        println!(
            "| {model} | {our_rate:.0} | {their_rate:.0} | {:.2} | {:.4} | {their_acc:.4} |",
            our_rate / their_rate,
            clock.accuracy,
        );
        eprintln!("{model}: hpo epochs {ours:.0?} samples/s; PyTorch {theirs:?}");
    }
}
