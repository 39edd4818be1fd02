//! `StudyBuilder` writes the study file a user would; `Client` submits it,
//! a file, and waits for the study.

use super::Server;
use hpo_proto::study::{ParamSpec, SchedulerKind, Scope};
use hpo_proto::{Direction, ParamValue, Params, StudySpec, StudyState};
use hpo_sdk::{SdkError, StudyBuilder};
use std::time::Duration;
use tonic::Code;

fn full() -> StudyBuilder {
    let mut first = Params::new();
    first.insert("lr".into(), ParamValue::Float(0.01));
    first.insert("layers".into(), ParamValue::Int(2));
    first.insert("opt".into(), ParamValue::Categorical("adam".into()));
    first.insert("width".into(), ParamValue::Int(64));
    StudyBuilder::new("builder")
        .seed(7)
        .objective("val_loss", Direction::Minimize)
        .scope(Scope::Best)
        .algorithm("tpe")
        .max_trials(20)
        .max_parallel(4)
        .max_duration(Duration::from_secs(90))
        .target(0.05)
        .max_retries(1)
        .priority(3)
        .enqueue(&first)
        .trainer_command(["python", "train.py", "--epochs", "{budget}"], 9)
        .trainer_setting("working_dir", "/tmp")
        .float("lr", 1e-4, 1e-1, true)
        .int("layers", 1, 4)
        .categorical("opt", ["adam", "sgd"])
        .param(
            "width",
            &ParamSpec::Int {
                low: 16,
                high: 256,
                log: true,
                step: 1,
            },
        )
        .schedule("asha", 1, 3)
        .schedule_setting("keep_best", true)
}

const SAME_BY_HAND: &str = r#"
name = "builder"
seed = 7
[objective]
metric = "val_loss"
direction = "minimize"
scope = "best"
[search]
algorithm = "tpe"
max_trials = 20
max_parallel = 4
max_duration = "90s"
target = 0.05
max_retries = 1
priority = 3
enqueue = [{ lr = 0.01, layers = 2, opt = "adam", width = 64 }]
[trainer]
kind = "command"
command = ["python", "train.py", "--epochs", "{budget}"]
epochs = 9
working_dir = "/tmp"
[params]
lr = { type = "float", low = 1e-4, high = 1e-1, log = true }
layers = { type = "int", low = 1, high = 4 }
opt = ["adam", "sgd"]
width = { type = "int", low = 16, high = 256, log = true }
[schedule]
algorithm = "asha"
min_resource = 1
reduction_factor = 3
keep_best = true
"#;

#[test]
fn the_builder_writes_the_file_a_user_would() {
    let b = full();
    let text = b.to_toml().unwrap();
    let spec = StudySpec::parse(&text, "built.toml").unwrap();
    assert_eq!(spec, StudySpec::parse(SAME_BY_HAND, "hand.toml").unwrap());
    assert_eq!(spec, b.spec().unwrap());
    assert_eq!(spec.seed, Some(7));
    assert_eq!(spec.search.max_parallel, 4);
    assert_eq!(spec.trainer.command[3], "{budget}");
    assert_eq!(spec.schedule.algorithm, SchedulerKind::Asha);
    assert_eq!(spec.schedule.max_resource, 9);
    assert_eq!(
        spec.params["lr"],
        ParamSpec::Float {
            low: 1e-4,
            high: 1e-1,
            log: true,
            step: None
        }
    );
    assert_eq!(
        spec.params["opt"],
        ParamSpec::Categorical {
            choices: vec![
                ParamValue::Categorical("adam".into()),
                ParamValue::Categorical("sgd".into())
            ]
        }
    );
}

#[test]
fn a_bad_value_is_the_parsers_error_naming_the_key() {
    let bad = StudyBuilder::new("bad")
        .objective("loss", Direction::Minimize)
        .algorithm("random")
        .max_trials(4)
        .trainer_external(1)
        .float("lr", 0.0, 0.1, true);
    let e = bad.to_toml().unwrap_err();
    assert_eq!(
        e.to_string(),
        "study `bad`: params.lr.low: must be > 0 when log = true"
    );
    assert_eq!(e.key, "params.lr.low");
    // A missing table is named too.
    let e = StudyBuilder::new("no-trainer")
        .objective("loss", Direction::Minimize)
        .algorithm("random")
        .max_trials(4)
        .float("x", 0.0, 1.0, false)
        .to_toml()
        .unwrap_err();
    assert_eq!(e.to_string(), "study `no-trainer`: trainer: missing table");
    let e = StudyBuilder::new("algo")
        .objective("loss", Direction::Minimize)
        .algorithm("annealing")
        .max_trials(4)
        .trainer_external(1)
        .float("x", 0.0, 1.0, false)
        .to_toml()
        .unwrap_err();
    assert_eq!(e.key, "search.algorithm");
}

#[tokio::test]
async fn built_studies_and_files_are_submitted_and_waited_for() {
    let server = Server::start(Duration::from_secs(30)).await;
    let client = server.client().await;

    // Checked locally: the coordinator never sees a bad study.
    let bad = StudyBuilder::new("bad")
        .objective("loss", Direction::Minimize)
        .algorithm("random")
        .max_trials(4)
        .trainer_external(1)
        .float("lr", 0.0, 0.1, true);
    match client.submit_spec(&bad).await {
        Err(SdkError::Spec(e)) => assert_eq!(e.key, "params.lr.low"),
        other => panic!("{other:?}"),
    }
    assert!(client.studies().await.unwrap().is_empty());

    let built = StudyBuilder::new("built")
        .objective("loss", Direction::Minimize)
        .algorithm("random")
        .max_trials(2)
        .trainer_external(1)
        .float("x", 0.0, 1.0, false);
    let id = client.submit_spec(&built).await.unwrap();
    let info = client.study(id).await.unwrap();
    assert_eq!(info.name, "built");
    assert_eq!(info.study_toml, built.to_toml().unwrap());

    // A file: its name in the coordinator's errors, its path in a read error.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mine.toml");
    std::fs::write(&path, built.to_toml().unwrap().replace("0.0", "-1.0")).unwrap();
    let from_file = client.submit_file(&path).await.unwrap();
    assert_ne!(from_file, id);
    std::fs::write(&path, "name = \"broken\"").unwrap();
    let e = client.submit_file(&path).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument));
    assert!(e.to_string().starts_with("mine.toml: "), "{e}");
    let missing = dir.path().join("missing.toml");
    match client.submit_file(&missing).await {
        Err(e @ SdkError::File { .. }) => {
            assert!(
                e.to_string().contains(&missing.display().to_string()),
                "{e}"
            );
        }
        other => panic!("{other:?}"),
    }

    // follow: one call per poll, the last with the final state.
    let canceller = {
        let client = client.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            client.cancel(id).await.unwrap();
        })
    };
    let mut polls = Vec::new();
    let info = client
        .follow(id, Duration::from_millis(10), |i| polls.push(i.state))
        .await
        .unwrap();
    canceller.await.unwrap();
    assert_eq!(info.state, StudyState::Cancelled);
    assert!(polls.len() >= 2, "{polls:?}");
    assert_eq!(polls.last(), Some(&StudyState::Cancelled));
    assert!(
        polls[..polls.len() - 1]
            .iter()
            .all(|s| *s == StudyState::Running)
    );
    assert_eq!(
        client.wait(id, Duration::from_millis(10)).await.unwrap(),
        info
    );
    server.stop().await;
}
