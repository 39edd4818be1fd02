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
        submit(&self.url, &path)
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
    // Tests run in parallel: one of them makes it, the others wait for it.
    static VENV: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    VENV.get_or_init(make_python_venv).clone()
}

fn make_python_venv() -> Option<PathBuf> {
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
    // The package's own unit tests, with its client against a real `hpo`.
    let out = Command::new(venv.join("bin/python"))
        .args(["-m", "unittest", "discover", "-s"])
        .arg(root.join("sdk/python/tests"))
        .env("HPO_BIN", env!("CARGO_BIN_EXE_hpo"))
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

/// The folder with Fashion-MNIST's IDX files, if this machine has it.
fn fashion_mnist() -> Option<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("HPO_TEST_DATA") {
        roots.push(PathBuf::from(d));
    }
    roots.push(PathBuf::from("/usr/share/datasets"));
    let found = roots
        .iter()
        .map(|r| r.join("fashion-mnist"))
        .find(|d| d.join("train-images-idx3-ubyte.gz").is_file());
    if found.is_none() {
        eprintln!(
            "skipping: no fashion-mnist under {roots:?} (scripts/setup installs Debian's dataset-fashion-mnist)"
        );
    }
    found
}

#[test]
fn the_pytorch_example_tunes_a_plain_pytorch_script_with_pauses_and_resumes() {
    let Some(venv) = python_venv() else { return };
    let Some(data) = fashion_mnist() else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    // torch comes from the repository's .venv (scripts/setup), not PyPI.
    let torch_site = std::fs::read_dir(root.join(".venv/lib"))
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.path().join("site-packages"))
        .filter(|p| p.join("torch").is_dir());
    let Some(torch_site) = torch_site else {
        eprintln!("skipping: no torch in .venv (run scripts/setup)");
        return;
    };
    let site = std::fs::read_dir(venv.join("lib"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("site-packages");
    std::fs::write(
        site.join("hpo-test-torch.pth"),
        format!("{}\n", torch_site.display()),
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = server(
        port,
        &dir.path().join("data"),
        &dir.path().join("server.log"),
        "30s",
    );
    let url = format!("http://127.0.0.1:{port}");
    let path = format!(
        "{}:{}",
        venv.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let worker_log = dir.path().join("worker.log");
    let _worker = Proc(
        hpo()
            .args([
                "worker",
                "--coordinator",
                &url,
                "--devices",
                "cpu:2",
                "--id",
                "w1",
            ])
            .current_dir(root)
            .env("PATH", path)
            .env("HPO_FASHION_MNIST", &data)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&worker_log).unwrap())
            .spawn()
            .unwrap(),
    );
    // The example's study, smaller: 4 trials, rungs at 1 and 3 epochs.
    let study = std::fs::read_to_string(root.join("examples/pytorch_mnist/study.toml"))
        .unwrap()
        .replace("max_trials = 12", "max_trials = 4")
        .replace("epochs = 6", "epochs = 3")
        .replace("\"10000\"]", "\"3000\", \"--val-subset\", \"1000\"]");
    assert!(
        study.contains("max_trials = 4") && study.contains("\"3000\""),
        "the example changed: {study}"
    );
    let file = dir.path().join("study.toml");
    std::fs::write(&file, study).unwrap();
    let id = submit(&url, &file);
    let trials = wait_trials(&url, &id, Duration::from_secs(400), |t| {
        t.len() == 4
            && t.iter().all(|t| {
                ["completed", "stopped", "failed"].contains(&t["state"].as_str().unwrap_or(""))
            })
    });
    let log = std::fs::read_to_string(&worker_log).unwrap_or_default();
    assert_eq!(count(&trials, "failed"), 0, "{trials:?}\n{log}");
    assert!(count(&trials, "completed") >= 1, "{trials:?}");
    let best = trials
        .iter()
        .filter_map(|t| t["value"].as_f64())
        .fold(0.0, f64::max);
    assert!(best > 0.6, "best val_accuracy {best}: {trials:?}");
    let resumed = trials.iter().find(|t| t["state"] == "completed").unwrap();
    let n = resumed["number"].as_u64().unwrap();
    let out = run(&["logs", &format!("{id}/{n}"), "--coordinator", &url]);
    let trial_log = text(&out.stdout);
    assert!(
        trial_log.contains("resuming after step 1"),
        "a completed trial was paused at the first rung and resumed:\n{trial_log}"
    );
}
