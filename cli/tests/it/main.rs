//! The `hpo` binary as users run it: separate server and worker processes,
//! `kill -9` of the coordinator, SIGTERM of a worker, exit codes and output.
#![allow(clippy::unwrap_used)]

mod bench;
mod command;
mod commands;
mod logs;
mod processes;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn hpo() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hpo"));
    c.env_remove("HPO_COORDINATOR").env("HPO_LOG", "info");
    c
}

pub fn run(args: &[&str]) -> Output {
    hpo().args(args).output().unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A child process killed (SIGKILL) when dropped, so a failing test leaves
/// nothing behind.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    pub fn kill9(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }

    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                return s;
            }
            assert!(
                start.elapsed() < limit,
                "process {} did not exit within {limit:?}",
                self.pid()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn server(port: u16, data: &Path, log: &Path, lease_ttl: &str) -> Proc {
    server_with_http(port, free_port(), data, log, lease_ttl)
}

/// `hpo server` with its dashboard on 127.0.0.1:`http_port`.
pub fn server_with_http(
    port: u16,
    http_port: u16,
    data: &Path,
    log: &Path,
    lease_ttl: &str,
) -> Proc {
    let log = std::fs::File::create(log).unwrap();
    Proc(
        hpo()
            .args([
                "server",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--http",
                &format!("127.0.0.1:{http_port}"),
                "--lease-ttl",
                lease_ttl,
                "--data-dir",
            ])
            .arg(data)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

pub fn worker(url: &str, id: &str, devices: &str, log: &Path) -> Proc {
    let log = std::fs::File::create(log).unwrap();
    Proc(
        hpo()
            .args([
                "worker",
                "--coordinator",
                url,
                "--devices",
                devices,
                "--id",
                id,
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// Polls `hpo trials ID --format json` until `done` accepts it.
pub fn wait_trials(
    url: &str,
    study: &str,
    limit: Duration,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let out = run(&["trials", study, "--format", "json", "--coordinator", url]);
        if out.status.success() {
            let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
            if done(&v) {
                return v;
            }
        }
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}; last: {}",
            text(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn count(trials: &[serde_json::Value], state: &str) -> usize {
    trials.iter().filter(|t| t["state"] == state).count()
}

pub fn sim_study(dir: &Path, trials: u32, epochs: u32, step_ms: u32) -> std::path::PathBuf {
    let path = dir.join("sim.toml");
    std::fs::write(
        &path,
        format!(
            r#"
name = "sim"
seed = 3
[objective]
metric = "loss"
direction = "minimize"
[search]
algorithm = "random"
max_trials = {trials}
max_parallel = 4
[trainer]
kind = "simulated"
epochs = {epochs}
step_ms = {step_ms}
[params]
x = {{ type = "float", low = 0.0, high = 1.0 }}
"#
        ),
    )
    .unwrap();
    path
}

/// A plain HTTP/1.1 GET on loopback: status code and body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Submits `study` with `hpo submit`, retrying while the server starts;
/// the study id it prints.
pub fn submit(url: &str, study: &Path) -> String {
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
