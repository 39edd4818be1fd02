//! Malformed and out-of-order calls get precise status codes and change nothing.

use super::*;
use hpo_proto::pb::worker_service_client::WorkerServiceClient;
use hpo_proto::{PROTOCOL_VERSION, TrialId, pb};
use tonic::Code;

async fn raw(server: &Server) -> WorkerServiceClient<tonic::transport::Channel> {
    WorkerServiceClient::new(hpo_sdk::connect(&server.url).await.unwrap())
}

#[tokio::test]
async fn unknown_studies_and_trials_are_not_found() {
    let server = Server::memory().await;
    let client = server.client().await;
    assert_eq!(
        client.study(StudyId(999)).await.unwrap_err().code(),
        Some(Code::NotFound)
    );
    assert_eq!(
        client.cancel(StudyId(999)).await.unwrap_err().code(),
        Some(Code::NotFound)
    );
    assert_eq!(
        client.trials(StudyId(999), false).await.unwrap_err().code(),
        Some(Code::NotFound)
    );
    let w = server.worker("w").await;
    let ghost = TrialId {
        study: StudyId(999),
        number: 0,
    };
    assert_eq!(
        w.report(ghost, 1, 1, &loss(1.0)).await.unwrap_err().code(),
        Some(Code::NotFound)
    );
    let id = client
        .submit(&study("random", 3, 1, "", XY), "r.toml")
        .await
        .unwrap();
    let missing = TrialId {
        study: id,
        number: 42,
    };
    assert_eq!(
        w.report(missing, 1, 1, &loss(1.0))
            .await
            .unwrap_err()
            .code(),
        Some(Code::NotFound)
    );
    server.stop().await;
}

#[tokio::test]
async fn calls_for_a_trial_leased_to_another_worker_are_refused() {
    let server = Server::memory().await;
    let client = server.client().await;
    let id = client
        .submit(&study("random", 3, 1, "", XY), "r.toml")
        .await
        .unwrap();
    let owner = server.worker("owner").await;
    let thief = server.worker("thief").await;
    let a = owner.acquire("cpu:0").await.unwrap().unwrap();
    let e = thief
        .report(a.trial, a.attempt, 1, &loss(0.1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::FailedPrecondition));
    assert!(e.to_string().contains("not leased to worker thief"), "{e}");
    let e = thief
        .finish(a.trial, a.attempt, &hpo_proto::Outcome::Completed)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::FailedPrecondition));
    // A stale attempt number from the owner is refused too.
    let e = owner
        .report(a.trial, a.attempt + 1, 1, &loss(0.1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::FailedPrecondition));
    let t = &client.trials(id, true).await.unwrap()[0];
    assert!(t.metrics.is_empty(), "nothing stored");
    assert_eq!(t.state, hpo_proto::TrialState::Running);
    // The thief's heartbeat tells it to drop the trial.
    assert_eq!(
        thief.heartbeat(&[a.trial]).await.unwrap().stop,
        vec![a.trial]
    );
    server.stop().await;
}

#[tokio::test]
async fn calls_after_a_trial_ended_are_refused_and_change_nothing() {
    let server = Server::memory().await;
    let client = server.client().await;
    let id = client
        .submit(&study("random", 2, 1, "", XY), "r.toml")
        .await
        .unwrap();
    let w = server.worker("w").await;
    let a = w.acquire("cpu:0").await.unwrap().unwrap();
    run_trial(&w, &a).await;
    let before = client.trials(id, true).await.unwrap();
    let e = w
        .report(a.trial, a.attempt, 9, &loss(0.0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::FailedPrecondition));
    assert!(
        e.to_string().contains("has already ended (completed)"),
        "{e}"
    );
    // Repeating the same finish is answered with the stored state.
    assert_eq!(
        w.finish(a.trial, a.attempt, &hpo_proto::Outcome::Completed)
            .await
            .unwrap(),
        hpo_proto::TrialState::Completed
    );
    // A different outcome for the ended trial from another worker is refused.
    let other = server.worker("other").await;
    let e = other
        .finish(a.trial, a.attempt, &hpo_proto::Outcome::Failed("x".into()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::FailedPrecondition));
    assert_eq!(client.trials(id, true).await.unwrap(), before);
    server.stop().await;
}

#[tokio::test]
async fn malformed_requests_are_invalid_arguments() {
    let server = Server::memory().await;
    let client = server.client().await;
    let id = client
        .submit(&study("random", 2, 1, "", XY), "r.toml")
        .await
        .unwrap();
    let w = server.worker("w").await;
    let a = w.acquire("cpu:0").await.unwrap().unwrap();
    let mut r = raw(&server).await;
    let no_trial = pb::ReportMetricsRequest {
        worker_id: "w".into(),
        trial: None,
        attempt: 1,
        step: 1,
        values: [("loss".to_string(), 1.0)].into_iter().collect(),
    };
    let e = r.report_metrics(no_trial).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "missing field `trial`");
    let no_values = pb::ReportMetricsRequest {
        worker_id: "w".into(),
        trial: Some(a.trial.into()),
        attempt: a.attempt,
        step: 1,
        values: Default::default(),
    };
    assert_eq!(
        r.report_metrics(no_values).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let no_worker = pb::AcquireTrialRequest {
        worker_id: String::new(),
        slot: "cpu:0".into(),
        study_id: None,
    };
    assert_eq!(
        r.acquire_trial(no_worker).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let no_outcome = pb::FinishTrialRequest {
        worker_id: "w".into(),
        trial: Some(a.trial.into()),
        attempt: a.attempt,
        outcome: 0,
        reason: String::new(),
        paused_step: 0,
    };
    assert_eq!(
        r.finish_trial(no_outcome).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let t = &client.trials(id, true).await.unwrap()[0];
    assert!(t.metrics.is_empty());
    assert_eq!(t.state, hpo_proto::TrialState::Running);
    server.stop().await;
}

#[tokio::test]
async fn a_worker_of_another_protocol_version_is_refused() {
    let server = Server::memory().await;
    let mut r = raw(&server).await;
    let e = r
        .register(pb::RegisterRequest {
            protocol_version: PROTOCOL_VERSION + 1,
            worker_id: "future".into(),
            hostname: "h".into(),
            slots: vec!["cpu:0".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("protocol version"), "{}", e.message());
    server.stop().await;
}

#[tokio::test]
async fn an_invalid_study_is_refused_with_file_and_key() {
    let server = Server::memory().await;
    let client = server.client().await;
    let bad = study(
        "random",
        3,
        1,
        "",
        r#"lr = { type = "float", low = 0.0, high = 1.0, log = true }"#,
    );
    let e = client.submit(&bad, "bad.toml").await.unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument));
    assert_eq!(
        e.to_string(),
        "bad.toml: params.lr.low: must be > 0 when log = true"
    );
    assert!(client.studies().await.unwrap().is_empty(), "nothing stored");
    server.stop().await;
}

#[tokio::test]
async fn an_unreachable_coordinator_gets_a_one_line_error() {
    // Bind then drop: a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let e = match Client::connect(&url).await {
        Ok(_) => panic!("connected to nothing"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.starts_with(&format!("cannot reach the coordinator at {url}")),
        "{e}"
    );
    assert!(e.contains("HPO_COORDINATOR"), "{e}");
    assert!(!e.contains('\n'));
}

#[tokio::test]
async fn the_standard_health_service_reports_serving() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let server = Server::memory().await;
    let mut h = HealthClient::new(hpo_sdk::connect(&server.url).await.unwrap());
    for service in ["hpo.v1.StudyService", "hpo.v1.WorkerService"] {
        let r = h
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service}");
    }
    server.stop().await;
}
