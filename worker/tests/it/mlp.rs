//! The `mlp` trainer: learning, determinism, stopping and bad settings.

use crate::{TestReporter, fashion_mnist_dir, job, job_with};
use hpo_proto::ParamValue::{Categorical, Float, Int};
use hpo_worker::data::{DATA_SEED, DataCache};
use hpo_worker::trainer::{MlpTrainer, TrainEnd, TrainError, Trainer};
use std::sync::Arc;
use std::time::Instant;

fn trainer() -> MlpTrainer {
    MlpTrainer::new(Arc::new(DataCache::new()))
}

fn cat(s: &str) -> hpo_proto::ParamValue {
    Categorical(s.to_string())
}

#[test]
fn fashion_mnist_reaches_80_percent_in_two_epochs() {
    let Some(dir) = fashion_mnist_dir() else {
        return;
    };
    let spec = format!("idx:{}", dir.display());
    let cache = Arc::new(DataCache::new());
    let t0 = Instant::now();
    let data = cache.get(&spec, DATA_SEED).unwrap();
    eprintln!("fashion-mnist loaded in {:.2?}: {data:?}", t0.elapsed());
    assert_eq!(
        (
            data.train_len(),
            data.val_len(),
            data.features,
            data.classes
        ),
        (60_000, 10_000, 784, 10)
    );

    let trainer = MlpTrainer::new(Arc::clone(&cache));
    let job = job(
        &spec,
        2,
        1,
        &[
            ("hidden", Int(256)),
            ("optimizer", cat("adam")),
            ("lr", Float(1e-3)),
            ("batch_size", Int(128)),
        ],
    );
    let mut reporter = TestReporter::default();
    let start = Instant::now();
    let end = trainer.train(&job, &mut reporter).unwrap();
    assert_eq!(end, TrainEnd::Finished);
    assert_eq!(reporter.reports.len(), 2);
    let mut previous = start;
    for (step, values, at) in &reporter.reports {
        eprintln!(
            "fashion-mnist epoch {step}: {:.2?}, {values:?}",
            at.duration_since(previous)
        );
        previous = *at;
    }
    let accuracy = reporter.last("val_accuracy");
    assert!(accuracy >= 0.80, "val_accuracy {accuracy} after 2 epochs");
}

#[test]
fn reports_each_epoch_with_the_three_metrics() {
    let mut reporter = TestReporter::default();
    let end = trainer()
        .train(
            &job("synthetic:spirals", 3, 5, &[("hidden", Int(64))]),
            &mut reporter,
        )
        .unwrap();
    assert_eq!(end, TrainEnd::Finished);
    let steps: Vec<u32> = reporter.reports.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(steps, [1, 2, 3]);
    for values in reporter.values() {
        let keys: Vec<&str> = values.keys().map(String::as_str).collect();
        assert_eq!(keys, ["train_loss", "val_accuracy", "val_loss"]);
        assert!((0.0..=1.0).contains(&values["val_accuracy"]));
        assert!(values["train_loss"].is_finite() && values["val_loss"].is_finite());
    }
}

#[test]
fn spirals_are_learnt_by_a_small_mlp() {
    let mut reporter = TestReporter::default();
    let params = [
        ("hidden", Int(64)),
        ("layers", Int(2)),
        ("lr", Float(0.01)),
        ("batch_size", Int(32)),
    ];
    trainer()
        .train(&job("synthetic:spirals", 10, 3, &params), &mut reporter)
        .unwrap();
    let accuracy = reporter.last("val_accuracy");
    assert!(accuracy > 0.85, "spirals val_accuracy {accuracy}");
}

#[test]
fn blobs_are_learnable_but_not_trivial() {
    let trainer = trainer();
    let mut reporter = TestReporter::default();
    let params = [("hidden", Int(256)), ("lr", Float(1e-3))];
    trainer
        .train(&job("synthetic:blobs", 5, 1, &params), &mut reporter)
        .unwrap();
    let accuracy = reporter.last("val_accuracy");
    eprintln!("blobs, 5 epochs: {:?}", reporter.values());
    assert!(
        (0.70..=0.95).contains(&accuracy),
        "blobs val_accuracy {accuracy}"
    );
}

#[test]
fn same_seed_gives_the_same_metrics_and_another_seed_does_not() {
    let trainer = trainer();
    // Dropout on, so the masks' generator is covered too.
    let params = [
        ("hidden", Int(32)),
        ("layers", Int(2)),
        ("dropout", Float(0.2)),
        ("batch_size", Int(64)),
    ];
    let run = |seed| {
        let mut reporter = TestReporter::default();
        trainer
            .train(&job("synthetic:spirals", 3, seed, &params), &mut reporter)
            .unwrap();
        reporter.values()
    };
    let first = run(42);
    assert_eq!(first, run(42));
    assert_ne!(first, run(43));
}

#[test]
fn concurrent_trials_match_sequential_ones() {
    // Two slots training at once must not disturb each other's randomness.
    let trainer = trainer();
    let params = [("hidden", Int(48)), ("dropout", Float(0.1))];
    let run = |seed| {
        let mut reporter = TestReporter::default();
        trainer
            .train(&job("synthetic:blobs", 2, seed, &params), &mut reporter)
            .unwrap();
        reporter.values()
    };
    let (a, b) = (run(1), run(2));
    let (ca, cb) = std::thread::scope(|s| {
        let ta = s.spawn(|| run(1));
        let tb = s.spawn(|| run(2));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert_eq!(a, ca);
    assert_eq!(b, cb);
}

#[test]
fn stop_decision_ends_the_trial_after_that_report() {
    let mut reporter = TestReporter {
        stop_at: Some(1),
        ..Default::default()
    };
    let end = trainer()
        .train(&job("synthetic:spirals", 5, 1, &[]), &mut reporter)
        .unwrap();
    assert_eq!(end, TrainEnd::Stopped);
    assert_eq!(reporter.reports.len(), 1);
}

#[test]
fn stop_requested_before_start_reports_nothing() {
    let mut reporter = TestReporter {
        stop_now: true,
        ..Default::default()
    };
    let end = trainer()
        .train(&job("synthetic:spirals", 5, 1, &[]), &mut reporter)
        .unwrap();
    assert_eq!(end, TrainEnd::Stopped);
    assert!(reporter.reports.is_empty());
}

#[test]
fn stop_requested_between_batches_is_prompt() {
    // 2400 examples in batches of 16: 150 batches an epoch. Stopping after
    // the fifth poll must not wait for the end of the epoch.
    let mut reporter = TestReporter {
        stop_after_polls: Some(5),
        ..Default::default()
    };
    let end = trainer()
        .train(
            &job("synthetic:spirals", 3, 1, &[("batch_size", Int(16))]),
            &mut reporter,
        )
        .unwrap();
    assert_eq!(end, TrainEnd::Stopped);
    assert!(reporter.reports.is_empty());
    assert_eq!(reporter.polls(), 6);
}

#[test]
fn stop_requested_after_a_report_ends_before_the_next() {
    let mut reporter = TestReporter {
        stop_after_reports: Some(1),
        ..Default::default()
    };
    let end = trainer()
        .train(&job("synthetic:spirals", 5, 1, &[]), &mut reporter)
        .unwrap();
    assert_eq!(end, TrainEnd::Stopped);
    assert_eq!(reporter.reports.len(), 1);
}

#[test]
fn every_activation_and_optimizer_trains() {
    let trainer = trainer();
    for activation in ["relu", "tanh", "gelu", "sigmoid"] {
        for optimizer in ["adam", "adamw", "sgd"] {
            let params = [
                ("activation", cat(activation)),
                ("optimizer", cat(optimizer)),
                ("hidden", Int(16)),
                ("layers", Int(2)),
                ("dropout", Float(0.1)),
                ("weight_decay", Int(0)),
                ("momentum", Float(0.8)),
                ("lr", Float(0.01)),
            ];
            let mut reporter = TestReporter::default();
            let end = trainer
                .train(&job("synthetic:spirals", 1, 1, &params), &mut reporter)
                .unwrap();
            assert_eq!(end, TrainEnd::Finished, "{activation}/{optimizer}");
            assert!(
                reporter.last("train_loss").is_finite(),
                "{activation}/{optimizer}"
            );
        }
    }
}

#[test]
fn fixed_settings_are_read_and_searched_values_win() {
    let trainer = trainer();
    // A bad fixed setting is read (and refused) ...
    let mut reporter = TestReporter::default();
    let err = trainer
        .train(
            &job_with(
                "synthetic:spirals",
                1,
                1,
                &[],
                &[("optimizer", cat("rmsprop"))],
            ),
            &mut reporter,
        )
        .unwrap_err();
    assert!(matches!(err, TrainError::Invalid(_)), "{err}");
    // ... unless the searched value of the same name overrides it.
    let end = trainer
        .train(
            &job_with(
                "synthetic:spirals",
                1,
                1,
                &[("optimizer", cat("sgd"))],
                &[("optimizer", cat("rmsprop"))],
            ),
            &mut reporter,
        )
        .unwrap();
    assert_eq!(end, TrainEnd::Finished);
}

#[test]
fn train_subset_trains_on_fewer_examples() {
    let trainer = trainer();
    let run = |subset| {
        let mut reporter = TestReporter::default();
        trainer
            .train(
                &job("synthetic:spirals", 1, 1, &[("train_subset", Int(subset))]),
                &mut reporter,
            )
            .unwrap();
        reporter.values()
    };
    // Larger than the set means all of it.
    assert_eq!(run(0), run(1_000_000));
    assert_ne!(run(0), run(100));
}

#[test]
fn bad_parameters_are_invalid_and_named() {
    let trainer = trainer();
    let cases = [
        ("optimizer", cat("rmsprop")),
        ("activation", cat("swish")),
        ("hidden", cat("wide")),
        ("hidden", Int(0)),
        ("hidden", Float(12.5)),
        ("layers", Int(-1)),
        ("lr", cat("fast")),
        ("lr", Float(0.0)),
        ("dropout", Float(1.0)),
        ("momentum", Float(f64::NAN)),
        ("weight_decay", Float(-0.1)),
        ("batch_size", Int(0)),
        ("train_subset", Int(-5)),
    ];
    for (name, value) in cases {
        let mut reporter = TestReporter::default();
        let err = trainer
            .train(
                &job("synthetic:spirals", 1, 1, &[(name, value.clone())]),
                &mut reporter,
            )
            .unwrap_err();
        match &err {
            TrainError::Invalid(msg) => assert!(msg.starts_with(name), "{name}={value}: {msg}"),
            other => panic!("{name}={value}: expected invalid, got {other:?}"),
        }
        assert!(reporter.reports.is_empty());
    }
    let err = trainer
        .train(
            &job("synthetic:spirals", 1, 1, &[("optimizer", cat("rmsprop"))]),
            &mut TestReporter::default(),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid trial setting: optimizer must be one of adam, adamw, sgd, got `rmsprop`"
    );
}

#[test]
fn integers_are_accepted_for_floats_and_integral_floats_for_integers() {
    let params = [
        ("weight_decay", Int(0)),
        ("lr", Int(1)),
        ("hidden", Float(8.0)),
        ("optimizer", cat("sgd")),
    ];
    let end = trainer()
        .train(
            &job("synthetic:spirals", 1, 1, &params),
            &mut TestReporter::default(),
        )
        .unwrap();
    assert_eq!(end, TrainEnd::Finished);
}

#[test]
fn zero_epochs_and_missing_data_sets_are_errors() {
    let trainer = trainer();
    let err = trainer
        .train(
            &job("synthetic:spirals", 0, 1, &[]),
            &mut TestReporter::default(),
        )
        .unwrap_err();
    assert!(matches!(err, TrainError::Invalid(_)), "{err}");
    let err = trainer
        .train(
            &job("synthetic:moons", 1, 1, &[]),
            &mut TestReporter::default(),
        )
        .unwrap_err();
    assert!(matches!(err, TrainError::Data(_)), "{err}");
    assert!(err.to_string().contains("synthetic:moons"), "{err}");
}

#[test]
fn a_diverging_trial_reports_instead_of_panicking() {
    let params = [
        ("optimizer", cat("sgd")),
        ("lr", Float(1e12)),
        ("momentum", Float(0.9)),
    ];
    let mut reporter = TestReporter::default();
    let end = trainer()
        .train(&job("synthetic:blobs", 2, 1, &params), &mut reporter)
        .unwrap();
    assert_eq!(end, TrainEnd::Finished);
    assert_eq!(reporter.reports.len(), 2);
    let loss = reporter.last("train_loss");
    assert!(!loss.is_finite() || loss > 1e3, "train_loss {loss}");
}

#[test]
fn trains_on_cuda_when_a_gpu_is_present() {
    if !tch::Cuda::is_available() {
        eprintln!("skipping: no CUDA device");
        return;
    }
    let mut job = job("synthetic:blobs", 2, 1, &[("dropout", Float(0.2))]);
    job.device = hpo_worker::device::Device::Cuda(0);
    let mut reporter = TestReporter::default();
    let end = trainer().train(&job, &mut reporter).unwrap();
    assert_eq!(end, TrainEnd::Finished);
    assert!(reporter.last("val_accuracy") > 0.5);
}
