//! Model-based samplers through the whole coordinator: their proposals are
//! computed off the study task, and workers waiting for one get it.

use super::*;
use hpo_proto::StudyState;
use std::collections::HashSet;

async fn run_to_end(algorithm: &str) {
    let server = Server::memory().await;
    let client = server.client().await;
    let id = client
        .submit(&study(algorithm, 16, 4, "", XY), "model.toml")
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for name in ["w1", "w2", "w3"] {
        let w = server.worker(name).await;
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            loop {
                match w.acquire("cpu:0").await.unwrap() {
                    Some(a) => {
                        run_trial(&w, &a).await;
                        n += 1;
                    }
                    None if client.study(id).await.unwrap().state != StudyState::Running => {
                        return n;
                    }
                    None => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }));
    }
    let info = wait_ended(&client, id, Duration::from_secs(60)).await;
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(info.state, StudyState::Completed, "{algorithm}");
    assert_eq!((info.counts.completed, total), (16, 16), "{algorithm}");
    let trials = client.trials(id, false).await.unwrap();
    let distinct: HashSet<String> = trials.iter().map(|t| format!("{:?}", t.params)).collect();
    assert_eq!(distinct.len(), 16, "{algorithm}: no configuration twice");
    server.stop().await;
}

#[tokio::test]
async fn a_gp_study_runs_to_its_end_with_three_workers() {
    run_to_end("gp").await;
}

#[tokio::test]
async fn a_tpe_study_runs_to_its_end_with_three_workers() {
    run_to_end("tpe").await;
}

#[tokio::test]
async fn a_sobol_study_runs_to_its_end_with_three_workers() {
    run_to_end("sobol").await;
}
