//! The `cnn` and `resnet` trainers: learning, determinism, pause and resume,
//! checkpoints and bad settings. Their training loop is the mlp's (see
//! `mlp.rs` for the optimizers, schedules and budgets in depth).

use crate::mlp::square_images;
use crate::{
    TestReporter, fashion_mnist_dir, job_with, pause_then_resume_matches_an_uninterrupted_run,
    resumed, with_budget,
};
use hpo_proto::ParamValue::{self, Categorical, Float, Int};
use hpo_proto::Resource;
use hpo_worker::data::{DATA_SEED, DataCache};
use hpo_worker::trainer::{
    CnnTrainer, MlpTrainer, ResNetTrainer, TrainEnd, TrainError, Trainer, TrialJob,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

fn cat(s: &str) -> ParamValue {
    Categorical(s.to_string())
}

fn cnn() -> CnnTrainer {
    CnnTrainer::new(Arc::new(DataCache::new()))
}

fn resnet() -> ResNetTrainer {
    ResNetTrainer::new(Arc::new(DataCache::new()))
}

/// A CPU trial of the `kind` trainer with fixed `settings` too.
fn job_of(
    kind: &str,
    dataset: &str,
    epochs: u32,
    seed: u64,
    params: &[(&str, ParamValue)],
    settings: &[(&str, ParamValue)],
) -> TrialJob {
    let mut job = job_with(dataset, epochs, seed, params, settings);
    job.assignment.trainer.kind = kind.to_string();
    job
}

/// An 8×8 image set of three classes, a bright horizontal bar, a vertical
/// bar or a 2×2 square, at varying places on a dim, noisy background: a
/// task of local shapes, which convolutions learn in a few epochs.
fn bar_images(dir: &Path) -> String {
    use crate::data::{gz, idx};
    let write = |n: u32, offset: u32, images: &str, labels: &str| {
        let mut pixels = Vec::new();
        let mut ys = Vec::new();
        for i in offset..offset + n {
            let class = i % 3;
            ys.push(class as u8);
            let at = (i / 3 * 5 + 1) % 7;
            for p in 0..64u32 {
                let (r, c) = (p / 8, p % 8);
                let on = match class {
                    0 => r == at,
                    1 => c == at,
                    _ => (r == at || r == at + 1) && (c == 6 - at || c == 7 - at),
                };
                let noise = (i.wrapping_mul(2_654_435_761) ^ p.wrapping_mul(40_503)) % 60;
                pixels.push(if on { 190 + noise } else { noise } as u8);
            }
        }
        std::fs::write(dir.join(images), gz(&idx(&[n, 8, 8], &pixels))).unwrap();
        std::fs::write(dir.join(labels), idx(&[n], &ys)).unwrap();
    };
    write(
        300,
        0,
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte",
    );
    write(90, 1000, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte");
    format!("idx:{}", dir.display())
}

/// A trainer kind, its trainer and its parameters.
type Case<'a> = (&'a str, &'a dyn Trainer, &'a [(&'a str, ParamValue)]);

/// Small, quick architectures of each kind.
const SMALL_CNN: &[(&str, ParamValue)] = &[
    ("conv_layers", Int(2)),
    ("channels", Int(4)),
    ("hidden", Int(16)),
    ("batch_size", Int(32)),
    ("lr", Float(0.01)),
];
const SMALL_RESNET: &[(&str, ParamValue)] = &[
    ("depth", Int(1)),
    ("stages", Int(2)),
    ("width", Int(8)),
    ("batch_size", Int(32)),
    ("lr", Float(0.01)),
];

#[test]
fn cnn_and_resnet_learn_local_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let spec = bar_images(dir.path());
    let cases: [Case; 2] = [
        ("cnn", &cnn(), SMALL_CNN),
        ("resnet", &resnet(), SMALL_RESNET),
    ];
    for (kind, trainer, params) in cases {
        let mut reporter = TestReporter::default();
        let end = trainer
            .train(&job_of(kind, &spec, 8, 1, params, &[]), &mut reporter)
            .unwrap();
        assert_eq!(end, TrainEnd::Finished, "{kind}");
        let accuracy = reporter.last("val_accuracy");
        eprintln!("{kind}: {}{:?}", reporter.log, reporter.values().last());
        assert!(accuracy > 0.9, "{kind}: val_accuracy {accuracy}");
        assert!(
            reporter.log.starts_with(&format!("{kind} 1x8x8 -> ")),
            "{kind}: {}",
            reporter.log
        );
    }
}

/// The trial's log names the model and its size: for the 4×4 two-class
/// set, 1→4 channels (3×3, batch norm) pooled to 2×2, 4→8 pooled to 1×1,
/// then 8→8→2: (36 + 8) + (288 + 16) + (64 + 8) + (16 + 2) = 438.
#[test]
fn the_log_names_the_model_and_its_parameter_count() {
    let dir = tempfile::tempdir().unwrap();
    let spec = square_images(dir.path());
    let mut reporter = TestReporter::default();
    let params = [("channels", Int(4)), ("hidden", Int(8))];
    cnn()
        .train(&job_of("cnn", &spec, 1, 1, &params, &[]), &mut reporter)
        .unwrap();
    assert_eq!(
        reporter.log,
        "cnn 1x4x4 -> 4@2x2 -> 8@1x1 (3x3 kernels, batch norm, Max pooling, Relu) -> 8 -> 2; 438 trainable parameters\n"
    );
    let mut reporter = TestReporter::default();
    MlpTrainer::new(Arc::new(DataCache::new()))
        .train(
            &job_of("mlp", &spec, 1, 1, &[("hidden", Int(8))], &[]),
            &mut reporter,
        )
        .unwrap();
    assert_eq!(
        reporter.log,
        "mlp 16-8-2 (Relu); 154 trainable parameters\n"
    );
}

/// Pausing after epoch 2 and resuming from the checkpoint reports exactly
/// what an uninterrupted run does: weights, batch norm's running
/// statistics, the optimizer's state, early stopping's best weights and the
/// epochs' dropout and augmentation streams all carry over.
#[test]
fn cnn_and_resnet_pause_then_resume_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let spec = bar_images(dir.path());
    let shared = [
        ("dropout", Float(0.2)),
        ("augment_shift", Int(1)),
        ("lr_schedule", cat("cosine")),
        ("early_stopping_patience", Int(10)),
        ("weight_decay", Float(1e-4)),
        ("l1", Float(1e-5)),
    ];
    let cnn_cases: [&[(&str, ParamValue)]; 3] = [
        &[("optimizer", cat("adamw"))],
        &[
            ("optimizer", cat("sgd")),
            ("nesterov", Int(1)),
            ("pool", cat("avg")),
            ("kernel_size", Int(5)),
        ],
        &[
            ("batch_norm", Int(0)),
            ("pool", cat("none")),
            ("hidden", Int(0)),
        ],
    ];
    for extra in cnn_cases {
        let mut settings = shared.to_vec();
        settings.extend_from_slice(extra);
        let job = job_of("cnn", &spec, 6, 5, SMALL_CNN, &settings);
        pause_then_resume_matches_an_uninterrupted_run(&cnn(), &job);
    }
    for preactivation in [0, 1] {
        let mut settings = shared.to_vec();
        settings.push(("preactivation", Int(preactivation)));
        let job = job_of("resnet", &spec, 6, 5, SMALL_RESNET, &settings);
        pause_then_resume_matches_an_uninterrupted_run(&resnet(), &job);
    }
}

/// A budget below the maximum ends paused; the next rung resumes from it
/// and the pieces make up the uninterrupted run.
#[test]
fn cnn_budgets_resume_across_rungs() {
    let dir = tempfile::tempdir().unwrap();
    let spec = bar_images(dir.path());
    let trainer = cnn();
    let job = job_of("cnn", &spec, 3, 2, SMALL_CNN, &[("dropout", Float(0.3))]);
    let mut whole = TestReporter::default();
    trainer.train(&job, &mut whole).unwrap();
    let mut first = TestReporter::default();
    let TrainEnd::Paused { step, checkpoint } =
        trainer.train(&with_budget(&job, 1), &mut first).unwrap()
    else {
        panic!("expected a pause at the budget");
    };
    assert_eq!(step, 1);
    let mut rest = TestReporter::default();
    let end = trainer
        .train(&resumed(&job, 1, &checkpoint, 3), &mut rest)
        .unwrap();
    assert_eq!(end, TrainEnd::Finished);
    let mut pieces = first.history();
    pieces.extend(rest.history());
    assert_eq!(pieces, whole.history());
}

/// Data-fraction budgets train a CNN on a share of the examples, once per
/// segment, deterministically.
#[test]
fn cnn_data_fraction_segments() {
    let dir = tempfile::tempdir().unwrap();
    let spec = bar_images(dir.path());
    let trainer = cnn();
    let mut job = job_of("cnn", &spec, 1, 3, SMALL_CNN, &[]);
    job.assignment.resource = Resource::DataFraction;
    job.assignment.max_resource = 4;
    job.assignment.budget = 4;
    let mut quarter = TestReporter::default();
    let TrainEnd::Paused { step, checkpoint } =
        trainer.train(&with_budget(&job, 1), &mut quarter).unwrap()
    else {
        panic!("expected a pause at budget 1");
    };
    assert_eq!((step, quarter.steps()), (1, vec![1]));
    // 300 × 1/4 = 75 examples in batches of 32: 3 batches, polled once
    // each, once at the start and once before the report.
    assert_eq!(quarter.polls(), 1 + 3 + 1);
    let mut again = TestReporter::default();
    trainer.train(&with_budget(&job, 1), &mut again).unwrap();
    assert_eq!(again.values(), quarter.values());
    let mut full = TestReporter::default();
    let end = trainer
        .train(&resumed(&job, 1, &checkpoint, 4), &mut full)
        .unwrap();
    assert_eq!((end, full.steps()), (TrainEnd::Finished, vec![4]));
}

#[test]
fn same_seed_gives_the_same_metrics_even_concurrently() {
    let dir = tempfile::tempdir().unwrap();
    let spec = bar_images(dir.path());
    let (c, r) = (cnn(), resnet());
    let run = |kind: &str, seed: u64| {
        let (trainer, params): (&dyn Trainer, _) = match kind {
            "cnn" => (&c, SMALL_CNN),
            _ => (&r, SMALL_RESNET),
        };
        let settings = [("dropout", Float(0.2)), ("augment_hflip", Int(1))];
        let mut reporter = TestReporter::default();
        trainer
            .train(
                &job_of(kind, &spec, 2, seed, params, &settings),
                &mut reporter,
            )
            .unwrap();
        reporter.values()
    };
    for kind in ["cnn", "resnet"] {
        let first = run(kind, 42);
        assert_eq!(first, run(kind, 42), "{kind}");
        assert_ne!(first, run(kind, 43), "{kind}");
        // Two slots training at once do not disturb each other's streams.
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| run(kind, 42));
            let b = s.spawn(|| run(kind, 43));
            (a.join().unwrap(), b.join().unwrap())
        });
        assert_eq!(a, first, "{kind}");
        assert_eq!(b, run(kind, 43), "{kind}");
    }
}

#[test]
fn non_image_data_sets_are_refused_naming_the_trainer() {
    let cases: [(&str, &dyn Trainer); 2] = [("cnn", &cnn()), ("resnet", &resnet())];
    for (kind, trainer) in cases {
        let mut reporter = TestReporter::default();
        let err = trainer
            .train(
                &job_of(kind, "synthetic:spirals", 1, 1, &[], &[]),
                &mut reporter,
            )
            .unwrap_err();
        assert!(matches!(err, TrainError::Invalid(_)), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "invalid trial setting: the {kind} trainer needs an image data set (idx:DIR, such as MNIST or Fashion-MNIST); `synthetic:spirals` is not one"
            )
        );
        assert!(reporter.reports.is_empty());
    }
}

#[test]
fn bad_architecture_parameters_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let spec = square_images(dir.path());
    let cnn_cases = [
        ("kernel_size", Int(4)),
        ("kernel_size", Int(9)),
        ("conv_layers", Int(0)),
        ("conv_layers", Int(7)),
        ("channels", Int(3)),
        ("channels", Int(513)),
        ("batch_norm", Int(2)),
        ("pool", cat("min")),
        ("hidden", Int(-1)),
        ("activation", cat("swish")),
        ("dropout", Float(1.0)),
        ("optimizer", cat("adagrad")),
    ];
    let resnet_cases = [
        ("depth", Int(0)),
        ("depth", Int(9)),
        ("stages", Int(1)),
        ("stages", Int(4)),
        ("width", Int(4)),
        ("width", Int(512)),
        ("preactivation", Int(2)),
        ("lr", Float(0.0)),
    ];
    let cases: [Case; 2] = [
        ("cnn", &cnn(), &cnn_cases),
        ("resnet", &resnet(), &resnet_cases),
    ];
    for (kind, trainer, cases) in cases {
        for (name, value) in cases {
            let mut reporter = TestReporter::default();
            let err = trainer
                .train(
                    &job_of(kind, &spec, 1, 1, &[(name, value.clone())], &[]),
                    &mut reporter,
                )
                .unwrap_err();
            match &err {
                TrainError::Invalid(msg) => {
                    assert!(msg.starts_with(name), "{kind} {name}={value}: {msg}")
                }
                other => panic!("{kind} {name}={value}: expected invalid, got {other:?}"),
            }
            assert!(reporter.reports.is_empty());
        }
    }
    let err = cnn()
        .train(
            &job_of("cnn", &spec, 1, 1, &[("kernel_size", Int(4))], &[]),
            &mut TestReporter::default(),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid trial setting: kernel_size must be one of 3, 5, 7, got `4`"
    );
    // Integral floats are integers here too.
    let end = cnn()
        .train(
            &job_of("cnn", &spec, 1, 1, &[("kernel_size", Float(5.0))], &[]),
            &mut TestReporter::default(),
        )
        .unwrap();
    assert_eq!(end, TrainEnd::Finished);
}

/// A checkpoint names its trainer: a `cnn` checkpoint is refused by the
/// `resnet` trainer (and the mlp's by the `cnn`) with a message that says
/// so; another architecture of the same kind is another configuration.
#[test]
fn checkpoints_are_refused_by_another_model_kind() {
    let dir = tempfile::tempdir().unwrap();
    let spec = bar_images(dir.path());
    let pause = |trainer: &dyn Trainer, job: &TrialJob| {
        let TrainEnd::Paused { checkpoint, .. } = trainer
            .train(&with_budget(job, 1), &mut TestReporter::default())
            .unwrap()
        else {
            panic!("expected a pause");
        };
        checkpoint
    };
    let refusal = |trainer: &dyn Trainer, job: &TrialJob, bytes: &[u8]| {
        let mut reporter = TestReporter::default();
        let err = trainer
            .train(&resumed(job, 1, bytes, 2), &mut reporter)
            .unwrap_err();
        assert!(reporter.reports.is_empty());
        err.to_string()
    };
    let cnn_job = job_of("cnn", &spec, 2, 1, SMALL_CNN, &[]);
    let resnet_job = job_of("resnet", &spec, 2, 1, SMALL_RESNET, &[]);
    let mlp_job = job_of("mlp", &spec, 2, 1, &[("hidden", Int(8))], &[]);
    let from_cnn = pause(&cnn(), &cnn_job);
    assert!(from_cnn.starts_with(b"hpo-cnn\0"));
    let from_resnet = pause(&resnet(), &resnet_job);
    assert!(from_resnet.starts_with(b"hpo-res\0"));
    let from_mlp = pause(&MlpTrainer::new(Arc::new(DataCache::new())), &mlp_job);

    assert_eq!(
        refusal(&resnet(), &resnet_job, &from_cnn),
        "invalid trial setting: cannot resume from the checkpoint: it is a checkpoint of the cnn trainer, this trial is of the resnet trainer"
    );
    let msg = refusal(&cnn(), &cnn_job, &from_mlp);
    assert!(
        msg.ends_with("it is a checkpoint of the mlp trainer, this trial is of the cnn trainer"),
        "{msg}"
    );
    let msg = refusal(&cnn(), &cnn_job, &from_resnet);
    assert!(msg.contains("of the resnet trainer"), "{msg}");
    let msg = refusal(
        &cnn(),
        &cnn_job,
        b"not a checkpoint, but long enough to hold a header",
    );
    assert!(msg.contains("not a checkpoint of the cnn trainer"), "{msg}");
    let mut wider = cnn_job.clone();
    wider
        .assignment
        .params
        .insert("channels".to_string(), Int(8));
    let msg = refusal(&cnn(), &wider, &from_cnn);
    assert!(msg.contains("another configuration"), "{msg}");
}

/// The final model is the checkpoint a pause at the end would save, and a
/// resume from it at the last step saves the same bytes again.
#[test]
fn resnet_final_model_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let spec = bar_images(dir.path());
    let mut job = job_of("resnet", &spec, 2, 4, SMALL_RESNET, &[]);
    job.assignment.save_final = true;
    crate::final_model_round_trips(&resnet(), &job, b"hpo-res\0");
}

#[test]
fn cnn_and_resnet_train_on_cuda_when_a_gpu_is_present() {
    if !tch::Cuda::is_available() {
        eprintln!("skipping: no CUDA device");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = bar_images(dir.path());
    let cases: [Case; 2] = [
        ("cnn", &cnn(), SMALL_CNN),
        ("resnet", &resnet(), SMALL_RESNET),
    ];
    for (kind, trainer, params) in cases {
        let mut job = job_of(kind, &spec, 6, 1, params, &[("dropout", Float(0.1))]);
        job.device = hpo_worker::device::Device::Cuda(0);
        let mut reporter = TestReporter::default();
        let end = trainer.train(&job, &mut reporter).unwrap();
        assert_eq!(end, TrainEnd::Finished, "{kind}");
        let accuracy = reporter.last("val_accuracy");
        assert!(accuracy > 0.8, "{kind} on CUDA: val_accuracy {accuracy}");
    }
}

/// The acceptance test: a small CNN reaches 85% test accuracy on
/// Fashion-MNIST in a short CPU run (a subset of the training set, the
/// full 10k test set).
#[test]
fn fashion_mnist_cnn_reaches_85_percent_in_a_short_run() {
    let Some(dir) = fashion_mnist_dir() else {
        return;
    };
    let spec = format!("idx:{}", dir.display());
    let cache = Arc::new(DataCache::new());
    let t0 = Instant::now();
    let data = cache.get(&spec, DATA_SEED).unwrap();
    eprintln!("fashion-mnist loaded in {:.2?}", t0.elapsed());
    let trainer = CnnTrainer::new(Arc::clone(&cache));
    let job = job_of(
        "cnn",
        &spec,
        3,
        1,
        &[
            ("conv_layers", Int(2)),
            ("channels", Int(16)),
            ("hidden", Int(64)),
            ("lr", Float(2e-3)),
            ("batch_size", Int(64)),
            ("train_subset", Int(30_000)),
        ],
        &[],
    );
    let mut reporter = TestReporter::default();
    let start = Instant::now();
    let end = trainer.train(&job, &mut reporter).unwrap();
    assert_eq!(end, TrainEnd::Finished);
    let mut previous = start;
    for (step, values, at) in &reporter.reports {
        eprintln!(
            "fashion-mnist cnn epoch {step}: {:.2?}, {values:?}",
            at.duration_since(previous)
        );
        previous = *at;
    }
    let accuracy = reporter.last("val_accuracy");
    eprintln!(
        "{}fashion-mnist cnn: val_accuracy {accuracy:.4} on {} test images in {:.2?}",
        reporter.log,
        data.val_len(),
        start.elapsed()
    );
    assert_eq!(data.val_len(), 10_000);
    assert!(accuracy >= 0.85, "val_accuracy {accuracy}");
}

/// A small ResNet on Fashion-MNIST, for the record (minutes on 2 CPU cores):
/// `cargo test -p hpo-worker --release --test it -- --ignored --nocapture resnet_on_fashion`.
#[test]
#[ignore = "a measurement, not a check"]
fn resnet_on_fashion_mnist() {
    let Some(dir) = fashion_mnist_dir() else {
        return;
    };
    let spec = format!("idx:{}", dir.display());
    let job = job_of(
        "resnet",
        &spec,
        2,
        1,
        &[
            ("depth", Int(1)),
            ("width", Int(16)),
            ("lr", Float(2e-3)),
            ("batch_size", Int(64)),
            ("train_subset", Int(20_000)),
        ],
        &[],
    );
    let mut reporter = TestReporter::default();
    let start = Instant::now();
    resnet().train(&job, &mut reporter).unwrap();
    eprintln!(
        "{}fashion-mnist resnet: val_accuracy {:.4} in {:.2?}",
        reporter.log,
        reporter.last("val_accuracy"),
        start.elapsed()
    );
}
