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

fn submit(url: &str, study: &Path) -> String {
    let start = Instant::now();
    loop {
        let out = hpo()
            .args(["submit", "--coordinator", url])
            .arg(study)
            .output()
            .unwrap();
        if out.status.success() {
            return text(&out.stdout).trim().to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
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
