use super::*;
use hpo_proto::{Decision, Outcome, StudyState, TrialState};
use std::collections::{HashMap, HashSet};

#[tokio::test]
async fn grid_with_two_workers_runs_every_point_exactly_once() {
    let server = Server::memory().await;
    let client = server.client().await;
    let params = r#"a = { type = "int", low = 0, high = 4 }
b = ["p", "q", "r"]"#;
    let id = client
        .submit(&study("grid", 15, 4, "", params), "grid.toml")
        .await
        .unwrap();

    let mut tasks = Vec::new();
    for name in ["w1", "w2"] {
        let w = server.worker(name).await;
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                match w.acquire("cpu:0").await.unwrap() {
                    Some(a) => {
                        seen.push(format!("{:?}", a.params));
                        run_trial(&w, &a).await;
                    }
                    None if client.study(id).await.unwrap().state != StudyState::Running => break,
                    None => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
            seen
        }));
    }
    let info = wait_ended(&client, id, Duration::from_secs(20)).await;
    let mut all = Vec::new();
    let mut per_worker = Vec::new();
    for t in tasks {
        let seen = t.await.unwrap();
        per_worker.push(seen.len());
        all.extend(seen);
    }
    assert_eq!(info.state, StudyState::Completed);
    assert_eq!(info.counts.completed, 15);
    assert_eq!(
        all.len(),
        15,
        "every point exactly once across both workers"
    );
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(unique.len(), 15);
    assert!(
        per_worker.iter().all(|n| *n > 0),
        "both workers took part: {per_worker:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn random_search_is_reproducible_for_a_seed() {
    let server = Server::memory().await;
    let client = server.client().await;
    let w = server.worker("w").await;
    let mut runs = Vec::new();
    for _ in 0..2 {
        let id = client
            .submit(&study("random", 5, 1, "", XY), "r.toml")
            .await
            .unwrap();
        let mut params = Vec::new();
        while let Some(a) = w.acquire("cpu:0").await.unwrap() {
            assert_eq!(a.trial.study, id);
            params.push(a.params.clone());
            run_trial(&w, &a).await;
        }
        runs.push(params);
    }
    assert_eq!(runs[0].len(), 5);
    assert_eq!(runs[0], runs[1]);
    server.stop().await;
}

#[tokio::test]
async fn a_worker_that_dies_mid_trial_has_its_trial_run_again_elsewhere() {
    let server = Server::start(None, Duration::from_millis(300)).await;
    let client = server.client().await;
    let id = client
        .submit(&study("random", 2, 2, "", XY), "r.toml")
        .await
        .unwrap();
    let dead = server.worker("dead").await;
    let a = dead.acquire("cpu:0").await.unwrap().unwrap();
    dead.report(a.trial, a.attempt, 1, &loss(0.9))
        .await
        .unwrap();
    // `dead` now goes silent: no heartbeat, no finish.
    let alive = server.worker("alive").await;
    let mut ran = Vec::new();
    let start = std::time::Instant::now();
    while ran.len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "trial was never requeued"
        );
        match alive.acquire("cpu:0").await.unwrap() {
            Some(b) => {
                run_trial(&alive, &b).await;
                ran.push((b.trial, b.attempt));
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(
        ran.contains(&(a.trial, 2)),
        "the dead worker's trial ran again as attempt 2: {ran:?}"
    );
    let info = wait_ended(&client, id, Duration::from_secs(5)).await;
    assert_eq!(info.counts.completed, 2);
    let trials = client.trials(id, true).await.unwrap();
    let t = trials.iter().find(|t| t.id == a.trial).unwrap();
    assert_eq!(t.attempt, 2);
    assert_eq!(t.worker.as_ref().unwrap().0, "alive");
    assert!(
        t.metrics.iter().any(|m| m.attempt == 1),
        "the first attempt's report is kept"
    );
    // The dead worker's late calls are refused and change nothing.
    let e = dead.report(a.trial, 1, 2, &loss(0.1)).await.unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::FailedPrecondition));
    server.stop().await;
}

#[tokio::test]
async fn a_trial_whose_workers_keep_dying_fails_with_the_reason() {
    let server = Server::start(None, Duration::from_millis(150)).await;
    let client = server.client().await;
    let id = client
        .submit(&study("random", 1, 1, "max_retries = 1", XY), "r.toml")
        .await
        .unwrap();
    let w = server.worker("flaky").await;
    let start = std::time::Instant::now();
    let mut attempts = 0;
    while attempts < 2 {
        assert!(start.elapsed() < Duration::from_secs(10));
        if w.acquire("cpu:0").await.unwrap().is_some() {
            attempts += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let info = wait_ended(&client, id, Duration::from_secs(5)).await;
    assert_eq!(info.counts.failed, 1);
    let t = &client.trials(id, false).await.unwrap()[0];
    assert_eq!(t.state, TrialState::Failed);
    assert!(t.reason.contains("max_retries = 1"), "{}", t.reason);
    server.stop().await;
}

#[tokio::test]
async fn interrupted_trials_go_back_in_the_queue_at_once() {
    let server = Server::memory().await;
    let client = server.client().await;
    let id = client
        .submit(&study("random", 1, 1, "", XY), "r.toml")
        .await
        .unwrap();
    let w1 = server.worker("w1").await;
    let a = w1.acquire("cpu:0").await.unwrap().unwrap();
    let state = w1
        .finish(a.trial, a.attempt, &Outcome::Interrupted)
        .await
        .unwrap();
    assert_eq!(state, TrialState::Waiting);
    let w2 = server.worker("w2").await;
    let b = w2.acquire("cpu:0").await.unwrap().unwrap();
    assert_eq!((b.trial, b.attempt), (a.trial, 2));
    assert_eq!(b.params, a.params);
    run_trial(&w2, &b).await;
    let info = wait_ended(&client, id, Duration::from_secs(5)).await;
    assert_eq!(info.counts.completed, 1);
    server.stop().await;
}

#[tokio::test]
async fn max_parallel_is_never_exceeded_and_studies_share_workers() {
    let server = Server::memory().await;
    let client = server.client().await;
    let a = client
        .submit(&study("random", 10, 2, "", XY), "a.toml")
        .await
        .unwrap();
    let b = client
        .submit(&study("random", 10, 2, "", XY), "b.toml")
        .await
        .unwrap();
    let w = server.worker("w").await;
    let mut held = Vec::new();
    while let Some(t) = w.acquire("cpu:0").await.unwrap() {
        held.push(t);
        assert!(held.len() <= 4);
    }
    let per: HashMap<StudyId, usize> = held.iter().fold(HashMap::new(), |mut m, t| {
        *m.entry(t.trial.study).or_default() += 1;
        m
    });
    assert_eq!(per.get(&a), Some(&2));
    assert_eq!(per.get(&b), Some(&2));
    // Round-robin: the first two grants went to different studies.
    assert_ne!(held[0].trial.study, held[1].trial.study);
    server.stop().await;
}

#[tokio::test]
async fn priority_studies_are_served_first() {
    let server = Server::memory().await;
    let client = server.client().await;
    let _low = client
        .submit(&study("random", 10, 10, "", XY), "low.toml")
        .await
        .unwrap();
    let high = client
        .submit(&study("random", 3, 10, "priority = 5", XY), "high.toml")
        .await
        .unwrap();
    let w = server.worker("w").await;
    for _ in 0..3 {
        let t = w.acquire("cpu:0").await.unwrap().unwrap();
        assert_eq!(t.trial.study, high);
    }
    server.stop().await;
}

#[tokio::test]
async fn cancel_stops_running_trials_and_ends_the_study() {
    let server = Server::memory().await;
    let client = server.client().await;
    let id = client
        .submit(&study("random", 5, 2, "", XY), "r.toml")
        .await
        .unwrap();
    let w = server.worker("w").await;
    let a = w.acquire("cpu:0").await.unwrap().unwrap();
    assert_eq!(
        w.report(a.trial, a.attempt, 1, &loss(0.5)).await.unwrap(),
        Decision::Continue
    );
    let info = client.cancel(id).await.unwrap();
    assert_eq!(
        info.state,
        StudyState::Running,
        "still stopping: one trial runs"
    );
    let beat = w.heartbeat(&[a.trial]).await.unwrap();
    assert_eq!(beat.stop, vec![a.trial]);
    assert_eq!(
        w.report(a.trial, a.attempt, 2, &loss(0.4)).await.unwrap(),
        Decision::Stop
    );
    assert!(
        w.acquire("cpu:0").await.unwrap().is_none(),
        "no new trials after cancel"
    );
    w.finish(a.trial, a.attempt, &Outcome::Completed)
        .await
        .unwrap();
    let info = wait_ended(&client, id, Duration::from_secs(5)).await;
    assert_eq!(info.state, StudyState::Cancelled);
    assert_eq!(info.end_reason, "cancelled");
    let t = &client.trials(id, false).await.unwrap()[0];
    assert_eq!(t.state, TrialState::Cancelled);
    assert_eq!(
        t.value,
        Some(0.4),
        "a cancelled trial keeps what it reported"
    );
    let e = client.cancel(id).await.unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::FailedPrecondition));
    server.stop().await;
}

#[tokio::test]
async fn reaching_the_target_ends_the_study() {
    let server = Server::memory().await;
    let client = server.client().await;
    let id = client
        .submit(&study("random", 50, 2, "target = 0.2", XY), "r.toml")
        .await
        .unwrap();
    let w = server.worker("w").await;
    let a = w.acquire("cpu:0").await.unwrap().unwrap();
    let b = w.acquire("cpu:0").await.unwrap().unwrap();
    assert_eq!(
        w.report(b.trial, b.attempt, 1, &loss(0.9)).await.unwrap(),
        Decision::Continue
    );
    assert_eq!(
        w.report(a.trial, a.attempt, 1, &loss(0.1)).await.unwrap(),
        Decision::Stop
    );
    assert_eq!(
        w.report(b.trial, b.attempt, 2, &loss(0.8)).await.unwrap(),
        Decision::Stop
    );
    w.finish(a.trial, a.attempt, &Outcome::Completed)
        .await
        .unwrap();
    w.finish(b.trial, b.attempt, &Outcome::Completed)
        .await
        .unwrap();
    let info = wait_ended(&client, id, Duration::from_secs(5)).await;
    assert_eq!(
        (info.state, info.end_reason.as_str()),
        (StudyState::Completed, "target")
    );
    let best = info.best.unwrap();
    assert_eq!((best.id, best.value), (a.trial, Some(0.1)));
    let trials = client.trials(id, false).await.unwrap();
    assert_eq!(
        trials.len(),
        2,
        "no trial started after the target was reached"
    );
    assert_eq!(trials[b.trial.number as usize].state, TrialState::Stopped);
    server.stop().await;
}

#[tokio::test]
async fn max_duration_ends_the_study() {
    let server = Server::memory().await;
    let client = server.client().await;
    let id = client
        .submit(
            &study("random", 50, 1, "max_duration = \"300ms\"", XY),
            "r.toml",
        )
        .await
        .unwrap();
    let w = server.worker("w").await;
    let a = w.acquire("cpu:0").await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        w.report(a.trial, a.attempt, 1, &loss(0.3)).await.unwrap(),
        Decision::Stop
    );
    w.finish(a.trial, a.attempt, &Outcome::Completed)
        .await
        .unwrap();
    let info = wait_ended(&client, id, Duration::from_secs(5)).await;
    assert_eq!(info.end_reason, "max_duration");
    assert_eq!(info.counts.stopped, 1);
    server.stop().await;
}

#[tokio::test]
async fn a_nan_objective_fails_the_trial_and_stops_it() {
    let server = Server::memory().await;
    let client = server.client().await;
    let id = client
        .submit(&study("random", 1, 1, "", XY), "r.toml")
        .await
        .unwrap();
    let w = server.worker("w").await;
    let a = w.acquire("cpu:0").await.unwrap().unwrap();
    assert_eq!(
        w.report(a.trial, a.attempt, 1, &loss(f64::NAN))
            .await
            .unwrap(),
        Decision::Stop
    );
    // The worker's finish after the stop is answered with the stored state.
    assert_eq!(
        w.finish(a.trial, a.attempt, &Outcome::Completed)
            .await
            .unwrap(),
        TrialState::Failed
    );
    let info = wait_ended(&client, id, Duration::from_secs(5)).await;
    assert_eq!(info.counts.failed, 1);
    let t = &client.trials(id, true).await.unwrap()[0];
    assert!(
        t.reason.contains("objective `loss` is NaN at step 1"),
        "{}",
        t.reason
    );
    assert_eq!(t.metrics.len(), 1, "the report itself is kept");
    server.stop().await;
}

#[tokio::test]
async fn a_repeated_report_is_stored_once() {
    let server = Server::memory().await;
    let client = server.client().await;
    let id = client
        .submit(&study("random", 1, 1, "", XY), "r.toml")
        .await
        .unwrap();
    let w = server.worker("w").await;
    let a = w.acquire("cpu:0").await.unwrap().unwrap();
    w.report(a.trial, a.attempt, 1, &loss(0.7)).await.unwrap();
    w.report(a.trial, a.attempt, 1, &loss(0.7)).await.unwrap();
    w.report(a.trial, a.attempt, 2, &loss(0.6)).await.unwrap();
    let t = &client.trials(id, true).await.unwrap()[0];
    assert_eq!(t.metrics.len(), 2);
    assert_eq!(t.last_step, Some(2));
    server.stop().await;
}

#[tokio::test]
async fn a_trial_that_reports_no_objective_fails() {
    let server = Server::memory().await;
    let client = server.client().await;
    let id = client
        .submit(&study("random", 1, 1, "", XY), "r.toml")
        .await
        .unwrap();
    let w = server.worker("w").await;
    let a = w.acquire("cpu:0").await.unwrap().unwrap();
    let other = [("accuracy".to_string(), 0.5)].into_iter().collect();
    w.report(a.trial, a.attempt, 1, &other).await.unwrap();
    let state = w
        .finish(a.trial, a.attempt, &Outcome::Completed)
        .await
        .unwrap();
    assert_eq!(state, TrialState::Failed);
    let t = &client.trials(id, false).await.unwrap()[0];
    assert_eq!(t.reason, "the trainer reported no `loss`");
    server.stop().await;
}
