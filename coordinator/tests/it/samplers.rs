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

/// A tpe study named `name` over x and y, `extra` added to [search].
fn tpe_study(name: &str, trials: u32, extra: &str) -> String {
    study("tpe", trials, 1, extra, XY).replace("name = \"it\"", &format!("name = \"{name}\""))
}

/// Runs every trial of a study with one worker.
async fn run_all(server: &Server, id: hpo_proto::StudyId) -> Vec<hpo_proto::TrialInfo> {
    let client = server.client().await;
    let w = server.worker("w").await;
    while let Some(a) = w.acquire("cpu:0").await.unwrap() {
        run_trial(&w, &a).await;
    }
    let info = client.study(id).await.unwrap();
    assert_eq!(info.state, StudyState::Completed);
    client.trials(id, false).await.unwrap()
}

#[tokio::test]
async fn warm_start_learns_from_an_earlier_study_of_the_same_space() {
    let server = Server::memory().await;
    let client = server.client().await;
    let earlier = client
        .submit(&tpe_study("first", 20, ""), "first.toml")
        .await
        .unwrap();
    run_all(&server, earlier).await;
    // The same study twice, one warm-started: with 20 earlier results the
    // warm one models from its first trial; the cold one starts with the
    // Sobol design.
    let warm = client
        .submit(
            &tpe_study("second", 4, "warm_start = [\"first\"]"),
            "second.toml",
        )
        .await
        .unwrap();
    let warm_trials = run_all(&server, warm).await;
    let cold = client
        .submit(&tpe_study("second", 4, ""), "cold.toml")
        .await
        .unwrap();
    let cold_trials = run_all(&server, cold).await;
    assert_ne!(warm_trials[0].params, cold_trials[0].params);
    // The warm study's first trials are near the earlier best (loss = x at
    // the last step, so small x is good).
    let x = |t: &hpo_proto::TrialInfo| t.params["x"].as_f64().unwrap();
    let warm_x: f64 = warm_trials.iter().map(x).sum::<f64>() / 4.0;
    let cold_x: f64 = cold_trials.iter().map(x).sum::<f64>() / 4.0;
    assert!(warm_x < cold_x, "warm {warm_x} vs cold {cold_x}");
    // By id works too, and an unknown name or another space is refused.
    client
        .submit(
            &tpe_study("third", 2, &format!("warm_start = [{}]", earlier.0)),
            "third.toml",
        )
        .await
        .unwrap();
    let e = client
        .submit(&tpe_study("x", 2, "warm_start = [\"nope\"]"), "x.toml")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::InvalidArgument));
    assert_eq!(
        e.to_string(),
        "x.toml: search.warm_start: no earlier study named `nope`"
    );
    let other = study(
        "tpe",
        2,
        1,
        "warm_start = [\"first\"]",
        "z = { type = \"float\", low = 0.0, high = 1.0 }",
    );
    let e = client.submit(&other, "o.toml").await.unwrap_err();
    assert!(e.to_string().contains("searched other parameters"), "{e}");
    server.stop().await;
}

#[tokio::test]
async fn a_bohb_study_with_hyperband_runs_to_its_end() {
    let server = Server::memory().await;
    let client = server.client().await;
    let text = study("bohb", 30, 2, "", XY)
        .replace("epochs = 3", "epochs = 9")
        .replace(
            "[params]",
            "[schedule]\nalgorithm = \"async_hyperband\"\nmin_resource = 1\n[params]",
        );
    let id = client.submit(&text, "bohb.toml").await.unwrap();
    let w = server.worker("w").await;
    let mut turns = 0;
    while client.study(id).await.unwrap().state == StudyState::Running {
        if let Some(a) = w.acquire("cpu:0").await.unwrap() {
            let start = a.resume.as_ref().map_or(0, |c| c.step);
            let x = a.params["x"].as_f64().unwrap();
            let mut paused = false;
            for step in start + 1..=a.budget {
                match w
                    .report(a.trial, a.attempt, step, &loss(x / step as f64))
                    .await
                    .unwrap()
                {
                    hpo_proto::Decision::Continue => {}
                    hpo_proto::Decision::Stop => break,
                    hpo_proto::Decision::Pause => {
                        w.upload_checkpoint(a.trial, a.attempt, step, b"ck")
                            .await
                            .unwrap();
                        w.finish(a.trial, a.attempt, &hpo_proto::Outcome::Paused { step })
                            .await
                            .unwrap();
                        paused = true;
                        break;
                    }
                }
            }
            if !paused {
                w.finish(a.trial, a.attempt, &hpo_proto::Outcome::Completed)
                    .await
                    .unwrap();
            }
        }
        turns += 1;
        assert!(turns < 2000, "study does not end");
    }
    let info = client.study(id).await.unwrap();
    assert_eq!(info.state, StudyState::Completed);
    assert!(info.best.is_some(), "{info:?}");
    server.stop().await;
}
