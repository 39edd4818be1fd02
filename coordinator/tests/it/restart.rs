//! A coordinator restarted on the same data dir loses nothing and runs on.

use super::*;
use hpo_proto::{Outcome, StudyState, TrialState};

#[tokio::test]
async fn a_restarted_coordinator_keeps_everything_and_finishes_the_study() {
    let dir = tempfile::tempdir().unwrap();
    let ttl = Duration::from_secs(5);
    let server = Server::start(Some(dir.path().to_path_buf()), ttl).await;
    let client = server.client().await;
    let id = client
        .submit(&study("random", 4, 1, "", XY), "r.toml")
        .await
        .unwrap();
    let w = server.worker("steady").await;
    let mut done = Vec::new();
    for _ in 0..2 {
        let a = w.acquire("cpu:0").await.unwrap().unwrap();
        run_trial(&w, &a).await;
        done.push(a.clone());
    }
    let running = w.acquire("cpu:0").await.unwrap().unwrap();
    w.report(running.trial, running.attempt, 1, &loss(0.42))
        .await
        .unwrap();
    let before = client.trials(id, true).await.unwrap();
    server.stop().await;

    let server = Server::start(Some(dir.path().to_path_buf()), ttl).await;
    let client = server.client().await;
    let after = client.trials(id, true).await.unwrap();
    assert_eq!(after, before, "every trial and metric survived the restart");
    // The same worker comes back and is handed its running trial.
    let channel = hpo_sdk::connect(&server.url).await.unwrap();
    let w = WorkerClient::new(channel, hpo_proto::WorkerId("steady".into()));
    let beat = w.heartbeat(&[running.trial]).await.unwrap();
    assert!(
        !beat.known,
        "a restarted coordinator asks workers to register again"
    );
    assert!(beat.stop.is_empty(), "the running trial is not taken away");
    let reg = w.register("test-host", &["cpu:0".into()]).await.unwrap();
    assert_eq!(reg.running, vec![running.trial]);
    for step in 2..=3 {
        w.report(running.trial, running.attempt, step, &loss(0.4))
            .await
            .unwrap();
    }
    w.finish(running.trial, running.attempt, &Outcome::Completed)
        .await
        .unwrap();
    let last = w.acquire("cpu:0").await.unwrap().unwrap();
    assert_eq!(last.trial.number, 3, "completed trials are not run again");
    run_trial(&w, &last).await;
    let info = wait_ended(&client, id, Duration::from_secs(5)).await;
    assert_eq!(
        (info.state, info.counts.completed),
        (StudyState::Completed, 4)
    );
    let trials = client.trials(id, true).await.unwrap();
    assert!(
        trials
            .iter()
            .all(|t| t.state == TrialState::Completed && t.attempt == 1)
    );
    let resumed = &trials[running.trial.number as usize];
    assert_eq!(resumed.metrics.len(), 3);
    assert_eq!(resumed.metrics[0].values["loss"], 0.42);
    server.stop().await;
}
