//! The `mlp` trainer: learning, determinism, stopping and bad settings.

use crate::{TestReporter, fashion_mnist_dir, job, job_with, resumed, with_budget};
use hpo_proto::ParamValue::{Categorical, Float, Int};
use hpo_proto::Resource;
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
        assert_eq!(
            keys,
            [
                "train_loss",
                "val_accuracy",
                "val_f1",
                "val_loss",
                "val_precision",
                "val_recall"
            ]
        );
        assert!((0.0..=1.0).contains(&values["val_accuracy"]));
        assert!(values["train_loss"].is_finite() && values["val_loss"].is_finite());
    }
    // The throughput comes with every epoch (values() leaves it out, as it
    // differs between two runs of the same seed).
    for (_, values, _) in &reporter.reports {
        let rate = values[hpo_worker::trainer::SAMPLES_PER_SEC];
        assert!(rate.is_finite() && rate > 0.0, "{values:?}");
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
                &[("optimizer", cat("adagrad"))],
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
                &[("optimizer", cat("adagrad"))],
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
        ("optimizer", cat("adagrad")),
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
        ("nesterov", Int(2)),
        ("l1", Float(-1.0)),
        ("label_smoothing", Float(1.0)),
        ("grad_clip", Float(-1.0)),
        ("early_stopping_patience", Int(-1)),
        ("early_stopping_metric", cat("val_mse")),
        ("lr_schedule", cat("linear")),
        ("balance", cat("smote")),
        ("augment_shift", Int(100)),
        ("restore_best", Int(3)),
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
            &job("synthetic:spirals", 1, 1, &[("optimizer", cat("adagrad"))]),
            &mut TestReporter::default(),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid trial setting: optimizer must be one of adam, adamw, sgd, rmsprop, got `adagrad`"
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

// ---- segments: pause, resume, budgets, data fractions ----

/// A small spirals trial with dropout, so the masks' streams are covered.
fn segment_job(optimizer: &str, epochs: u32) -> hpo_worker::trainer::TrialJob {
    segment_job_with(optimizer, epochs, &[])
}

/// `segment_job` with fixed `settings` too (schedules, regularisation).
fn segment_job_with(
    optimizer: &str,
    epochs: u32,
    settings: &[(&str, hpo_proto::ParamValue)],
) -> hpo_worker::trainer::TrialJob {
    job_with(
        "synthetic:spirals",
        epochs,
        11,
        &[
            ("hidden", Int(32)),
            ("layers", Int(2)),
            ("dropout", Float(0.2)),
            ("batch_size", Int(64)),
            ("optimizer", cat(optimizer)),
            ("weight_decay", Float(1e-3)),
            ("lr", Float(0.01)),
        ],
        settings,
    )
}

#[test]
fn mlp_pause_then_resume_is_bit_identical_for_every_optimizer() {
    let trainer = trainer();
    let cases: Vec<(&str, Vec<(&str, hpo_proto::ParamValue)>)> = vec![
        ("adam", vec![]),
        ("adamw", vec![]),
        ("sgd", vec![]),
        ("rmsprop", vec![]),
        // Schedules go on along the same steps after a resume...
        (
            "sgd",
            vec![
                ("nesterov", Int(1)),
                ("lr_schedule", cat("cosine_restarts")),
                ("sgdr_t0", Int(2)),
                ("warmup_epochs", Float(0.5)),
            ],
        ),
        // ... and early stopping's state and best weights are restored.
        (
            "adam",
            vec![
                ("lr_schedule", cat("one_cycle")),
                ("early_stopping_patience", Int(10)),
                ("l1", Float(1e-4)),
                ("grad_clip", Float(0.5)),
                ("label_smoothing", Float(0.1)),
            ],
        ),
    ];
    for (optimizer, settings) in cases {
        let job = segment_job_with(optimizer, 5, &settings);
        let optimizer = format!("{optimizer} {settings:?}");
        let mut whole = TestReporter::default();
        assert_eq!(trainer.train(&job, &mut whole).unwrap(), TrainEnd::Finished);

        let mut first = TestReporter {
            pause_at: Some(2),
            ..Default::default()
        };
        let TrainEnd::Paused { step, checkpoint } = trainer.train(&job, &mut first).unwrap() else {
            panic!("{optimizer}: expected a pause at step 2");
        };
        assert_eq!(step, 2, "{optimizer}");
        assert_eq!(first.history(), whole.history()[..2], "{optimizer}");

        let mut rest = TestReporter::default();
        let end = trainer
            .train(&resumed(&job, 2, &checkpoint, 5), &mut rest)
            .unwrap();
        assert_eq!(end, TrainEnd::Finished, "{optimizer}");
        assert_eq!(rest.steps(), [3, 4, 5], "{optimizer}");
        // Exactly equal, not approximately: weights, optimizer state and
        // the epochs' random streams are all restored.
        assert_eq!(rest.history(), whole.history()[2..], "{optimizer}");
    }
}

#[test]
fn mlp_budget_below_the_maximum_ends_paused_and_resumes_across_rungs() {
    let trainer = trainer();
    let job = segment_job("sgd", 4);
    let mut whole = TestReporter::default();
    trainer.train(&job, &mut whole).unwrap();

    let mut first = TestReporter::default();
    let TrainEnd::Paused { step, checkpoint } =
        trainer.train(&with_budget(&job, 1), &mut first).unwrap()
    else {
        panic!("expected a pause at the budget");
    };
    assert_eq!((step, first.steps()), (1, vec![1]));
    let mut second = TestReporter::default();
    let TrainEnd::Paused {
        step,
        checkpoint: checkpoint2,
    } = trainer
        .train(&resumed(&job, 1, &checkpoint, 3), &mut second)
        .unwrap()
    else {
        panic!("expected a pause at the second budget");
    };
    assert_eq!((step, second.steps()), (3, vec![2, 3]));
    let mut third = TestReporter::default();
    let end = trainer
        .train(&resumed(&job, 3, &checkpoint2, 4), &mut third)
        .unwrap();
    assert_eq!(end, TrainEnd::Finished);
    let mut pieces = first.history();
    pieces.extend(second.history());
    pieces.extend(third.history());
    assert_eq!(pieces, whole.history());
}

#[test]
fn mlp_refuses_corrupt_or_foreign_checkpoints_with_a_clear_error() {
    let trainer = trainer();
    let job = segment_job("adam", 4);
    let TrainEnd::Paused { checkpoint, .. } = trainer
        .train(&with_budget(&job, 2), &mut TestReporter::default())
        .unwrap()
    else {
        panic!("expected a pause");
    };
    let resume_with = |job: &hpo_worker::trainer::TrialJob, step, bytes: &[u8]| {
        let mut reporter = TestReporter::default();
        let result = trainer.train(&resumed(job, step, bytes, 4), &mut reporter);
        assert!(reporter.reports.is_empty());
        match result {
            Err(TrainError::Invalid(msg)) => msg,
            other => panic!("expected an invalid checkpoint, got {other:?}"),
        }
    };

    let mut flipped = checkpoint.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0xff;
    let truncated = &checkpoint[..checkpoint.len() / 2];
    let cases: [(&[u8], &str); 4] = [
        (b"", "not a checkpoint of the mlp trainer"),
        (
            b"definitely not a checkpoint at all, but long enough",
            "not a checkpoint",
        ),
        (&flipped, "truncated or corrupt"),
        (truncated, "truncated or corrupt"),
    ];
    for (bytes, expected) in cases {
        let msg = resume_with(&job, 2, bytes);
        assert!(msg.contains(expected), "{msg}");
    }
    // The right bytes for the wrong step, or for another configuration.
    let msg = resume_with(&job, 3, &checkpoint);
    assert!(msg.contains("of step 2"), "{msg}");
    let mut other = segment_job("adam", 4);
    other
        .assignment
        .params
        .insert("hidden".to_string(), Int(16));
    let msg = resume_with(&other, 2, &checkpoint);
    assert!(msg.contains("another configuration"), "{msg}");
    // And a resume that lost its bytes.
    let mut lost = resumed(&job, 2, &checkpoint, 4);
    lost.resume = None;
    let err = trainer
        .train(&lost, &mut TestReporter::default())
        .unwrap_err();
    assert!(err.to_string().contains("needs the checkpoint"), "{err}");
}

/// A data-fraction trial of `epochs` epochs per segment, up to budget 4.
fn fraction_job(epochs: u32) -> hpo_worker::trainer::TrialJob {
    let mut job = job(
        "synthetic:spirals",
        epochs,
        3,
        &[
            ("hidden", Int(16)),
            ("batch_size", Int(10)),
            ("train_subset", Int(400)),
        ],
    );
    job.assignment.resource = Resource::DataFraction;
    job.assignment.max_resource = 4;
    job.assignment.budget = 4;
    job
}

#[test]
fn mlp_data_fraction_trains_on_a_share_and_reports_once_at_the_budget() {
    let trainer = trainer();
    let job = fraction_job(2);
    // Budget 1 of 4: a quarter of the 400 capped examples, 100 in batches of
    // 10. The reporter is polled once at the start, once per batch, and once
    // before the report: 1 + 2 × 10 + 1.
    let mut quarter = TestReporter::default();
    let TrainEnd::Paused { step, checkpoint } =
        trainer.train(&with_budget(&job, 1), &mut quarter).unwrap()
    else {
        panic!("expected a pause at budget 1");
    };
    assert_eq!((step, quarter.steps()), (1, vec![1]));
    assert_eq!(quarter.polls(), 1 + 2 * 10 + 1);
    let keys: Vec<String> = quarter.values()[0].keys().cloned().collect();
    assert_eq!(
        keys,
        [
            "train_loss",
            "val_accuracy",
            "val_f1",
            "val_loss",
            "val_precision",
            "val_recall"
        ]
    );

    // Promoted to the full budget: all 400 examples, 40 batches an epoch.
    let mut full = TestReporter::default();
    let end = trainer
        .train(&resumed(&job, 1, &checkpoint, 4), &mut full)
        .unwrap();
    assert_eq!((end, full.steps()), (TrainEnd::Finished, vec![4]));
    assert_eq!(full.polls(), 1 + 2 * 40 + 1);

    // The resumed segment continued from the checkpoint's weights: it
    // differs from a fresh trial trained on everything at once.
    let mut fresh = TestReporter::default();
    trainer.train(&job, &mut fresh).unwrap();
    assert_eq!(fresh.steps(), [4]);
    assert_ne!(fresh.values(), full.values());

    // And the segments are deterministic.
    let mut again = TestReporter::default();
    trainer.train(&with_budget(&job, 1), &mut again).unwrap();
    assert_eq!(again.values(), quarter.values());
}

#[test]
fn mlp_data_fraction_pause_decision_and_tiny_shares() {
    let trainer = trainer();
    let mut job = fraction_job(1);
    job.assignment.max_resource = 1000;
    job.assignment.budget = 1;
    // 400 × 1/1000 rounds to 0 examples: at least one batch is trained.
    let mut reporter = TestReporter::default();
    let end = trainer.train(&job, &mut reporter).unwrap();
    assert!(matches!(end, TrainEnd::Paused { step: 1, .. }), "{end:?}");
    assert_eq!(reporter.polls(), 1 + 1 + 1);

    // A pause decision at the full budget pauses rather than finishes.
    let mut job = fraction_job(1);
    job.assignment.budget = 4;
    let mut reporter = TestReporter {
        pause_at: Some(4),
        ..Default::default()
    };
    let end = trainer.train(&job, &mut reporter).unwrap();
    assert!(matches!(end, TrainEnd::Paused { step: 4, .. }), "{end:?}");
}

#[test]
fn out_of_order_segments_are_invalid() {
    let trainer = trainer();
    let mut job = segment_job("adam", 4);
    job.assignment.budget = 5;
    let err = trainer
        .train(&job, &mut TestReporter::default())
        .unwrap_err();
    assert!(matches!(err, TrainError::Invalid(_)), "{err}");
    let job = resumed(&segment_job("adam", 4), 3, b"whatever", 2);
    let err = trainer
        .train(&job, &mut TestReporter::default())
        .unwrap_err();
    assert!(matches!(err, TrainError::Invalid(_)), "{err}");
}

/// Times an epoch of Fashion-MNIST per optimizer (the quickstart's model):
/// `cargo test -p hpo-worker --release --test it -- --ignored --nocapture epoch_time`.
#[test]
#[ignore = "a measurement, not a check"]
fn epoch_time_on_fashion_mnist() {
    let Some(dir) = fashion_mnist_dir() else {
        return;
    };
    let spec = format!("idx:{}", dir.display());
    let trainer = trainer();
    for optimizer in ["adam", "adamw", "sgd"] {
        let job = job(
            &spec,
            3,
            1,
            &[
                ("hidden", Int(256)),
                ("optimizer", cat(optimizer)),
                ("weight_decay", Float(1e-4)),
                ("batch_size", Int(128)),
            ],
        );
        let mut reporter = TestReporter::default();
        let start = Instant::now();
        trainer.train(&job, &mut reporter).unwrap();
        let mut previous = start;
        let times: Vec<String> = reporter
            .reports
            .iter()
            .map(|(_, _, at)| {
                let t = at.duration_since(previous);
                previous = *at;
                format!("{:.3}s", t.as_secs_f64())
            })
            .collect();
        eprintln!(
            "{optimizer}: epochs {} (first includes loading), val_accuracy {:.4}",
            times.join(" "),
            reporter.last("val_accuracy")
        );
    }
}

#[test]
fn mlp_final_model_is_the_checkpoint_a_pause_at_the_end_would_save() {
    let trainer = trainer();
    let mut job = segment_job("adam", 2);
    job.assignment.save_final = true;
    crate::final_model_round_trips(&trainer, &job, b"hpo-mlp\0");
}

/// Early stopping inside the trial ends it once the watched metric has not
/// improved for `early_stopping_patience` epochs: with a learning rate too
/// small to move the weights, after 1 + patience epochs.
#[test]
fn early_stopping_ends_a_trial_that_stopped_improving() {
    let trainer = trainer();
    let mut reporter = TestReporter::default();
    let end = trainer
        .train(
            &job_with(
                "synthetic:spirals",
                10,
                3,
                &[("lr", Float(1e-12))],
                &[
                    ("early_stopping_patience", Int(2)),
                    ("early_stopping_metric", cat("val_loss")),
                ],
            ),
            &mut reporter,
        )
        .unwrap();
    assert_eq!(end, TrainEnd::Finished);
    assert_eq!(reporter.steps(), [1, 2, 3]);
}

/// Label smoothing, an L1 penalty, gradient clipping, Nesterov momentum
/// and rmsprop each change training (and keep it finite).
#[test]
fn regularisation_options_change_training() {
    let trainer = trainer();
    let run = |settings: &[(&str, hpo_proto::ParamValue)]| {
        let mut reporter = TestReporter::default();
        let end = trainer
            .train(
                &job_with("synthetic:spirals", 2, 5, &[], settings),
                &mut reporter,
            )
            .unwrap();
        assert_eq!(end, TrainEnd::Finished);
        let v = reporter.values();
        assert!(v.iter().flat_map(|m| m.values()).all(|x| x.is_finite()));
        v
    };
    let plain = run(&[]);
    for settings in [
        vec![("label_smoothing", Float(0.3))],
        vec![("l1", Float(0.01))],
        vec![("grad_clip", Float(0.01))],
        vec![("optimizer", cat("rmsprop"))],
        vec![
            ("optimizer", cat("sgd")),
            ("nesterov", Int(1)),
            ("lr", Float(0.05)),
        ],
    ] {
        assert_ne!(run(&settings), plain, "{settings:?} changed nothing");
    }
    // Nesterov differs from plain momentum.
    let sgd = |n| {
        run(&[
            ("optimizer", cat("sgd")),
            ("nesterov", Int(n)),
            ("lr", Float(0.05)),
        ])
    };
    assert_ne!(sgd(0), sgd(1));
}

/// Every schedule changes training against a constant learning rate, and a
/// bad schedule setting is refused with its name.
#[test]
fn learning_rate_schedules_change_training() {
    let trainer = trainer();
    let run = |settings: &[(&str, hpo_proto::ParamValue)]| {
        let mut reporter = TestReporter::default();
        let end = trainer
            .train(&segment_job_with("sgd", 3, settings), &mut reporter)
            .unwrap();
        assert_eq!(end, TrainEnd::Finished);
        reporter.history()
    };
    let constant = run(&[]);
    assert_eq!(run(&[("lr_schedule", cat("constant"))]), constant);
    for schedule in [
        "step",
        "exponential",
        "cosine",
        "cosine_restarts",
        "one_cycle",
    ] {
        let settings = [("lr_schedule", cat(schedule)), ("lr_step_size", Int(1))];
        let settings: &[(&str, hpo_proto::ParamValue)] = if schedule == "step" {
            &settings
        } else {
            &settings[..1]
        };
        assert_ne!(run(settings), constant, "{schedule} changed nothing");
    }
    assert_ne!(run(&[("warmup_epochs", Float(1.0))]), constant);
    let err = trainer
        .train(
            &segment_job_with("sgd", 3, &[("lr_schedule", cat("cosin"))]),
            &mut TestReporter::default(),
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("lr_schedule: expected one of"),
        "{err}"
    );
}

/// Each epoch reports the macro precision, recall and F1 too, and ROC AUC
/// for a two-class task; any of them can drive early stopping.
#[test]
fn classification_metrics_are_reported_each_epoch() {
    let trainer = trainer();
    // Two classes: label 1 where x1 + x2 > 0, with some noise.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("binary.csv");
    let mut text = String::from("x1,x2,label\n");
    for i in 0..400 {
        let (x1, x2) = (
            ((i * 37) % 101) as f64 / 50.0 - 1.0,
            ((i * 59) % 97) as f64 / 48.0 - 1.0,
        );
        let label = u8::from(x1 + x2 + if i % 13 == 0 { 1.5 } else { 0.0 } > 0.0);
        text.push_str(&format!("{x1},{x2},{label}\n"));
    }
    std::fs::write(&csv, text).unwrap();
    let mut reporter = TestReporter::default();
    trainer
        .train(
            &job(
                &format!("csv:{}", csv.display()),
                2,
                3,
                &[("lr", Float(0.05)), ("batch_size", Int(32))],
            ),
            &mut reporter,
        )
        .unwrap();
    for v in reporter.values() {
        for key in ["val_precision", "val_recall", "val_f1", "val_auc"] {
            let x = v[key];
            assert!((0.0..=1.0).contains(&x), "{key} = {x}");
        }
    }
    let last = &reporter.values()[1];
    assert!(
        last["val_auc"] > 0.5,
        "better than chance after 2 epochs: {last:?}"
    );
}

/// A regression data set trains one output on standardised targets and
/// reports RMSE, MAE and R² in the targets' own units.
#[test]
fn regression_sets_train_and_report_rmse_mae_and_r2() {
    let trainer = trainer();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("prices.csv");
    let mut text = String::from("x1,x2,city,price\n");
    for i in 0..500 {
        let (x1, x2) = (
            ((i * 37) % 101) as f64 / 10.0,
            ((i * 59) % 97) as f64 / 20.0,
        );
        let city = ["paris", "lyon"][i % 2];
        let price = 1000.0 + 30.0 * x1 - 20.0 * x2 + if city == "paris" { 50.0 } else { 0.0 };
        text.push_str(&format!("{x1},{x2},{city},{price}\n"));
    }
    std::fs::write(&csv, text).unwrap();
    let mut reporter = TestReporter::default();
    let end = trainer
        .train(
            &job(
                &format!("csv:{}?label=price&task=regression", csv.display()),
                20,
                3,
                &[("lr", Float(0.01)), ("batch_size", Int(32))],
            ),
            &mut reporter,
        )
        .unwrap();
    assert_eq!(end, TrainEnd::Finished);
    let values = reporter.values();
    let keys: Vec<&str> = values[0].keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["train_loss", "val_loss", "val_mae", "val_r2", "val_rmse"]
    );
    let (first, last) = (&values[0], &values[values.len() - 1]);
    assert!(
        last["val_rmse"] < first["val_rmse"],
        "{first:?} -> {last:?}"
    );
    assert!(last["val_r2"] > 0.9, "{last:?}");
    // RMSE is in price units: the targets' standard deviation is about 100.
    assert!(
        last["val_rmse"] < 40.0 && last["val_mae"] <= last["val_rmse"],
        "{last:?}"
    );
}

/// A 4×4 image set of two classes (bright top half or bright bottom half).
pub(crate) fn square_images(dir: &std::path::Path) -> String {
    use crate::data::{gz, idx};
    let write = |n: u32, images: &str, labels: &str| {
        let mut pixels = Vec::new();
        let mut ys = Vec::new();
        for i in 0..n {
            let class = (i % 2) as u8;
            ys.push(class);
            for p in 0..16u32 {
                let top = p < 8;
                let bright = (class == 0) == top;
                pixels.push(if bright {
                    200 + (i * 7 + p) % 50
                } else {
                    (i * 3 + p) % 40
                } as u8);
            }
        }
        std::fs::write(dir.join(images), gz(&idx(&[n, 4, 4], &pixels))).unwrap();
        std::fs::write(dir.join(labels), idx(&[n], &ys)).unwrap();
    };
    write(120, "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte");
    write(40, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte");
    format!("idx:{}", dir.display())
}

/// Augmentation changes what an image trainer sees (and stays seeded);
/// it is refused for data that are not images.
#[test]
fn augmentation_changes_training_on_images_only() {
    let trainer = trainer();
    let dir = tempfile::tempdir().unwrap();
    let spec = square_images(dir.path());
    let run = |settings: &[(&str, hpo_proto::ParamValue)]| {
        let mut reporter = TestReporter::default();
        let end = trainer
            .train(
                &job_with(&spec, 2, 4, &[("batch_size", Int(16))], settings),
                &mut reporter,
            )
            .unwrap();
        assert_eq!(end, TrainEnd::Finished);
        reporter.history()
    };
    let plain = run(&[]);
    let augmented = [
        ("augment_crop_padding", Int(1)),
        ("augment_hflip", Int(1)),
        ("augment_shift", Int(1)),
    ];
    assert_ne!(run(&augmented), plain);
    assert_eq!(run(&augmented), run(&augmented), "seeded");
    let err = trainer
        .train(
            &job_with("synthetic:spirals", 1, 1, &[], &[("augment_hflip", Int(1))]),
            &mut TestReporter::default(),
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("augmentation is for image data sets"),
        "{err}"
    );
}

/// Oversampling and undersampling change the rows an epoch trains on.
#[test]
fn class_balancing_changes_the_training_rows() {
    let trainer = trainer();
    let dir = tempfile::tempdir().unwrap();
    // 3 of 4 rows are class 0.
    let csv = dir.path().join("skewed.csv");
    let mut text = String::from("x,label\n");
    for i in 0..200 {
        let label = u8::from(i % 4 == 0);
        text.push_str(&format!(
            "{},{label}\n",
            f64::from(i) / 100.0 + f64::from(label)
        ));
    }
    std::fs::write(&csv, text).unwrap();
    let spec = format!("csv:{}", csv.display());
    let run = |balance: &str| {
        let mut reporter = TestReporter::default();
        trainer
            .train(
                &job_with(&spec, 2, 4, &[], &[("balance", cat(balance))]),
                &mut reporter,
            )
            .unwrap();
        reporter.history()
    };
    let none = run("none");
    assert_ne!(run("oversample"), none);
    assert_ne!(run("undersample"), none);
    assert_ne!(run("oversample"), run("undersample"));
}
