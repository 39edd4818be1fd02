//! `hpo logs` against an `hpo server` process, with the SDK's worker client
//! shipping a trial's output as a worker would.

use super::*;
use hpo_proto::{Assignment, Outcome, WorkerId};
use hpo_sdk::WorkerClient;
use std::io::Read;

#[test]
fn hpo_logs_prints_a_trials_log_and_follow_ends_with_the_trial() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let _server = server(
        port,
        &dir.path().join("data"),
        &dir.path().join("server.log"),
        "30s",
    );
    let study = sim_study(dir.path(), 2, 3, 0);
    let id = submit(&url, &study);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (w, a): (WorkerClient, Assignment) = rt.block_on(async {
        let channel = hpo_sdk::connect(&url).await.unwrap();
        let w = WorkerClient::new(channel, WorkerId("log-test".into()));
        w.register("test-host", &["cpu:0".into()]).await.unwrap();
        let a = w.acquire("cpu:0").await.unwrap().unwrap();
        w.append_log(a.trial, a.attempt, 0, "epoch 1\n")
            .await
            .unwrap();
        w.append_log(a.trial, a.attempt, 8, "époch 2\n")
            .await
            .unwrap();
        (w, a)
    });
    let trial = format!("{id}/{}", a.trial.number);

    let out = run(&["logs", &trial, "--coordinator", &url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "epoch 1\népoch 2\n");

    // Following: what is logged next, until the trial has ended (and the
    // tail its worker ships after the finish).
    let mut follow = Proc(
        hpo()
            .args(["logs", &trial, "--follow", "--coordinator", &url])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        follow.0.try_wait().unwrap().is_none(),
        "--follow ended while the trial runs"
    );
    rt.block_on(async {
        let at = "epoch 1\népoch 2\n".len() as u64;
        w.append_log(a.trial, a.attempt, at, "epoch 3\n")
            .await
            .unwrap();
        for step in 1..=3 {
            w.report(a.trial, a.attempt, step, &loss(0.5))
                .await
                .unwrap();
        }
        w.finish(a.trial, a.attempt, &Outcome::Completed)
            .await
            .unwrap();
        w.append_log(a.trial, a.attempt, at + 8, "bye\n")
            .await
            .unwrap();
    });
    let status = follow.wait_exit(Duration::from_secs(15));
    let mut stdout = String::new();
    follow
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut stderr = String::new();
    follow
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout, "epoch 1\népoch 2\nepoch 3\nbye\n");

    // A malformed trial is a usage error; an unknown one says so.
    let out = run(&["logs", &id, "--coordinator", &url]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("STUDY/NUMBER"));
    let out = run(&["logs", &format!("{id}/77"), "--coordinator", &url]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );
}

fn loss(v: f64) -> hpo_proto::MetricValues {
    [("loss".to_string(), v)].into_iter().collect()
}
