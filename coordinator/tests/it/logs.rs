//! Trial logs over gRPC: chunks appended by the worker running the trial,
//! stored once, gaps marked, kept within the study's `max_log_kib`, read
//! from any offset.

use super::*;
use hpo_proto::{Assignment, Outcome, TrialId, TrialLog};
use tonic::Code;

/// A command-trainer study whose logs are kept to `max_log_kib`.
fn command_study(max_log_kib: u32) -> String {
    format!(
        r#"
name = "logs"
seed = 3
[objective]
metric = "loss"
direction = "minimize"
[search]
algorithm = "random"
max_trials = 4
max_parallel = 4
[trainer]
kind = "command"
command = ["python3", "train.py", "--x", "{{params.x}}"]
epochs = 3
max_log_kib = {max_log_kib}
[params]
x = {{ type = "float", low = 0.0, high = 1.0 }}
"#
    )
}

async fn started(server: &Server, study_toml: &str) -> (Client, WorkerClient, Assignment) {
    let client = server.client().await;
    client.submit(study_toml, "logs.toml").await.unwrap();
    let w = server.worker("log-worker").await;
    let a = w.acquire("cpu:0").await.unwrap().unwrap();
    (client, w, a)
}

/// A read whose slice lines up with its total.
async fn read(client: &Client, trial: TrialId, offset: u64) -> TrialLog {
    let l = client.trial_log(trial, offset).await.unwrap();
    assert_eq!(l.start + l.text.len() as u64, l.total, "{l:?}");
    l
}

#[tokio::test]
async fn chunks_are_stored_once_and_gaps_are_marked() {
    let server = Server::memory().await;
    let (client, w, a) = started(&server, &command_study(1024)).await;
    let t = a.trial;
    assert_eq!(read(&client, t, 0).await, TrialLog::default());
    w.append_log(t, a.attempt, 0, "epoch 1\n").await.unwrap();
    w.append_log(t, a.attempt, 8, "epoch 2\n").await.unwrap();
    // A retry of a chunk whose answer was lost is stored once.
    w.append_log(t, a.attempt, 8, "epoch 2\n").await.unwrap();
    let l = read(&client, t, 0).await;
    assert_eq!(
        (l.text.as_str(), l.start, l.total, l.dropped),
        ("epoch 1\nepoch 2\n", 0, 16, 0)
    );
    // The worker dropped 4 bytes it could not deliver.
    w.append_log(t, a.attempt, 20, "epoch 3\n").await.unwrap();
    let l = read(&client, t, 8).await;
    assert_eq!(
        l.text,
        "epoch 2\n[hpo: 4 bytes of output dropped]\nepoch 3\n"
    );
    assert_eq!(l.start, 8);
    // Following from the total: nothing until more arrives.
    let total = l.total;
    assert_eq!(read(&client, t, total).await.text, "");
    w.append_log(t, a.attempt, 28, "done\n").await.unwrap();
    let l = read(&client, t, total).await;
    assert_eq!((l.text.as_str(), l.start), ("done\n", total));
    // The trial finishes; the tail of its program still arrives.
    w.finish(t, a.attempt, &Outcome::Failed("exit status 1".into()))
        .await
        .unwrap();
    w.append_log(t, a.attempt, 33, "Traceback: boom\n")
        .await
        .unwrap();
    assert!(
        read(&client, t, 0)
            .await
            .text
            .ends_with("done\nTraceback: boom\n")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_log_is_kept_within_max_log_kib() {
    let server = Server::memory().await;
    let (client, w, a) = started(&server, &command_study(1)).await;
    let t = a.trial;
    let mut stream = String::new();
    let mut follower = String::new();
    let mut next = 0;
    for i in 0..100 {
        let chunk = format!("step {i:03}: loss {:.5}\n", 1.0 / (i + 1) as f64);
        w.append_log(t, a.attempt, stream.len() as u64, &chunk)
            .await
            .unwrap();
        stream.push_str(&chunk);
        if i % 10 == 0 {
            let l = read(&client, t, next).await;
            follower.push_str(&l.text);
            next = l.total;
        }
    }
    let l = read(&client, t, 0).await;
    assert_eq!(l.total, stream.len() as u64);
    assert!(l.text.len() <= 1024, "{}", l.text.len());
    assert!(l.dropped > 0);
    let marker = format!("[hpo: earlier output dropped ({} bytes)]\n", l.dropped);
    assert!(l.text.starts_with(&marker), "{}", l.text);
    let kept = &l.text[marker.len()..];
    assert!(kept.starts_with("step "), "cut at a line: {kept}");
    assert!(stream.ends_with(kept));
    assert!(l.start > 0 && l.start < l.dropped);
    // A reader that kept up saw every line once.
    let l = read(&client, t, next).await;
    follower.push_str(&l.text);
    assert_eq!(follower, stream);
    // One that asks for a dropped part gets what is kept, marker first.
    let l = read(&client, t, 5).await;
    assert!(l.text.starts_with(&marker));
    server.stop().await;
}

#[tokio::test]
async fn bad_log_calls_get_precise_codes() {
    let server = Server::memory().await;
    let (client, w, a) = started(&server, &command_study(1024)).await;
    let t = a.trial;
    let code = |r: Result<(), hpo_sdk::SdkError>| r.unwrap_err().code();
    let ghost = TrialId {
        study: StudyId(999),
        number: 0,
    };
    let missing = TrialId {
        study: t.study,
        number: 77,
    };
    for trial in [ghost, missing] {
        assert_eq!(
            code(w.append_log(trial, 1, 0, "x\n").await),
            Some(Code::NotFound)
        );
        assert_eq!(
            client.trial_log(trial, 0).await.unwrap_err().code(),
            Some(Code::NotFound)
        );
    }
    // Another worker, an attempt that did not start, no attempt at all, a
    // chunk over 1 MiB.
    let other = server.worker("someone-else").await;
    assert_eq!(
        code(other.append_log(t, a.attempt, 0, "x\n").await),
        Some(Code::FailedPrecondition)
    );
    assert_eq!(
        code(w.append_log(t, a.attempt + 1, 0, "x\n").await),
        Some(Code::FailedPrecondition)
    );
    assert_eq!(
        code(w.append_log(t, 0, 0, "x\n").await),
        Some(Code::InvalidArgument)
    );
    let huge = "x".repeat((1 << 20) + 1);
    assert_eq!(
        code(w.append_log(t, a.attempt, 0, &huge).await),
        Some(Code::InvalidArgument)
    );
    // None of them was stored; a trial that never logged reads empty.
    assert_eq!(read(&client, t, 0).await.total, 0);
    server.stop().await;
}

#[tokio::test]
async fn logs_survive_a_restart_of_the_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Some(dir.path().to_path_buf()), Duration::from_secs(30)).await;
    let (client, w, a) = started(&server, &command_study(1024)).await;
    w.append_log(a.trial, a.attempt, 0, "before\n")
        .await
        .unwrap();
    let before = read(&client, a.trial, 0).await;
    server.stop().await;
    let server = Server::start(Some(dir.path().to_path_buf()), Duration::from_secs(30)).await;
    let client = server.client().await;
    assert_eq!(read(&client, a.trial, 0).await, before);
    let w = server.worker("log-worker").await;
    w.append_log(a.trial, a.attempt, 0, "before\n")
        .await
        .unwrap();
    w.append_log(a.trial, a.attempt, 7, "after\n")
        .await
        .unwrap();
    assert_eq!(read(&client, a.trial, 0).await.text, "before\nafter\n");
    server.stop().await;
}
