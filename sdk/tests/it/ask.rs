//! Ask and tell from the test's own process.

use super::Server;
use hpo_proto::pb::worker_service_client::WorkerServiceClient;
use hpo_proto::{Decision, Direction, PROTOCOL_VERSION, StudyId, StudyState, TrialState, pb};
use hpo_sdk::{AskTell, AskedTrial, SdkError, StudyBuilder};
use std::collections::HashSet;
use std::time::Duration;
use tonic::Code;

fn external(name: &str, max_trials: u32, max_parallel: u32) -> StudyBuilder {
    StudyBuilder::new(name)
        .seed(5)
        .objective("loss", Direction::Minimize)
        .algorithm("random")
        .max_trials(max_trials)
        .max_parallel(max_parallel)
        .trainer_external(4)
        .float("x", -5.0, 5.0, false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_and_tell_minimises_a_quadratic_three_trials_at_a_time() {
    let server = Server::start(Duration::from_secs(30)).await;
    let client = server.client().await;
    let study = StudyBuilder::new("quadratic")
        .seed(3)
        .objective("loss", Direction::Minimize)
        .algorithm("tpe")
        .max_trials(12)
        .max_parallel(3)
        .trainer_external(2)
        .float("x", -5.0, 5.0, false)
        .int("k", 0, 3)
        .categorical("shape", ["bowl", "flat"]);
    let id = client.submit_spec(&study).await.unwrap();
    let tuner = AskTell::connect(&server.url, id).await.unwrap();
    assert!(
        tuner.worker_id().0.starts_with("ask-"),
        "{}",
        tuner.worker_id()
    );
    assert!(tuner.registration().heartbeat_interval > Duration::ZERO);

    let mut told = Vec::new();
    let mut seen = HashSet::new();
    loop {
        // Three asks at once, all held before any is told.
        let (a, b, c) = tokio::join!(tuner.ask(), tuner.ask(), tuner.ask());
        let batch: Vec<AskedTrial> = [a, b, c].into_iter().filter_map(|r| r.unwrap()).collect();
        if batch.is_empty() {
            break;
        }
        assert_eq!(batch.len(), 3, "12 trials come in batches of 3");
        for t in &batch {
            assert!(seen.insert(t.id()), "trial {} asked twice", t.id());
            assert!(!t.should_stop());
        }
        // Told in reverse order of asking.
        for mut t in batch.into_iter().rev() {
            let x = t.param_f64("x").unwrap();
            let k = t.param_i64("k").unwrap();
            let flat = t.param_str("shape").unwrap() == "flat";
            let value = (x - 1.5).powi(2) + k as f64 + if flat { 0.5 } else { 0.0 };
            let d = t.report(1, [("loss", value + 1.0)]).await.unwrap();
            assert_eq!(d, Decision::Continue);
            assert_eq!(t.tell(value).await.unwrap(), TrialState::Completed);
            told.push(value);
        }
    }
    assert_eq!(told.len(), 12);
    assert!(tuner.ask().await.unwrap().is_none(), "the study has ended");

    let info = client.wait(id, Duration::from_millis(20)).await.unwrap();
    assert_eq!(info.state, StudyState::Completed);
    assert_eq!(info.counts.completed, 12);
    // Storage keeps values as JSON text, which may round the last bit.
    let same = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1.0);
    let min = told.iter().copied().fold(f64::INFINITY, f64::min);
    let best = info.best.unwrap().value.unwrap();
    assert!(same(best, min), "best {best}, min told {min}");
    // Each trial's value is what was told, not the step-1 report.
    let trials = client.trials(id, true).await.unwrap();
    for t in &trials {
        assert_eq!(t.last_step, Some(2));
        let v = t.value.unwrap();
        assert!(told.iter().any(|x| same(v, *x)), "{v} was not told");
    }
    tuner.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_share_one_client() {
    let server = Server::start(Duration::from_secs(30)).await;
    let client = server.client().await;
    let id = client.submit_spec(&external("tasks", 9, 3)).await.unwrap();
    let tuner = std::sync::Arc::new(AskTell::connect(&server.url, id).await.unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let tuner = tuner.clone();
        tasks.spawn(async move {
            let mut n = 0;
            while let Some(mut t) = tuner.ask().await.unwrap() {
                let x = t.param_f64("x").unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
                t.tell(x * x).await.unwrap();
                n += 1;
            }
            n
        });
    }
    let mut total = 0;
    while let Some(n) = tasks.join_next().await {
        total += n.unwrap();
    }
    assert_eq!(total, 9);
    let info = client.wait(id, Duration::from_millis(20)).await.unwrap();
    assert_eq!(info.counts.completed, 9);
    server.stop().await;
}

#[tokio::test]
async fn typed_getters_name_the_parameter_and_the_types() {
    let server = Server::start(Duration::from_secs(30)).await;
    let client = server.client().await;
    let id = client
        .submit_spec(&external("getters", 1, 1).int("n", 1, 3))
        .await
        .unwrap();
    let tuner = AskTell::connect(&server.url, id).await.unwrap();
    let mut t = tuner.ask().await.unwrap().unwrap();
    assert_eq!(t.params().len(), 2);
    // An integer reads as a float too; not the other way round.
    assert!(t.param_f64("n").is_ok());
    let e = t.param_i64("x").unwrap_err().to_string();
    assert!(
        e.starts_with("parameter `x`: expected an integer, got "),
        "{e}"
    );
    let e = t.param_str("n").unwrap_err().to_string();
    assert!(e.starts_with("parameter `n`: expected a string"), "{e}");
    let e = t.param_f64("lr").unwrap_err().to_string();
    assert_eq!(e, "parameter `lr`: not in this trial (it has: n, x)");
    t.tell(1.0).await.unwrap();
    // A finished trial takes no more calls.
    assert_eq!(
        t.tell(1.0).await.unwrap_err().code(),
        Some(Code::FailedPrecondition)
    );
    server.stop().await;
}

#[tokio::test]
async fn a_trial_dropped_without_tell_fails_and_frees_its_place() {
    let server = Server::start(Duration::from_secs(30)).await;
    let client = server.client().await;
    let id = client.submit_spec(&external("drop", 2, 1)).await.unwrap();
    let tuner = AskTell::connect(&server.url, id).await.unwrap();
    let dropped = tuner.ask().await.unwrap().unwrap();
    let number = dropped.number();
    drop(dropped);
    // max_parallel = 1: the next trial comes once the dropped one failed.
    let mut next = tuner.ask().await.unwrap().unwrap();
    assert_ne!(next.number(), number);
    let t = client
        .trials(id, false)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.id.number == number)
        .unwrap();
    assert_eq!(t.state, TrialState::Failed);
    assert_eq!(t.reason, hpo_sdk::DROPPED_REASON);
    assert_eq!(next.tell(0.5).await.unwrap(), TrialState::Completed);
    let info = client.wait(id, Duration::from_millis(20)).await.unwrap();
    assert_eq!((info.counts.completed, info.counts.failed), (1, 1));
    server.stop().await;
}

#[tokio::test]
async fn heartbeats_keep_a_held_trial_past_its_lease() {
    // A 600 ms lease, heartbeats every 200 ms.
    let server = Server::start(Duration::from_millis(600)).await;
    let client = server.client().await;
    let id = client.submit_spec(&external("held", 1, 1)).await.unwrap();
    let tuner = AskTell::connect(&server.url, id).await.unwrap();
    let mut t = tuner.ask().await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!t.should_stop());
    assert_eq!(t.tell(2.0).await.unwrap(), TrialState::Completed);
    let trials = client.trials(id, false).await.unwrap();
    assert_eq!(trials[0].attempt, 1, "never requeued");
    assert_eq!(trials[0].value, Some(2.0));
    tuner.close().await;
    server.stop().await;
}

#[tokio::test]
async fn a_median_scheduler_stops_a_clearly_bad_trial() {
    let server = Server::start(Duration::from_secs(30)).await;
    let client = server.client().await;
    let id = client
        .submit_spec(&external("median", 5, 1).schedule("median", 1, 2))
        .await
        .unwrap();
    let tuner = AskTell::connect(&server.url, id).await.unwrap();
    for _ in 0..3 {
        let mut t = tuner.ask().await.unwrap().unwrap();
        for step in 1..=4 {
            let d = t.report(step, [("loss", 1.0)]).await.unwrap();
            assert_eq!(d, Decision::Continue);
        }
        // Already reported at the last step: tell only finishes.
        assert_eq!(t.tell(1.0).await.unwrap(), TrialState::Completed);
    }
    let mut bad = tuner.ask().await.unwrap().unwrap();
    let d = bad.report(1, [("loss", 100.0)]).await.unwrap();
    assert_eq!(d, Decision::Stop);
    assert_eq!(bad.tell(100.0).await.unwrap(), TrialState::Stopped);
    let mut good = tuner.ask().await.unwrap().unwrap();
    assert_eq!(good.tell(0.5).await.unwrap(), TrialState::Completed);
    let info = client.wait(id, Duration::from_millis(20)).await.unwrap();
    assert_eq!((info.counts.completed, info.counts.stopped), (4, 1));
    assert_eq!(info.best.unwrap().value, Some(0.5));
    server.stop().await;
}

#[tokio::test]
async fn studies_of_other_trainers_can_be_asked_too() {
    let server = Server::start(Duration::from_secs(30)).await;
    let client = server.client().await;
    let study = external("simulated", 1, 1).trainer("simulated", {
        let mut t = hpo_sdk::toml::Table::new();
        t.insert("epochs".into(), 2.into());
        t
    });
    let id = client.submit_spec(&study).await.unwrap();
    let tuner = AskTell::connect(&server.url, id).await.unwrap();
    let mut t = tuner.ask().await.unwrap().unwrap();
    assert_eq!(t.assignment().trainer.kind, "simulated");
    assert_eq!(t.tell(3.0).await.unwrap(), TrialState::Completed);
    assert!(tuner.ask().await.unwrap().is_none());
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_study_and_another_protocol_are_clear_errors() {
    let server = Server::start(Duration::from_secs(30)).await;
    let e = AskTell::connect(&server.url, StudyId(999))
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Some(Code::NotFound));

    // A client of another protocol version, as the coordinator answers it.
    let mut raw = WorkerServiceClient::new(hpo_sdk::connect(&server.url).await.unwrap());
    let other = PROTOCOL_VERSION + 1;
    let status = raw
        .register(pb::RegisterRequest {
            protocol_version: other,
            worker_id: "ask-test".into(),
            hostname: "h".into(),
            slots: vec!["client:0".into()],
        })
        .await
        .unwrap_err();
    let coordinator_says = status.message().to_string();
    let e = SdkError::registration(status);
    match &e {
        SdkError::Incompatible {
            coordinator,
            message,
            ..
        } => {
            assert_eq!(*coordinator, Some(PROTOCOL_VERSION));
            assert_eq!(message, &coordinator_says);
        }
        other => panic!("{other:?}"),
    }
    let shown = e.to_string();
    assert!(
        shown.contains(&format!("speaks protocol version {other}")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("this coordinator speaks {PROTOCOL_VERSION}")),
        "{shown}"
    );
    server.stop().await;
}
