//! Studies of the `command` trainer through real processes: an `hpo server`,
//! an `hpo worker`, and trial programs written with the Rust SDK, the
//! Python SDK (in a virtualenv this test makes) or plain shell.

use super::*;
use std::path::PathBuf;

struct Setup {
    dir: tempfile::TempDir,
    url: String,
    _server: Proc,
    _worker: Proc,
}

impl Setup {
    fn start() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let server = server(
            port,
            &dir.path().join("data"),
            &dir.path().join("server.log"),
            "30s",
        );
        let url = format!("http://127.0.0.1:{port}");
        let worker = worker(&url, "w1", "cpu:2", &dir.path().join("worker.log"));
        Setup {
            dir,
            url,
            _server: server,
            _worker: worker,
        }
    }

    fn submit(&self, name: &str, toml: &str) -> String {
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, toml).unwrap();
        let start = Instant::now();
        loop {
            let out = hpo()
                .args(["submit", "--coordinator", &self.url])
                .arg(&path)
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

    fn finished(&self, study: &str, n: usize, limit: Duration) -> Vec<serde_json::Value> {
        wait_trials(&self.url, study, limit, |t| {
            t.len() == n
                && t.iter().all(|t| {
                    ["completed", "stopped", "failed", "cancelled"]
                        .contains(&t["state"].as_str().unwrap_or(""))
                })
        })
    }

    fn logs(&self, trial: &str) -> String {
        let out = run(&["logs", trial, "--coordinator", &self.url]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    }

    fn worker_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("worker.log")).unwrap_or_default()
    }
}

/// An ASHA study over `command`, which pauses trials at rungs and resumes
/// the promoted ones from their checkpoint folders.
fn asha_study(name: &str, command: &[String]) -> String {
    let command: Vec<String> = command
        .iter()
        .map(|a| format!("\"{}\"", a.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!(
        r#"
name = "{name}"
seed = 5
[objective]
metric = "loss"
direction = "minimize"
[search]
algorithm = "random"
max_trials = 9
max_parallel = 2
[trainer]
kind = "command"
command = [{}]
epochs = 9
[schedule]
algorithm = "asha"
min_resource = 1
reduction_factor = 3
[params]
x = {{ type = "float", low = 0.0, high = 1.0 }}
"#,
        command.join(", ")
    )
}

/// Checks an ASHA study of `sdk_trial`-like programs: every trial ended,
/// none failed, and a promoted trial resumed from its checkpoint (its log
/// says so, and its curve goes on from where it paused).
fn check_resumed(s: &Setup, study: &str, trials: &[serde_json::Value]) {
    assert_eq!(count(trials, "failed"), 0, "{trials:?}\n{}", s.worker_log());
    let resumed: Vec<&serde_json::Value> = trials
        .iter()
        .filter(|t| t["attempt"].as_u64().unwrap_or(0) >= 1 && t["last_step"].as_u64() > Some(1))
        .collect();
    assert!(!resumed.is_empty(), "no trial was promoted: {trials:?}");
    let n = resumed[0]["number"].as_u64().unwrap();
    let log = s.logs(&format!("{study}/{n}"));
    assert!(
        log.contains("resumed after step"),
        "log of trial {n}:\n{log}"
    );
}

fn sdk_trial() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/sdk_trial");
    if !path.is_file() {
        let ok = Command::new(env!("CARGO"))
            .args(["build", "-p", "hpo-worker", "--example", "sdk_trial"])
            .status()
            .unwrap();
        assert!(ok.success(), "cannot build the sdk_trial example");
    }
    path
}

#[test]
fn a_rust_program_using_hpo_sdk_is_tuned_with_pauses_and_resumes() {
    let s = Setup::start();
    let bin = sdk_trial().display().to_string();
    let study = s.submit("rust", &asha_study("rust-sdk", &[bin]));
    let trials = s.finished(&study, 9, Duration::from_secs(120));
    check_resumed(&s, &study, &trials);
    assert!(count(&trials, "completed") >= 1, "{trials:?}");
}

#[test]
fn crashes_fail_with_their_log_tail_and_long_logs_are_bounded() {
    let s = Setup::start();
    // Trial 0 prints about 200 KiB and then 3 metric lines; trial 1 crashes.
    let study = s.submit(
        "shell",
        r#"
name = "shell"
seed = 1
[objective]
metric = "loss"
direction = "minimize"
[search]
algorithm = "grid"
max_parallel = 1
[trainer]
kind = "command"
command = ["sh", "-c", "if [ $HPO_TRIAL = 1 ]; then echo 'Traceback: bad config' >&2; exit 4; fi; for i in $(seq 1 3000); do echo \"filler line $i ................................................\"; done; for s in 1 2 3; do echo \"hpo-metric {{\\\"step\\\": $s, \\\"loss\\\": 0.$s}}\"; done; echo last-line"]
epochs = 3
max_log_kib = 32
[params]
x = [0.5, 0.7]
"#,
    );
    let trials = s.finished(&study, 2, Duration::from_secs(60));
    let by_number = |n: u64| trials.iter().find(|t| t["number"] == n).unwrap();
    assert_eq!(by_number(0)["state"], "completed", "{trials:?}");
    assert_eq!(by_number(0)["value"], 0.3);
    let failed = by_number(1);
    assert_eq!(failed["state"], "failed");
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains("exited with status 4") && reason.contains("Traceback: bad config"),
        "{reason}"
    );

    let log = s.logs(&format!("{study}/0"));
    assert!(
        log.len() <= 34 * 1024,
        "the log is bounded: {} bytes",
        log.len()
    );
    assert!(
        log.contains("earlier output dropped"),
        "a marker says so:\n{}",
        &log[..300.min(log.len())]
    );
    assert!(
        log.contains("filler line 3000") && log.ends_with("last-line\n"),
        "the newest part is kept"
    );
    assert!(
        !log.contains("filler line 1 "),
        "the oldest part is dropped"
    );
    let log = s.logs(&format!("{study}/1"));
    assert!(log.contains("Traceback: bad config"), "{log}");

    // --follow of a finished trial prints its log and ends.
    let out = hpo()
        .args([
            "logs",
            &format!("{study}/1"),
            "--follow",
            "--coordinator",
            &s.url,
        ])
        .output()
        .unwrap();
    assert!(out.status.success() && text(&out.stdout).contains("Traceback"));
}

/// A virtualenv with the Python SDK installed (`pip install ./sdk/python`),
/// made once per checkout of the SDK's sources under target/tmp.
fn python_venv() -> Option<PathBuf> {
    if std::env::var_os("HPO_SKIP_PYTHON").is_some() {
        eprintln!("skipping: HPO_SKIP_PYTHON is set");
        return None;
    }
    let Ok(python) = which("python3") else {
        eprintln!("skipping: python3 not found");
        return None;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let sdk = root.join("sdk/python");
    let stamp = source_stamp(&[sdk.clone(), root.join("proto/proto")]);
    let venv = root.join("target/tmp/python-sdk-venv");
    let stamp_file = venv.join("hpo-sdk.stamp");
    if std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(stamp.as_str()) {
        return Some(venv);
    }
    let _ = std::fs::remove_dir_all(&venv);
    let ok = Command::new(&python)
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(ok.success(), "python3 -m venv failed");
    let out = Command::new(venv.join("bin/python"))
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .arg(&sdk)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pip install ./sdk/python failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    std::fs::write(&stamp_file, stamp).unwrap();
    Some(venv)
}

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .ok_or(())
}

/// Changes whenever a file under `roots` does (path, size, contents).
fn source_stamp(roots: &[PathBuf]) -> String {
    use std::hash::{Hash, Hasher};
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.')
                || name == "build"
                || name.ends_with(".egg-info")
                || name == "_pb"
                || name == "__pycache__"
            {
                continue;
            }
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    for r in roots {
        walk(r, &mut files);
    }
    files.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in files {
        f.hash(&mut h);
        std::fs::read(&f).unwrap_or_default().hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

const PYTHON_TRIAL: &str = r#"
import hpo

trial = hpo.Trial.from_env()
x = trial.get_float("x")
loss = 1.0
if trial.is_resumed:
    state = trial.load_json("state.json")
    assert state is not None and state["step"] == trial.start_step, state
    loss = state["loss"]
    print(f"resumed after step {trial.start_step} with loss {loss}")
floor = (x - 0.3) ** 2
for step in range(trial.start_step + 1, trial.max_resource + 1):
    loss = floor + (loss - floor) * 0.5
    decision = trial.report(step, {"loss": loss})
    if decision is hpo.Decision.PAUSE:
        trial.save_json({"step": step, "loss": loss}, "state.json")
        print(f"paused at step {step}")
        break
    if decision is hpo.Decision.STOP:
        print(f"stopped at step {step}")
        break
"#;

#[test]
fn a_python_program_using_the_python_sdk_is_tuned_with_pauses_and_resumes() {
    let Some(venv) = python_venv() else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    // The package's own unit tests, in the same virtualenv.
    let out = Command::new(venv.join("bin/python"))
        .args(["-m", "unittest", "discover", "-s"])
        .arg(root.join("sdk/python/tests"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python sdk tests:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let s = Setup::start();
    let script = s.dir.path().join("train.py");
    std::fs::write(&script, PYTHON_TRIAL).unwrap();
    let python = venv.join("bin/python").display().to_string();
    let study = s.submit(
        "python",
        &asha_study("python-sdk", &[python, script.display().to_string()]),
    );
    let trials = s.finished(&study, 9, Duration::from_secs(180));
    check_resumed(&s, &study, &trials);
}
