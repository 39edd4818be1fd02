use super::*;

/// A temporary directory, a free port and a coordinator process serving the
/// data dir inside it: the set-up every test here starts from.
struct Setup {
    dir: tempfile::TempDir,
    port: u16,
    url: String,
    server: Proc,
}

impl Setup {
    fn start(lease_ttl: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let server = server(
            port,
            &dir.path().join("data"),
            &dir.path().join("server.log"),
            lease_ttl,
        );
        Setup {
            url: format!("http://127.0.0.1:{port}"),
            dir,
            port,
            server,
        }
    }

    /// A second coordinator on the same port and data dir.
    fn restart_server(&mut self, lease_ttl: &str) {
        self.server = server(
            self.port,
            &self.dir.path().join("data"),
            &self.dir.path().join("server-restarted.log"),
            lease_ttl,
        );
    }

    fn worker(&self, id: &str, devices: &str) -> Proc {
        worker(
            &self.url,
            id,
            devices,
            &self.dir.path().join(format!("{id}.log")),
        )
    }
}

/// Some trial runs and has reported at least one step.
fn running_with_progress(trials: &[serde_json::Value]) -> bool {
    trials
        .iter()
        .any(|t| t["state"] == "running" && t["last_step"].as_u64().unwrap_or(0) >= 1)
}

#[test]
fn kill_9_of_the_coordinator_loses_nothing_and_the_study_completes() {
    let mut env = Setup::start("3s");
    let url = env.url.clone();
    let _w = env.worker("w-kill", "cpu:2");
    let id = submit(&url, &sim_study(env.dir.path(), 12, 5, 100));

    // Some trials done, some running with metrics reported.
    let before = wait_trials(&url, &id, Duration::from_secs(30), |t| {
        count(t, "completed") >= 3
    });
    env.server.kill9();
    env.restart_server("3s");
    let after = wait_trials(&url, &id, Duration::from_secs(60), |t| {
        count(t, "completed") == 12
    });
    for b in before.iter().filter(|t| t["state"] == "completed") {
        let a = after.iter().find(|a| a["number"] == b["number"]).unwrap();
        assert_eq!(a, b, "a completed trial changed across the restart");
    }
    assert!(
        after.iter().all(|t| t["attempt"] == 1),
        "no completed trial ran twice: {after:?}"
    );
    // Every metric reported before the kill is still there.
    let metrics = |url: &str| -> usize {
        let out = run(&["trials", &id, "--format", "json", "--coordinator", url]);
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
            .unwrap()
            .len()
    };
    assert_eq!(metrics(&url), 12);
    let status = run(&["status", &id, "--coordinator", &url]);
    let s = text(&status.stdout);
    assert!(s.contains("completed (max_trials)"), "{s}");
    let best = run(&["best", &id, "--format", "json", "--coordinator", &url]);
    let best: serde_json::Value = serde_json::from_slice(&best.stdout).unwrap();
    assert!(best["params"]["x"].is_number());
    let csv = run(&["trials", &id, "--format", "csv", "--coordinator", &url]);
    assert_eq!(text(&csv.stdout).lines().count(), 13);
    env.server.sigterm();
    assert!(env.server.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn sigterm_makes_a_worker_hand_its_trials_back_at_once() {
    // A long lease: the requeue below must come from the worker's goodbye,
    // not from the lease running out.
    let env = Setup::start("20s");
    let (dir, url) = (&env.dir, env.url.clone());
    let mut w1 = env.worker("w-term", "cpu");
    let id = submit(&url, &sim_study(dir.path(), 2, 20, 200));
    wait_trials(&url, &id, Duration::from_secs(20), running_with_progress);
    let t0 = Instant::now();
    w1.sigterm();
    assert!(w1.wait_exit(Duration::from_secs(10)).success());
    // Well before the 20 s lease would expire, the trial is waiting again.
    let trials = wait_trials(&url, &id, Duration::from_secs(8), |t| {
        count(t, "waiting") == 1 && count(t, "running") == 0
    });
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(
        trials[0]["reason"]
            .as_str()
            .unwrap()
            .contains("interrupted"),
        "{trials:?}"
    );
    // Another worker picks it up and the study completes.
    let _w2 = env.worker("w-next", "cpu:2");
    let done = wait_trials(&url, &id, Duration::from_secs(30), |t| {
        count(t, "completed") == 2
    });
    assert!(done.iter().any(|t| t["attempt"] == 2));
}

#[test]
fn a_worker_process_killed_mid_trial_has_its_trial_run_again_elsewhere() {
    let env = Setup::start("2s");
    let (dir, url) = (&env.dir, env.url.clone());
    let mut doomed = env.worker("w-doomed", "cpu");
    let id = submit(&url, &sim_study(dir.path(), 3, 10, 100));
    let running = wait_trials(&url, &id, Duration::from_secs(20), running_with_progress);
    let victim = running.iter().find(|t| t["state"] == "running").unwrap()["number"].clone();
    doomed.kill9();
    let _rescuer = env.worker("w-rescuer", "cpu:2");
    let done = wait_trials(&url, &id, Duration::from_secs(40), |t| {
        count(t, "completed") == 3
    });
    let t = done.iter().find(|t| t["number"] == victim).unwrap();
    assert_eq!(t["attempt"], 2, "{t}");
    assert_eq!(t["worker"], "w-rescuer");
}

#[test]
fn a_grid_study_on_two_worker_processes_runs_every_point_once() {
    let env = Setup::start("5s");
    let (dir, url) = (&env.dir, env.url.clone());
    let _w1 = env.worker("w-a", "cpu");
    let _w2 = env.worker("w-b", "cpu");
    let path = dir.path().join("grid.toml");
    std::fs::write(
        &path,
        r#"
name = "grid"
[objective]
metric = "loss"
direction = "minimize"
[search]
algorithm = "grid"
max_parallel = 4
[trainer]
kind = "simulated"
epochs = 2
# 0.4 s a trial: longer than an idle worker's longest poll wait (1 s) for
# all ten, so both workers surely take part.
step_ms = 200
[params]
x = { type = "float", low = 0.0, high = 1.0, step = 0.25 }
mode = ["a", "b"]
"#,
    )
    .unwrap();
    let id = submit(&url, &path);
    let done = wait_trials(&url, &id, Duration::from_secs(40), |t| {
        count(t, "completed") == 10
    });
    assert_eq!(done.len(), 10);
    let points: std::collections::HashSet<String> =
        done.iter().map(|t| t["params"].to_string()).collect();
    assert_eq!(points.len(), 10, "every grid point exactly once");
    assert!(done.iter().all(|t| t["attempt"] == 1));
    let workers: std::collections::HashSet<String> =
        done.iter().map(|t| t["worker"].to_string()).collect();
    assert_eq!(workers.len(), 2, "both workers took part");
}

#[test]
fn submit_wait_status_and_cancel_from_the_command_line() {
    let env = Setup::start("5s");
    let (dir, url) = (&env.dir, env.url.clone());
    let _w = env.worker("w-cli", "cpu:2");
    // --wait returns when the study ends, with the summary.
    let quick = sim_study(dir.path(), 4, 2, 10);
    submit(&url, &quick); // the server is up once this succeeds
    let out = hpo()
        .args(["submit", "--wait", "--coordinator", &url])
        .arg(&quick)
        .env("HPO_LOG", "warn")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert_eq!(
        stdout.lines().next(),
        Some("2"),
        "the study id comes first: {stdout}"
    );
    assert!(stdout.contains("4/4 done: 4 completed"), "{stdout}");
    assert!(stdout.contains("best trial"), "{stdout}");
    // Cancel a long study while it runs.
    let slow = dir.path().join("slow");
    std::fs::create_dir(&slow).unwrap();
    let id = submit(&url, &sim_study(&slow, 50, 100, 100));
    wait_trials(&url, &id, Duration::from_secs(20), |t| {
        count(t, "running") >= 1
    });
    let out = run(&["cancel", &id, "--coordinator", &url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with(&format!("study {id} (sim) is")));
    let start = Instant::now();
    loop {
        let s = text(&run(&["status", &id, "--coordinator", &url]).stdout);
        if s.contains("cancelled (cancelled)") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let list = text(&run(&["status", "--coordinator", &url]).stdout);
    assert_eq!(
        list.lines().count(),
        4,
        "a header and three studies: {list}"
    );
    let trials = wait_trials(&url, &id, Duration::from_secs(5), |_| true);
    assert!(count(&trials, "cancelled") >= 1);
    assert_eq!(count(&trials, "running"), 0);
}

/// Reports nothing anywhere: replays a trial uninterrupted in the test.
struct Recorder(Vec<(u32, hpo_proto::MetricValues)>);

impl hpo_worker::trainer::Reporter for Recorder {
    fn report(&mut self, step: u32, values: hpo_proto::MetricValues) -> hpo_proto::Decision {
        self.0.push((step, values));
        hpo_proto::Decision::Continue
    }
    fn stop_requested(&self) -> bool {
        false
    }
}

#[test]
fn asha_pauses_libtorch_trials_and_resumes_them_on_other_worker_processes() {
    let env = Setup::start("30s");
    let path = env.dir.path().join("asha.toml");
    std::fs::write(
        &path,
        r#"
name = "mlp-asha"
seed = 4
[objective]
metric = "val_loss"
direction = "minimize"
[search]
algorithm = "random"
max_trials = 9
max_parallel = 2
[trainer]
kind = "mlp"
dataset = "synthetic:blobs"
epochs = 9
batch_size = 64
hidden = 32
[schedule]
algorithm = "asha"
min_resource = 1
reduction_factor = 3
keep_best = true
[params]
lr = { type = "float", low = 1e-3, high = 1e-1, log = true }
optimizer = ["adam", "sgd"]
"#,
    )
    .unwrap();
    // Two worker processes of one slot each: a promoted trial usually
    // resumes in the other process, which has only the checkpoint.
    let _a = env.worker("wa", "cpu:1");
    let _b = env.worker("wb", "cpu:1");
    let id = submit(&env.url, &path);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (info, trials) = rt.block_on(async {
        let client = hpo_sdk::Client::connect(&env.url).await.unwrap();
        let id = hpo_proto::StudyId(id.parse().unwrap());
        let start = Instant::now();
        let info = loop {
            let info = client.study(id).await.unwrap();
            if info.state != hpo_proto::StudyState::Running {
                break info;
            }
            assert!(start.elapsed() < Duration::from_secs(180), "{info:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let trials = client.trials(info.id, true).await.unwrap();
        (info, trials)
    });
    assert_eq!(info.scheduler, "asha");
    assert_eq!(info.counts.completed + info.counts.stopped, 9, "{info:?}");
    // The best trial's final model is kept and can be downloaded.
    let model = env.dir.path().join("best.ckpt");
    let out = run(&[
        "model",
        &info.id.to_string(),
        "--out",
        model.to_str().unwrap(),
        "--coordinator",
        &env.url,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let best = info.best.as_ref().unwrap();
    assert!(
        text(&out.stdout).contains(&format!("trial {}", best.id)),
        "{}",
        text(&out.stdout)
    );
    let bytes = std::fs::read(&model).unwrap();
    assert!(bytes.starts_with(b"hpo-mlp\0"), "an mlp checkpoint");
    let promoted: Vec<_> = trials.iter().filter(|t| t.attempt >= 2).collect();
    assert!(!promoted.is_empty(), "some trial was promoted: {trials:?}");
    for t in &trials {
        // Every epoch is trained once: the steps over all attempts are 1..=last.
        let steps: Vec<u32> = t.metrics.iter().map(|m| m.step).collect();
        let last = t.last_step.unwrap();
        assert_eq!(steps, (1..=last).collect::<Vec<_>>(), "trial {}", t.id);
        let attempts: std::collections::BTreeSet<u32> =
            t.metrics.iter().map(|m| m.attempt).collect();
        assert_eq!(attempts.len() as u32, t.attempt, "one attempt per segment");
    }
    // A resumed trial's metrics are those of one uninterrupted run of the
    // same configuration and seed.
    let t = promoted.iter().max_by_key(|t| t.last_step).unwrap();
    let last = t.last_step.unwrap();
    let spec = hpo_proto::StudySpec::parse(&std::fs::read_to_string(&path).unwrap(), "a").unwrap();
    let job = hpo_worker::trainer::TrialJob {
        assignment: hpo_proto::Assignment {
            trial: t.id,
            attempt: 1,
            study_name: spec.name.clone(),
            params: t.params.clone(),
            trainer: spec.trainer.clone(),
            seed: hpo_coordinator::sampler::mix(4, u64::from(t.id.number) + 1),
            metric: "val_loss".into(),
            resource: hpo_proto::Resource::Epochs,
            budget: 9,
            max_resource: 9,
            resume: None,
            save_final: false,
        },
        device: hpo_worker::device::Device::Cpu(0),
        resume: None,
    };
    let trainers =
        hpo_worker::trainer::Trainers::new(std::sync::Arc::new(hpo_worker::data::DataCache::new()));
    let mut rec = Recorder(Vec::new());
    trainers.get("mlp").unwrap().train(&job, &mut rec).unwrap();
    for m in &t.metrics {
        let (_, whole) = &rec.0[m.step as usize - 1];
        for key in ["val_loss", "val_accuracy", "train_loss"] {
            let (a, b) = (m.values[key], whole[key]);
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "trial {} step {} {key}: resumed {a}, uninterrupted {b} (last step {last})",
                t.id,
                m.step
            );
        }
    }
}

#[test]
fn hpo_server_serves_the_dashboard_and_hpo_run_prints_its_address() {
    let dir = tempfile::tempdir().unwrap();
    let (port, http) = (free_port(), free_port());
    let mut server = server_with_http(
        port,
        http,
        &dir.path().join("data"),
        &dir.path().join("server.log"),
        "5s",
    );
    let url = format!("http://127.0.0.1:{port}");
    let id = submit(&url, &sim_study(dir.path(), 2, 2, 1));
    let (status, body) = http_get(http, "/").unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("<html") || body.contains("<!DOCTYPE"),
        "{body}"
    );
    let (status, body) = http_get(http, "/api/studies").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("\"id\":{id}")), "{body}");
    let (status, body) = http_get(http, "/api/studies/nine").unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("`nine` is not a number"), "{body}");
    server.sigterm();
    assert!(server.wait_exit(Duration::from_secs(10)).success());

    // `hpo run` serves it while the study runs and says where.
    let run_dir = dir.path().join("run");
    std::fs::create_dir(&run_dir).unwrap();
    let web = free_port();
    let out = hpo()
        .arg("run")
        .arg(sim_study(&run_dir, 2, 2, 1))
        .args(["--data-dir"])
        .arg(run_dir.join("data"))
        .args(["--http", &format!("127.0.0.1:{web}")])
        .env("HPO_LOG", "warn")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("dashboard at http://127.0.0.1:{web}/#/study/1")),
        "{stderr}"
    );
    // A taken port is an error when it was asked for by name.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    let out = hpo()
        .arg("run")
        .arg(sim_study(&run_dir, 2, 2, 1))
        .args(["--data-dir"])
        .arg(run_dir.join("data2"))
        .args(["--http", &format!("127.0.0.1:{busy}")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!("--http: cannot listen on 127.0.0.1:{busy}")),
        "{}",
        text(&out.stderr)
    );
}
