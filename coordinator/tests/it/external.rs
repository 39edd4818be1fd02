//! Studies of the `external` trainer: run by ask-and-tell clients, which
//! acquire from one named study; a worker's plain acquire never gets them.

use super::*;
use hpo_proto::StudyState;
use tonic::Code;

fn external(max_trials: u32) -> String {
    study("random", max_trials, 2, "", XY).replace("kind = \"simulated\"", "kind = \"external\"")
}

#[tokio::test]
async fn external_studies_go_only_to_an_acquire_naming_them() {
    let server = Server::memory().await;
    let client = server.client().await;
    let ext = client.submit(&external(2), "ext.toml").await.unwrap();
    let w = server.worker("w").await;

    // A plain acquire passes the external study by.
    assert!(w.acquire("cpu:0").await.unwrap().is_none());
    // A simulated study beside it is still served to plain acquires, and
    // only it.
    let sim = client
        .submit(&study("random", 1, 1, "", XY), "sim.toml")
        .await
        .unwrap();
    let a = w.acquire("cpu:0").await.unwrap().unwrap();
    assert_eq!(a.trial.study, sim);
    run_trial(&w, &a).await;
    assert!(w.acquire("cpu:0").await.unwrap().is_none());

    // Naming the study gets its trials, whatever the trainer kind.
    let a = w.acquire_from("client:0", ext).await.unwrap().unwrap();
    assert_eq!(a.trial.study, ext);
    assert_eq!(a.trainer.kind, "external");
    let b = w.acquire_from("client:0", ext).await.unwrap().unwrap();
    assert_ne!(a.trial, b.trial);
    // max_parallel = 2: nothing more until one ends.
    assert!(w.acquire_from("client:0", ext).await.unwrap().is_none());
    run_trial(&w, &a).await;
    run_trial(&w, &b).await;
    let info = wait_ended(&client, ext, Duration::from_secs(10)).await;
    assert_eq!(info.counts.completed, 2);

    // An ended study gives nothing (its state says why); an unknown one is
    // not found.
    assert!(w.acquire_from("client:0", ext).await.unwrap().is_none());
    assert_eq!(
        client.study(ext).await.unwrap().state,
        StudyState::Completed
    );
    assert_eq!(
        w.acquire_from("client:0", StudyId(999))
            .await
            .unwrap_err()
            .code(),
        Some(Code::NotFound)
    );
    server.stop().await;
}

#[tokio::test]
async fn naming_a_study_skips_the_others() {
    let server = Server::memory().await;
    let client = server.client().await;
    let first = client
        .submit(&study("random", 3, 3, "", XY), "a.toml")
        .await
        .unwrap();
    let second = client
        .submit(&study("random", 3, 3, "", XY), "b.toml")
        .await
        .unwrap();
    let w = server.worker("w").await;
    for _ in 0..3 {
        let a = w.acquire_from("client:0", second).await.unwrap().unwrap();
        assert_eq!(a.trial.study, second);
    }
    assert!(w.acquire_from("client:0", second).await.unwrap().is_none());
    // A cancelled study answers nothing, not an error.
    client.cancel(first).await.unwrap();
    let info = wait_ended(&client, first, Duration::from_secs(10)).await;
    assert_eq!(info.state, StudyState::Cancelled);
    assert!(w.acquire_from("client:0", first).await.unwrap().is_none());
    server.stop().await;
}
