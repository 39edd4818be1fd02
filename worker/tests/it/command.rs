//! The `command` trainer against real programs: the `sdk_trial` example
//! (hpo-sdk), and shell scripts for the cases an SDK user never writes on
//! purpose (crashes, ignored stops, output-only reporting).

use crate::{
    TestReporter, job_with, pause_then_resume_matches_an_uninterrupted_run, resumed, with_budget,
};
use hpo_proto::ParamValue;
use hpo_worker::trainer::{CommandTrainer, TrainEnd, Trainer, TrialJob};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The `sdk_trial` example, which `cargo test` builds beside the tests.
fn sdk_trial() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join("examples").join("sdk_trial");
    if !path.is_file() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", "hpo-worker", "--example", "sdk_trial"])
            .status()
            .unwrap();
        assert!(status.success(), "cannot build the sdk_trial example");
    }
    assert!(path.is_file(), "no sdk_trial at {}", path.display());
    path
}

/// A trial of `command` with parameter x = 0.5, reporting `loss`.
fn command_job(command: &[&str], epochs: u32, settings: &[(&str, ParamValue)]) -> TrialJob {
    let mut job = job_with("", epochs, 11, &[("x", ParamValue::Float(0.5))], settings);
    job.assignment.trainer.kind = "command".into();
    job.assignment.trainer.command = command.iter().map(|s| s.to_string()).collect();
    job.assignment.metric = "loss".into();
    job
}

/// The reason a trial of `job` fails.
fn failure(t: &CommandTrainer, job: &TrialJob) -> String {
    t.train(job, &mut TestReporter::default())
        .unwrap_err()
        .to_string()
}

fn trainer() -> (CommandTrainer, tempfile::TempDir) {
    let scratch = tempfile::tempdir().unwrap();
    (CommandTrainer::new(scratch.path()), scratch)
}

#[test]
fn an_sdk_program_pauses_and_resumes_like_an_uninterrupted_run() {
    let (t, scratch) = trainer();
    let bin = sdk_trial();
    let job = command_job(&[bin.to_str().unwrap()], 6, &[]);
    pause_then_resume_matches_an_uninterrupted_run(&t, &job);
    // Segment folders are removed once their segment is over.
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
}

#[test]
fn the_worker_pauses_an_sdk_program_at_its_budget() {
    let (t, _scratch) = trainer();
    let bin = sdk_trial();
    let job = with_budget(&command_job(&[bin.to_str().unwrap()], 5, &[]), 2);
    let mut r = TestReporter::default();
    let TrainEnd::Paused { step, checkpoint } = t.train(&job, &mut r).unwrap() else {
        panic!("expected a pause at the budget; log:\n{}", r.log);
    };
    assert_eq!((step, r.steps()), (2, vec![1, 2]));
    assert!(r.log.contains("paused at step 2"), "log:\n{}", r.log);
    let mut rest = TestReporter::default();
    let end = t
        .train(&resumed(&job, 2, &checkpoint, 5), &mut rest)
        .unwrap();
    assert_eq!(end, TrainEnd::Finished, "log:\n{}", rest.log);
    assert_eq!(rest.steps(), [3, 4, 5]);
    assert!(
        rest.log.contains("resumed after step 2"),
        "log:\n{}",
        rest.log
    );
}

#[test]
fn an_sdk_program_stops_when_told() {
    let (t, _scratch) = trainer();
    let bin = sdk_trial();
    let job = command_job(&[bin.to_str().unwrap()], 50, &[]);
    let mut r = TestReporter {
        stop_at: Some(3),
        ..Default::default()
    };
    let started = Instant::now();
    assert_eq!(t.train(&job, &mut r).unwrap(), TrainEnd::Stopped);
    assert_eq!(r.steps(), [1, 2, 3]);
    assert!(r.log.contains("stopped at step 3"), "log:\n{}", r.log);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it exited by itself, not by a kill"
    );
    assert!(!r.log.contains("terminating"), "log:\n{}", r.log);
}

#[test]
fn a_cancelled_trial_reaches_the_program() {
    let (t, _scratch) = trainer();
    let bin = sdk_trial();
    let job = command_job(&[bin.to_str().unwrap()], 50, &[]);
    let mut r = TestReporter {
        stop_after_reports: Some(2),
        ..Default::default()
    };
    assert_eq!(t.train(&job, &mut r).unwrap(), TrainEnd::Stopped);
    // The third report is answered stop by the worker without reaching us.
    assert_eq!(r.steps(), [1, 2]);
    assert!(r.log.contains("stopped at step 3"), "log:\n{}", r.log);
}

#[test]
fn the_sdk_refuses_to_run_outside_a_trial_or_against_another_protocol() {
    let bin = sdk_trial();
    let out = std::process::Command::new(&bin)
        .env_remove("HPO_ENDPOINT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not inside an hpo trial: HPO_ENDPOINT is not set"),
        "{err}"
    );

    let out = std::process::Command::new(&bin)
        .env("HPO_ENDPOINT", "127.0.0.1:9")
        .env("HPO_TRIAL_PROTOCOL", "99")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("incompatible hpo worker") && err.contains("99"),
        "{err}"
    );
}

#[test]
fn metrics_printed_on_stdout_are_reported() {
    let (t, _scratch) = trainer();
    // Braces are doubled: single ones are placeholders.
    let script = r#"for i in 1 2 3; do echo "epoch $i"; echo "hpo-metric {{\"step\": $i, \"loss\": $((10 - i)).5}}"; done; echo "hpo-metric {{\"step\": 4}}x"; echo warn >&2"#;
    let job = command_job(&["sh", "-c", script], 3, &[]);
    let mut r = TestReporter::default();
    assert_eq!(
        t.train(&job, &mut r).unwrap(),
        TrainEnd::Finished,
        "log:\n{}",
        r.log
    );
    assert_eq!(r.steps(), [1, 2, 3]);
    assert_eq!(r.last("loss"), 7.5);
    assert!(
        r.log.contains("epoch 2\n") && r.log.contains("warn\n"),
        "log:\n{}",
        r.log
    );
    assert!(r.log.contains("metric line ignored"), "log:\n{}", r.log);
}

#[test]
fn placeholders_env_and_flags_reach_the_program() {
    let (t, _scratch) = trainer();
    let script = r#"echo "args: $*"; echo "env: $HPO_TRIAL $HPO_BUDGET $HPO_PARAMS $MY_VAR [$CUDA_VISIBLE_DEVICES]"; test -d "$HPO_CHECKPOINT_DIR" && echo "hpo-metric {{\"step\": 1, \"loss\": 1}}""#;
    let mut job = command_job(
        &[
            "sh",
            "-c",
            script,
            "sh",
            "{trial}/{budget}/{params.x}",
            "{{lit}}",
        ],
        1,
        &[],
    );
    job.assignment.trainer.param_flags = true;
    job.assignment.trainer.env = [("MY_VAR".to_string(), "mine".to_string())].into();
    let mut r = TestReporter::default();
    assert_eq!(
        t.train(&job, &mut r).unwrap(),
        TrainEnd::Finished,
        "log:\n{}",
        r.log
    );
    assert!(
        r.log.contains("args: 0/1/0.5 {lit} --x 0.5\n"),
        "log:\n{}",
        r.log
    );
    assert!(
        r.log.contains("env: 0 1 {\"x\":0.5} mine []\n"),
        "log:\n{}",
        r.log
    );
}

#[test]
fn a_crash_fails_the_trial_with_the_tail_of_its_log() {
    let (t, _scratch) = trainer();
    let script = "for i in $(seq 1 100); do echo line $i; done; echo 'Traceback: boom' >&2; exit 3";
    let job = command_job(&["sh", "-c", script], 3, &[]);
    let mut r = TestReporter::default();
    let err = t.train(&job, &mut r).unwrap_err().to_string();
    assert!(err.contains("exited with status 3"), "{err}");
    assert!(err.contains("Traceback: boom"), "{err}");
    assert!(
        err.contains("line 100") && !err.contains("line 50\n"),
        "only the tail: {err}"
    );

    let job = command_job(
        &[
            "sh",
            "-c",
            "echo 'RuntimeError: CUDA out of memory.' >&2; exit 1",
        ],
        3,
        &[],
    );
    let err = failure(&t, &job);
    assert!(err.contains("ran out of memory"), "{err}");

    let job = command_job(&["sh", "-c", "kill -9 $$"], 3, &[]);
    let err = failure(&t, &job);
    assert!(
        err.contains("SIGKILL") && err.contains("out-of-memory"),
        "{err}"
    );

    let job = command_job(&["/nonexistent/trainer"], 3, &[]);
    let err = failure(&t, &job);
    assert!(err.contains("cannot start `/nonexistent/trainer`"), "{err}");

    let job = command_job(&["sh", "-c", "echo hi"], 3, &[]);
    let err = failure(&t, &job);
    assert!(
        err.contains("without reporting a metric") && err.contains("hi"),
        "{err}"
    );
}

#[test]
fn a_program_that_ignores_a_stop_is_killed_with_its_process_group() {
    let (t, scratch) = trainer();
    let pid_file = scratch.path().join("child.pid");
    // It ignores SIGTERM, and leaves a grandchild behind in its group.
    let script = format!(
        r#"trap '' TERM; sleep 300 & echo $! > {}; echo "hpo-metric {{{{\"step\": 1, \"loss\": 1}}}}"; while true; do sleep 1; done"#,
        pid_file.display()
    );
    let job = command_job(
        &["sh", "-c", &script],
        10,
        &[("stop_grace", ParamValue::Int(1))],
    );
    let mut r = TestReporter {
        stop_at: Some(1),
        ..Default::default()
    };
    let started = Instant::now();
    assert_eq!(t.train(&job, &mut r).unwrap(), TrainEnd::Stopped);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert!(
        r.log
            .contains("did not exit within 1s of the stop decision"),
        "log:\n{}",
        r.log
    );
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    // Gone, or a zombie waiting for init to reap it.
    assert!(
        stat.is_empty() || stat.contains(") Z "),
        "the grandchild survived: {stat}"
    );
}

#[test]
fn a_segment_past_its_timeout_fails() {
    let (t, _scratch) = trainer();
    let job = command_job(
        &["sh", "-c", "echo working; sleep 30"],
        3,
        &[("timeout", ParamValue::Int(1))],
    );
    let started = Instant::now();
    let err = failure(&t, &job);
    assert!(
        err.contains("timed out after 1s") && err.contains("working"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}
