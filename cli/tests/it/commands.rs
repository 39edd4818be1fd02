use super::*;

#[test]
fn an_invalid_study_file_exits_2_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quickstart.toml");
    let good = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/quickstart.toml"
    ))
    .unwrap();
    let bad = good.replace(
        "lr = [1e-2, 1e-3, 1e-4]",
        "lr = { type = \"float\", low = 0.0, high = 0.1, log = true }",
    );
    assert_ne!(good, bad);
    std::fs::write(&path, bad).unwrap();
    for cmd in ["submit", "run"] {
        let out = hpo()
            .arg(cmd)
            .arg(&path)
            .args(
                ["--coordinator", "http://127.0.0.1:1"]
                    .iter()
                    .take(if cmd == "submit" { 2 } else { 0 }),
            )
            .args(["--data-dir"].iter().take(if cmd == "run" { 1 } else { 0 }))
            .args(
                [dir.path().join("d").to_str().unwrap()]
                    .iter()
                    .take(if cmd == "run" { 1 } else { 0 }),
            )
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert_eq!(
            err.trim(),
            "error: quickstart.toml: params.lr.low: must be > 0 when log = true",
            "{cmd}"
        );
    }
    let out = hpo()
        .arg("submit")
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("missing.toml: cannot read"));

    // A CSV data set without the label column its options name is refused
    // before anything is submitted, naming the file, the key and the columns.
    let csv = dir.path().join("houses.csv");
    std::fs::write(&csv, "rooms,area,price\n3,70,200\n").unwrap();
    let with_data = |dataset: &str| {
        let study = good.replace(
            "dataset = \"fashion-mnist\"",
            &format!("dataset = \"{dataset}\""),
        );
        assert_ne!(study, good);
        std::fs::write(&path, study).unwrap();
        let out = hpo()
            .args(["submit", "--coordinator", "http://127.0.0.1:1"])
            .arg(&path)
            .output()
            .unwrap();
        (out.status.code(), text(&out.stderr))
    };
    let (code, err) = with_data(&format!("csv:{}?label=cost", csv.display()));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("quickstart.toml: trainer.dataset:")
            && err.contains("`cost`")
            && err.contains("price"),
        "{err}"
    );
    let (code, err) = with_data(&format!("csv:{}?lable=price", csv.display()));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("trainer.dataset:") && err.contains("lable"),
        "{err}"
    );
    // A good one passes the check (and then finds no coordinator: exit 1).
    let (code, err) = with_data(&format!(
        "csv:{}?label=price&task=regression",
        csv.display()
    ));
    assert_eq!(code, Some(1), "{err}");
}

#[test]
fn an_unreachable_coordinator_gets_one_line_naming_the_url() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = run(&["status", "--coordinator", &url]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(&url) && err.contains("hpo server"), "{err}");
    // The environment variable works as the flag does.
    let out = hpo()
        .args(["status"])
        .env("HPO_COORDINATOR", &url)
        .output()
        .unwrap();
    assert!(text(&out.stderr).contains(&url));
}

#[test]
fn every_command_has_help_with_an_example() {
    for cmd in [
        "run",
        "server",
        "worker",
        "submit",
        "status",
        "trials",
        "best",
        "cancel",
        "logs",
        "model",
        "bench",
        "bench-samplers",
    ] {
        let out = run(&[cmd, "--help"]);
        assert!(out.status.success(), "{cmd}");
        let help = text(&out.stdout);
        assert!(
            help.contains("Example: hpo"),
            "{cmd} --help has no example:\n{help}"
        );
    }
}

#[test]
fn hpo_run_trains_real_mlps_and_prints_the_best() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spirals.toml");
    std::fs::write(
        &path,
        r#"
name = "spirals"
seed = 1
[objective]
metric = "val_accuracy"
direction = "maximize"
[search]
algorithm = "random"
max_trials = 3
max_parallel = 2
[trainer]
kind = "mlp"
dataset = "synthetic:spirals"
epochs = 2
[params]
hidden = { type = "int", low = 16, high = 64, step = 16 }
lr = [1e-2, 3e-3]
"#,
    )
    .unwrap();
    let out = hpo()
        .arg("run")
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("HPO_LOG", "warn")
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("3/3 done: 3 completed"), "{stdout}");
    assert!(stdout.contains("best trial"), "{stdout}");
    assert!(stdout.contains("hidden = "), "{stdout}");
}

#[test]
fn hpo_run_fails_fast_when_its_worker_cannot_start() {
    let dir = tempfile::tempdir().unwrap();
    let study = sim_study(dir.path(), 2, 1, 0);
    let out = hpo()
        .arg("run")
        .arg(&study)
        .args(["--devices", "cuda:7", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("cuda:7 is not available"), "{err}");
    assert!(!dir.path().join("data").exists(), "nothing was stored");
}

#[test]
fn hpo_run_with_asha_on_data_fractions_trains_the_best_on_all_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fractions.toml");
    std::fs::write(
        &path,
        r#"
name = "fractions"
seed = 2
[objective]
metric = "val_accuracy"
direction = "maximize"
[search]
algorithm = "random"
max_trials = 9
max_parallel = 2
[trainer]
kind = "mlp"
dataset = "synthetic:blobs"
epochs = 2
hidden = 32
[schedule]
algorithm = "asha"
resource = "data_fraction"
min_resource = 1
max_resource = 9
reduction_factor = 3
[params]
lr = { type = "float", low = 1e-3, high = 1e-1, log = true }
"#,
    )
    .unwrap();
    let data = dir.path().join("data");
    let out = hpo()
        .arg("run")
        .arg(&path)
        .arg("--data-dir")
        .arg(&data)
        .env("HPO_LOG", "warn")
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // 9 trials on 1/9 of the data, the best third of them (as ASHA saw it
    // when each asked) on 3/9, and the best of those on all of it.
    assert!(
        stdout.contains("9/9 done: 1 completed, 0 failed, 8 stopped"),
        "{stdout}"
    );
    assert!(stdout.contains("scheduler  asha, "), "{stdout}");
    // The completed trial's last step is the full data set's level.
    let row = stdout
        .lines()
        .find(|l| {
            let mut cells = l.split_whitespace();
            cells.next().is_some_and(|c| c.parse::<u32>().is_ok())
                && cells.next() == Some("completed")
        })
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(row.split_whitespace().nth(3) == Some("9"), "{row}");
}
