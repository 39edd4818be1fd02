//! Early stopping over gRPC: pause at a rung, checkpoint upload, promotion,
//! resume from the checkpoint on another worker, and the checks on
//! checkpoints (size, integrity, who may read them).

use super::*;
use hpo_proto::{Assignment, Decision, Outcome, StudyState, TrialState};
use std::collections::BTreeMap;

/// ASHA with η = 3 over budgets 1, 3, 9 of the simulated trainer.
fn asha_study(max_trials: u32, extra: &str) -> String {
    format!(
        r#"
name = "asha"
seed = 5
[objective]
metric = "loss"
direction = "minimize"
[search]
algorithm = "random"
max_trials = {max_trials}
max_parallel = 4
[trainer]
kind = "simulated"
epochs = 9
[schedule]
algorithm = "asha"
min_resource = 1
reduction_factor = 3
{extra}
[params]
x = {{ type = "float", low = 0.0, high = 1.0 }}
"#
    )
}

/// What a trainer would report at `step`: the loss falls with training and
/// is ranked by `x`.
fn value(a: &Assignment, step: u32) -> f64 {
    let x = a.params.get("x").and_then(|v| v.as_f64()).unwrap_or(0.0);
    x + 1.0 / step as f64
}

/// The checkpoint bytes a worker would save after `step`.
fn checkpoint_bytes(a: &Assignment, step: u32) -> Vec<u8> {
    format!("trial {} step {step}", a.trial.number)
        .into_bytes()
        .repeat(100)
}

/// Runs one segment as a worker: from the resume step to the budget; on a
/// pause, uploads the checkpoint then finishes as paused. Returns the steps
/// it reported.
async fn run_segment(w: &WorkerClient, a: &Assignment) -> Vec<u32> {
    let start = match &a.resume {
        Some(c) => {
            let bytes = w.download_checkpoint(a.attempt, c).await.unwrap();
            assert_eq!(
                bytes,
                checkpoint_bytes(a, c.step),
                "the resumed trial gets its own checkpoint back"
            );
            c.step
        }
        None => 0,
    };
    let mut steps = Vec::new();
    for step in start + 1..=a.budget {
        steps.push(step);
        match w
            .report(a.trial, a.attempt, step, &loss(value(a, step)))
            .await
            .unwrap()
        {
            Decision::Continue => {}
            Decision::Stop => {
                w.finish(a.trial, a.attempt, &Outcome::Completed)
                    .await
                    .unwrap();
                return steps;
            }
            Decision::Pause => {
                assert_eq!(step, a.budget, "a pause comes at the budget");
                w.upload_checkpoint(a.trial, a.attempt, step, &checkpoint_bytes(a, step))
                    .await
                    .unwrap();
                let state = w
                    .finish(a.trial, a.attempt, &Outcome::Paused { step })
                    .await
                    .unwrap();
                assert_eq!(state, TrialState::Paused);
                return steps;
            }
        }
    }
    assert_eq!(a.budget, a.max_resource, "only the full budget completes");
    if a.save_final {
        w.upload_checkpoint(a.trial, a.attempt, a.budget, &checkpoint_bytes(a, a.budget))
            .await
            .unwrap();
    }
    w.finish(a.trial, a.attempt, &Outcome::Completed)
        .await
        .unwrap();
    steps
}

#[tokio::test]
async fn asha_pauses_promotes_and_resumes_from_the_checkpoint_on_any_worker() {
    let server = Server::memory().await;
    let client = server.client().await;
    let id = client
        .submit(&asha_study(12, ""), "asha.toml")
        .await
        .unwrap();
    // Two workers take turns, so promoted trials resume on the other one.
    let workers = [server.worker("a").await, server.worker("b").await];
    let mut steps: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let mut budgets: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let mut resumed_elsewhere = 0;
    let mut ran_on: BTreeMap<u32, String> = BTreeMap::new();
    let mut turn = 0usize;
    loop {
        let w = &workers[turn % 2];
        turn += 1;
        match w.acquire("cpu:0").await.unwrap() {
            Some(a) => {
                assert!(matches!(a.budget, 1 | 3 | 9), "budgets are rungs: {a:?}");
                if a.resume.is_some() && ran_on.get(&a.trial.number) != Some(&w.id().0) {
                    resumed_elsewhere += 1;
                }
                ran_on.insert(a.trial.number, w.id().0.clone());
                budgets.entry(a.trial.number).or_default().push(a.budget);
                let s = run_segment(w, &a).await;
                steps.entry(a.trial.number).or_default().extend(s);
            }
            None => {
                if client.study(id).await.unwrap().state != StudyState::Running {
                    break;
                }
                assert!(turn < 1000, "study does not end");
            }
        }
    }
    let info = client.study(id).await.unwrap();
    assert_eq!(info.state, StudyState::Completed);
    assert_eq!(info.scheduler, "asha");
    // No epoch is trained twice: each trial's steps are 1..=last, once each.
    for (n, s) in &steps {
        let expect: Vec<u32> = (1..=*s.last().unwrap()).collect();
        assert_eq!(s, &expect, "trial {n} trained steps {s:?}");
    }
    let promoted = budgets.values().filter(|b| b.len() > 1).count();
    assert!(promoted >= 2, "some trials were promoted: {budgets:?}");
    assert!(
        resumed_elsewhere >= 1,
        "a trial resumed on the other worker"
    );
    let completed = budgets.values().filter(|b| b.last() == Some(&9)).count();
    assert!(
        completed >= 1,
        "a trial reached the full budget: {budgets:?}"
    );
    let total: u64 = steps.values().map(|s| s.len() as u64).sum();
    assert_eq!(
        info.resource_used, total,
        "resource used counts each epoch once"
    );
    // Nothing is left paused or running; every checkpoint was deleted.
    assert_eq!(
        info.counts.paused + info.counts.running + info.counts.waiting,
        0
    );
    let trials = client.trials(id, true).await.unwrap();
    for t in &trials {
        assert!(t.state.is_terminal(), "{t:?}");
        assert_eq!(t.budget, *budgets[&t.id.number].last().unwrap());
    }
    // The best trial is one that ran the full budget.
    let best = info.best.unwrap();
    assert_eq!(best.last_step, Some(9));
    server.stop().await;
}

#[tokio::test]
async fn checkpoints_are_checked_and_private_to_their_trial() {
    let server = Server::memory().await;
    let client = server.client().await;
    let id = client
        .submit(&asha_study(3, ""), "asha.toml")
        .await
        .unwrap();
    let w = server.worker("a").await;
    let other = server.worker("b").await;
    let a = w.acquire("cpu:0").await.unwrap().unwrap();
    assert_eq!((a.budget, a.max_resource), (1, 9));
    assert_eq!(
        w.report(a.trial, a.attempt, 1, &loss(0.5)).await.unwrap(),
        Decision::Pause
    );
    // Another worker cannot upload for this trial.
    let e = other
        .upload_checkpoint(a.trial, a.attempt, 1, b"x")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::FailedPrecondition), "{e}");
    // Finishing as paused without a checkpoint fails the trial.
    let state = w
        .finish(a.trial, a.attempt, &Outcome::Paused { step: 1 })
        .await
        .unwrap();
    assert_eq!(state, TrialState::Failed);
    let t = &client.trials(id, false).await.unwrap()[0];
    assert!(
        t.reason.contains("without uploading its checkpoint"),
        "{}",
        t.reason
    );
    client.cancel(id).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn oversized_and_damaged_checkpoints_are_refused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let dir = tempfile::tempdir().unwrap();
    let config = hpo_coordinator::Config {
        data_dir: Some(dir.path().to_path_buf()),
        durability: Default::default(),
        engine: EngineConfig {
            max_checkpoint_bytes: 1000,
            ..EngineConfig::default()
        },
    };
    let task = tokio::spawn(hpo_coordinator::run(listener, config, async {
        let _ = stopped.await;
    }));
    let client = Client::connect(&url).await.unwrap();
    let channel = hpo_sdk::connect(&url).await.unwrap();
    let w = WorkerClient::new(channel, WorkerId("w".into()));
    w.register("h", &["cpu:0".into()]).await.unwrap();
    let id = client.submit(&asha_study(3, ""), "a.toml").await.unwrap();
    let a = w.acquire("cpu:0").await.unwrap().unwrap();
    w.report(a.trial, a.attempt, 1, &loss(0.5)).await.unwrap();
    let e = w
        .upload_checkpoint(a.trial, a.attempt, 1, &vec![0u8; 1001])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::ResourceExhausted), "{e}");
    assert!(e.to_string().contains("limit of 1000"), "{e}");
    // Stored on disk under the data dir, and readable back.
    w.upload_checkpoint(a.trial, a.attempt, 1, b"weights")
        .await
        .unwrap();
    let ckpt_dir = dir.path().join("checkpoints").join(id.0.to_string());
    assert_eq!(std::fs::read_dir(&ckpt_dir).unwrap().count(), 1);
    w.finish(a.trial, a.attempt, &Outcome::Paused { step: 1 })
        .await
        .unwrap();
    client.cancel(id).await.unwrap();
    // The study ended: its checkpoints are gone.
    assert!(!ckpt_dir.exists());
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn bad_schedules_are_refused_at_submit() {
    let server = Server::memory().await;
    let client = server.client().await;
    let cases = [
        (
            asha_study(3, "").replace("min_resource = 1", "min_resource = 9"),
            "schedule.min_resource",
        ),
        (
            asha_study(3, "reduction_factor = 1").replace("reduction_factor = 3\n", ""),
            "schedule.reduction_factor: must be at least 2",
        ),
        (
            asha_study(3, "resource = \"data_fraction\"\nmax_resource = 4"),
            "does not support resource \"data_fraction\"",
        ),
    ];
    for (toml, want) in cases {
        let e = client.submit(&toml, "s.toml").await.unwrap_err();
        assert_eq!(e.code(), Some(tonic::Code::InvalidArgument), "{e}");
        assert!(e.to_string().contains(want), "{e} lacks {want}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_promoted_trial_whose_worker_dies_resumes_from_the_same_checkpoint_elsewhere() {
    let server = Server::start(None, Duration::from_millis(300)).await;
    let client = server.client().await;
    let id = client
        .submit(&asha_study(3, ""), "asha.toml")
        .await
        .unwrap();
    let a = server.worker("a").await;
    // Three trials reach rung 0 (budget 1) and pause; the best is promoted.
    for _ in 0..3 {
        let t = a.acquire("cpu:0").await.unwrap().unwrap();
        run_segment(&a, &t).await;
    }
    let promoted = a.acquire("cpu:0").await.unwrap().unwrap();
    let checkpoint = promoted.resume.clone().expect("a promotion resumes");
    assert_eq!((checkpoint.step, promoted.budget), (1, 3));
    // The worker reports one epoch of the new segment, then vanishes.
    a.download_checkpoint(promoted.attempt, &checkpoint)
        .await
        .unwrap();
    a.report(promoted.trial, promoted.attempt, 2, &loss(0.4))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Another worker gets the trial with the same checkpoint and budget.
    let b = server.worker("b").await;
    let again = b.acquire("cpu:0").await.unwrap().unwrap();
    assert_eq!(again.trial, promoted.trial);
    assert_eq!(again.attempt, promoted.attempt + 1);
    assert_eq!(again.resume.as_ref(), Some(&checkpoint));
    assert_eq!(again.budget, 3);
    let steps = run_segment(&b, &again).await;
    assert_eq!(steps, vec![2, 3], "it goes on from the checkpoint's step");
    // The dead worker can no longer read the checkpoint.
    let e = a
        .download_checkpoint(promoted.attempt, &checkpoint)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::FailedPrecondition), "{e}");
    // Nothing more can be promoted from three trials: the study is over.
    let info = client.study(id).await.unwrap();
    assert_eq!(info.state, StudyState::Completed, "{info:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_restarted_coordinator_keeps_paused_trials_and_their_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Some(dir.path().to_path_buf()), Duration::from_secs(30)).await;
    let client = server.client().await;
    let id = client
        .submit(&asha_study(9, ""), "asha.toml")
        .await
        .unwrap();
    let w = server.worker("a").await;
    // Three trials pause at rung 0.
    for _ in 0..3 {
        let a = w.acquire("cpu:0").await.unwrap().unwrap();
        run_segment(&w, &a).await;
    }
    assert_eq!(client.study(id).await.unwrap().counts.paused, 3);
    server.stop().await;

    let server = Server::start(Some(dir.path().to_path_buf()), Duration::from_secs(30)).await;
    let client = server.client().await;
    let w = server.worker("b").await;
    // The rebuilt scheduler promotes the best of the three, which resumes
    // from the checkpoint stored before the restart.
    let a = w.acquire("cpu:0").await.unwrap().unwrap();
    assert_eq!(a.budget, 3, "{a:?}");
    let c = a.resume.clone().unwrap();
    assert_eq!(c.step, 1);
    let steps = run_segment(&w, &a).await;
    assert_eq!(steps, vec![2, 3]);
    let mut turns = 0;
    while client.study(id).await.unwrap().state == StudyState::Running {
        if let Some(a) = w.acquire("cpu:0").await.unwrap() {
            run_segment(&w, &a).await;
        }
        turns += 1;
        assert!(turns < 100, "study does not end");
    }
    let info = client.study(id).await.unwrap();
    assert_eq!(info.counts.paused, 0);
    // 9 trials at rung 0, 3 at rung 1, 1 trained to the full 9 epochs.
    assert_eq!(info.best.and_then(|b| b.last_step), Some(9));
    server.stop().await;
}

#[tokio::test]
async fn keep_best_keeps_only_the_best_trials_final_model() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Some(dir.path().to_path_buf()), Duration::from_secs(30)).await;
    let client = server.client().await;
    // Median stopping trains most trials to the end: several final models
    // arrive, and only the best one may stay.
    let toml = asha_study(8, "keep_best = true").replace(
        "algorithm = \"asha\"",
        "algorithm = \"median\"\nmin_trials = 100",
    );
    let id = client.submit(&toml, "keep.toml").await.unwrap();
    let w = server.worker("a").await;
    let e = client.best_model(id).await.unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::NotFound), "{e}");
    let mut finals = 0;
    while let Some(a) = w.acquire("cpu:0").await.unwrap() {
        assert!(a.save_final);
        run_segment(&w, &a).await;
        finals += 1;
        // At most one final model is stored at any time.
        let stored = std::fs::read_dir(dir.path().join("checkpoints").join(id.0.to_string()))
            .map_or(0, |d| d.count());
        assert!(stored <= 1, "{stored} checkpoints after {finals} trials");
    }
    let info = client.study(id).await.unwrap();
    assert_eq!(info.state, StudyState::Completed);
    assert_eq!(info.counts.completed, 8);
    let best = info.best.unwrap();
    let (c, bytes) = client.best_model(id).await.unwrap();
    assert_eq!((c.trial, c.step), (best.id, 9));
    let expect = format!("trial {} step 9", best.id.number)
        .into_bytes()
        .repeat(100);
    assert_eq!(bytes, expect, "the best trial's own final model");
    // A study without keep_best keeps none.
    let other = client.submit(&asha_study(3, ""), "a.toml").await.unwrap();
    let e = client.best_model(other).await.unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::FailedPrecondition), "{e}");
    assert!(e.to_string().contains("keep_best = true"), "{e}");
    server.stop().await;
}
