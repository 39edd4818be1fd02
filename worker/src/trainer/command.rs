//! The `command` trainer: the user's own program, one process per segment.
//!
//! The worker starts the program in a process group of its own, with the
//! trial described in `HPO_*` variables and a loopback endpoint that the
//! SDKs report to (JSON lines, `hpo_proto::command`). Every report goes
//! through the `Reporter` like a built-in trainer's, so the program hears
//! continue, stop or pause. A program that does not exit within the grace
//! period of a stop or pause has its whole process group terminated.
//!
//! The checkpoint of a paused segment is the program's checkpoint folder,
//! packed into one blob (`pack_dir`) so it travels the same upload path as
//! a built-in trainer's, and is unpacked into the next segment's folder.

use super::{Reporter, TrainEnd, TrainError, Trainer, TrialJob};
use crate::device::Device;
use hpo_proto::command::{self as contract, env};
use hpo_proto::{Decision, MetricValues, ParamValue, Resource};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// Seconds a program has to exit after a stop or pause, unless the study
/// file's `trainer.stop_grace` says otherwise.
const DEFAULT_GRACE_SECS: i64 = 10;
/// After SIGTERM, this long before SIGKILL.
const TERM_TO_KILL: Duration = Duration::from_secs(3);
/// Lines of the log kept for a failure's reason.
const TAIL_LINES: usize = 30;
const TAIL_BYTES: usize = 4096;
/// Longest line passed on whole; longer ones are cut (the log is text).
const MAX_LINE: usize = 64 * 1024;

/// Runs `trainer.command` per segment. Checkpoint folders live under
/// `scratch` and are removed once their segment is over.
#[derive(Debug, Clone)]
pub struct CommandTrainer {
    scratch: PathBuf,
}

impl Default for CommandTrainer {
    fn default() -> Self {
        CommandTrainer::new(std::env::temp_dir().join(format!("hpo-worker-{}", std::process::id())))
    }
}

impl CommandTrainer {
    pub fn new(scratch: impl Into<PathBuf>) -> Self {
        CommandTrainer {
            scratch: scratch.into(),
        }
    }
}

/// What the program has been told; shared with the endpoint's threads so
/// `should_stop` answers without a round trip through the main loop.
const CONTINUE: u8 = 0;
const STOP: u8 = 1;
const PAUSE: u8 = 2;

fn decision_code(d: Decision) -> u8 {
    match d {
        Decision::Continue => CONTINUE,
        Decision::Stop => STOP,
        Decision::Pause => PAUSE,
    }
}

fn decision_name(code: u8) -> &'static str {
    match code {
        STOP => "stop",
        PAUSE => "pause",
        _ => "continue",
    }
}

/// What the program's threads tell the segment's loop.
enum Msg {
    /// A line of output; true for stderr.
    Line(String, bool),
    /// A report; `reply` is None for an `hpo-metric` line.
    Report {
        step: u32,
        values: MetricValues,
        reply: Option<mpsc::SyncSender<Result<Decision, String>>>,
    },
    ReaderDone,
}

struct Settings {
    timeout: Option<Duration>,
    grace: Duration,
}

impl Settings {
    fn read(job: &TrialJob) -> Result<Settings, TrainError> {
        let s = &job.assignment.trainer.settings;
        let int = |name: &str| -> Result<Option<i64>, TrainError> {
            match s.get(name) {
                None => Ok(None),
                Some(ParamValue::Int(v)) if *v >= 0 => Ok(Some(*v)),
                Some(other) => Err(TrainError::Invalid(format!(
                    "trainer.{name}: expected a whole number of seconds, got {other}"
                ))),
            }
        };
        Ok(Settings {
            timeout: int("timeout")?.map(|s| Duration::from_secs(s as u64)),
            grace: Duration::from_secs(int("stop_grace")?.unwrap_or(DEFAULT_GRACE_SECS) as u64),
        })
    }
}

impl Trainer for CommandTrainer {
    fn train(&self, job: &TrialJob, reporter: &mut dyn Reporter) -> Result<TrainEnd, TrainError> {
        let a = &job.assignment;
        if a.trainer.command.is_empty() {
            return Err(TrainError::Invalid(
                "trainer.command is empty (expected the program and its arguments)".into(),
            ));
        }
        let settings = Settings::read(job)?;
        let folder = self.scratch.join(format!(
            "s{}-t{}-a{}",
            a.trial.study, a.trial.number, a.attempt
        ));
        let _cleanup = RemoveOnDrop(folder.clone());
        let checkpoint_dir = folder.join("checkpoint");
        let _ = std::fs::remove_dir_all(&folder);
        std::fs::create_dir_all(&checkpoint_dir).map_err(|e| {
            TrainError::Other(format!(
                "cannot create the checkpoint folder {}: {e}",
                checkpoint_dir.display()
            ))
        })?;
        if let Some(bytes) = &job.resume {
            unpack_dir(bytes, &checkpoint_dir)?;
        }
        let argv = command_line(job, &checkpoint_dir)?;
        let (tx, rx) = mpsc::channel::<Msg>();
        let standing = Arc::new(AtomicU8::new(CONTINUE));
        let token = format!("{:032x}", rand::random::<u128>());
        let endpoint = Endpoint::start(token.clone(), tx.clone(), standing.clone())
            .map_err(|e| TrainError::Other(format!("cannot open the trial endpoint: {e}")))?;

        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a stop reaches everything it started.
            .process_group(0)
            // Python buffers a pipe's output; a log should arrive as written.
            .env("PYTHONUNBUFFERED", "1");
        if !a.trainer.working_dir.is_empty() {
            cmd.current_dir(&a.trainer.working_dir);
        }
        cmd.envs(&a.trainer.env);
        for (k, v) in trial_env(job, &checkpoint_dir, endpoint.addr, &token) {
            cmd.env(k, v);
        }
        let oom_before = oom_kills();
        let shown = argv.join(" ");
        reporter.log(&format!(
            "[hpo] trial {} attempt {} on {}: {shown}{}\n",
            a.trial,
            a.attempt,
            job.device,
            match job.start_step() {
                0 => String::new(),
                s => format!(" (resuming after step {s})"),
            }
        ));
        let mut child = cmd.spawn().map_err(|e| {
            let dir = if a.trainer.working_dir.is_empty() {
                String::new()
            } else {
                format!(" in {}", a.trainer.working_dir)
            };
            TrainError::Other(format!("cannot start `{}`{dir}: {e}", argv[0]))
        })?;
        if let Some(out) = child.stdout.take() {
            spawn_reader(out, tx.clone(), true);
        }
        if let Some(err) = child.stderr.take() {
            spawn_reader(err, tx.clone(), false);
        }
        drop(tx);

        let mut run = Segment {
            reporter,
            standing,
            last_step: job.start_step(),
            pause_step: None,
            budget: a.budget,
            max_resource: a.max_resource,
            told_at: None,
            tail: Tail::default(),
        };
        let started = Instant::now();
        let mut killed: Option<Kill> = None;
        let mut term_sent: Option<Instant> = None;
        let mut readers_done = 0;
        let status = loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(msg) => {
                    if matches!(msg, Msg::ReaderDone) {
                        readers_done += 1;
                    }
                    run.handle(msg);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(e) => {
                    kill_group(&child, rustix::process::Signal::KILL);
                    let _ = child.wait();
                    endpoint.close();
                    return Err(TrainError::Other(format!(
                        "cannot wait for the program: {e}"
                    )));
                }
            }
            if run.standing.load(Ordering::SeqCst) == CONTINUE && run.reporter.stop_requested() {
                // Cancelled, the study ended, or the worker is going away.
                run.tell(Decision::Stop);
            }
            let now = Instant::now();
            if killed.is_none() {
                if let Some(limit) = settings
                    .timeout
                    .filter(|t| now.duration_since(started) >= *t)
                {
                    killed = Some(Kill::Timeout(limit));
                } else if run
                    .told_at
                    .is_some_and(|t| now.duration_since(t) >= settings.grace)
                {
                    killed = Some(Kill::Ignored);
                    run.log(&format!(
                        "[hpo] the program did not exit within {}s of the {} decision: terminating its process group\n",
                        settings.grace.as_secs(),
                        decision_name(run.standing.load(Ordering::SeqCst))
                    ));
                }
                if killed.is_some() {
                    kill_group(&child, rustix::process::Signal::TERM);
                    term_sent = Some(now);
                }
            } else if term_sent.is_some_and(|t| now.duration_since(t) >= TERM_TO_KILL) {
                kill_group(&child, rustix::process::Signal::KILL);
                term_sent = None;
            }
        };
        // Whatever it left running in its group goes too, so the pipes close.
        kill_group(&child, rustix::process::Signal::KILL);
        let drain_until = Instant::now() + Duration::from_secs(2);
        while readers_done < 2 {
            let left = drain_until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Msg::ReaderDone) => readers_done += 1,
                Ok(msg) => run.handle(msg),
                Err(_) => break,
            }
        }
        endpoint.close();
        while let Ok(msg) = rx.try_recv() {
            run.handle(msg);
        }
        run.finish(job, status, killed, oom_before, &checkpoint_dir)
    }
}

/// Why the worker ended the program.
enum Kill {
    Timeout(Duration),
    /// It outlived the grace period of a stop or pause.
    Ignored,
}

/// One segment's bookkeeping, on the trainer's thread.
struct Segment<'r> {
    reporter: &'r mut dyn Reporter,
    standing: Arc<AtomicU8>,
    last_step: u32,
    pause_step: Option<u32>,
    budget: u32,
    max_resource: u32,
    told_at: Option<Instant>,
    tail: Tail,
}

impl Segment<'_> {
    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Line(line, stderr) => {
                if stderr {
                    self.tail.push_stderr(&line);
                }
                if let Some(json) = line.trim_end().strip_prefix(contract::METRIC_LINE_PREFIX) {
                    match parse_metric_line(json) {
                        Ok((step, values)) => {
                            if let Err(e) = self.report(step, values) {
                                self.log(&format!("[hpo] metric line ignored: {e}\n"));
                            }
                        }
                        Err(e) => self.log(&format!("[hpo] metric line ignored: {e}\n")),
                    }
                }
                self.log(&line);
            }
            Msg::Report {
                step,
                values,
                reply,
            } => {
                let answer = self.report(step, values);
                if let Some(reply) = reply {
                    let _ = reply.send(answer);
                }
            }
            Msg::ReaderDone => {}
        }
    }

    fn log(&mut self, text: &str) {
        self.tail.push(text);
        self.reporter.log(text);
    }

    fn tell(&mut self, d: Decision) {
        if d == Decision::Pause {
            self.pause_step = Some(self.last_step);
        }
        self.standing.store(decision_code(d), Ordering::SeqCst);
        self.told_at = Some(Instant::now());
    }

    /// One report from the program. Once it has been told to stop or pause,
    /// later reports get the same answer and are not sent on.
    fn report(&mut self, step: u32, values: MetricValues) -> Result<Decision, String> {
        match self.standing.load(Ordering::SeqCst) {
            STOP => return Ok(Decision::Stop),
            PAUSE => return Ok(Decision::Pause),
            _ => {}
        }
        if self.reporter.stop_requested() {
            self.tell(Decision::Stop);
            return Ok(Decision::Stop);
        }
        if step <= self.last_step {
            return Err(format!(
                "step {step} is not after the last reported step {}",
                self.last_step
            ));
        }
        if step > self.max_resource {
            return Err(format!(
                "step {step} is past the study's full budget of {} (trainer.epochs)",
                self.max_resource
            ));
        }
        if values.is_empty() {
            return Err("a report needs at least one metric".into());
        }
        let mut d = self.reporter.report(step, values);
        self.last_step = step;
        // The segment's end: the program saves and exits, to be resumed.
        if d == Decision::Continue && step >= self.budget && self.budget < self.max_resource {
            d = Decision::Pause;
        }
        if d != Decision::Continue {
            self.tell(d);
        }
        Ok(d)
    }

    fn finish(
        mut self,
        job: &TrialJob,
        status: ExitStatus,
        killed: Option<Kill>,
        oom_before: Option<u64>,
        checkpoint_dir: &Path,
    ) -> Result<TrainEnd, TrainError> {
        if let Some(Kill::Timeout(limit)) = killed {
            return Err(TrainError::Other(format!(
                "timed out after {}s (trainer.timeout); the last lines of its log:\n{}",
                limit.as_secs(),
                self.tail.text()
            )));
        }
        if killed.is_none() && !status.success() {
            return Err(TrainError::Other(format!(
                "the program {}; the last lines of its log:\n{}",
                describe_exit(status, oom_before, &self.tail),
                self.tail.text()
            )));
        }
        let a = &job.assignment;
        let pack = || pack_dir(checkpoint_dir);
        match self.standing.load(Ordering::SeqCst) {
            PAUSE => {
                let step = self.pause_step.unwrap_or(self.last_step);
                if killed.is_some() && dir_is_empty(checkpoint_dir) {
                    self.log(&format!(
                        "[hpo] no checkpoint was saved before the pause at step {step}: the trial ends here\n"
                    ));
                    return Ok(TrainEnd::Stopped);
                }
                Ok(TrainEnd::Paused {
                    step,
                    checkpoint: pack()?,
                })
            }
            STOP => Ok(TrainEnd::Stopped),
            _ if self.last_step == job.start_step() => Err(TrainError::Other(format!(
                "the program exited without reporting a metric (report with the hpo SDK, or print lines such as `hpo-metric {{\"step\": 1, \"{}\": 0.5}}`); the last lines of its log:\n{}",
                a.metric,
                self.tail.text()
            ))),
            _ if self.last_step >= a.max_resource || a.resource == Resource::DataFraction => {
                if a.save_final {
                    Ok(TrainEnd::FinishedSaved {
                        checkpoint: pack()?,
                    })
                } else {
                    Ok(TrainEnd::Finished)
                }
            }
            // It ended early by its own choice: the trial keeps its last value.
            _ => Ok(TrainEnd::Stopped),
        }
    }
}

/// The last lines of the log, for a failure's reason. stderr's last lines
/// are kept apart too: the two pipes are read by two threads, so a
/// traceback can arrive before stdout's last lines and be pushed out.
#[derive(Default)]
struct Tail {
    lines: VecDeque<String>,
    stderr: VecDeque<String>,
}

fn push_bounded(lines: &mut VecDeque<String>, text: &str, max: usize) {
    for line in text.split_inclusive('\n') {
        if lines.len() == max {
            lines.pop_front();
        }
        lines.push_back(line.to_string());
    }
}

fn last_bytes(lines: &VecDeque<String>, max: usize) -> String {
    let mut out = String::new();
    for line in lines.iter().rev() {
        if out.len() + line.len() > max {
            break;
        }
        out.insert_str(0, line);
    }
    out
}

impl Tail {
    fn push(&mut self, text: &str) {
        push_bounded(&mut self.lines, text, TAIL_LINES);
    }

    fn push_stderr(&mut self, text: &str) {
        push_bounded(&mut self.stderr, text, TAIL_LINES / 2);
    }

    fn text(&self) -> String {
        let mut out = last_bytes(&self.lines, TAIL_BYTES);
        let missing: VecDeque<String> = self
            .stderr
            .iter()
            .filter(|l| !self.lines.contains(l))
            .cloned()
            .collect();
        if !missing.is_empty() {
            out.push_str("[hpo] last lines of stderr:\n");
            out.push_str(&last_bytes(&missing, TAIL_BYTES / 2));
        }
        if out.is_empty() {
            "(it printed nothing)".into()
        } else {
            out
        }
    }

    fn mentions_memory(&self) -> bool {
        const SIGNS: &[&str] = &[
            "out of memory",
            "MemoryError",
            "std::bad_alloc",
            "Cannot allocate memory",
            "OutOfMemoryError",
            "memory allocation of",
        ];
        self.lines
            .iter()
            .any(|l| SIGNS.iter().any(|s| l.contains(s)))
    }
}

fn describe_exit(status: ExitStatus, oom_before: Option<u64>, tail: &Tail) -> String {
    let oom_killed = match (oom_before, oom_kills()) {
        (Some(before), Some(after)) => after > before,
        _ => false,
    };
    if let Some(code) = status.code() {
        if tail.mentions_memory() {
            return format!("ran out of memory (it exited with status {code})");
        }
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(9) if oom_killed => {
            "was killed by the kernel's out-of-memory killer (SIGKILL; the worker's memory cgroup counted an OOM kill)".into()
        }
        Some(9) => "was killed by SIGKILL, as the kernel's out-of-memory killer ends processes (check the machine's memory)".into(),
        Some(11) => "crashed with a segmentation fault (SIGSEGV)".into(),
        Some(6) => "aborted (SIGABRT)".into(),
        Some(n) => format!("was killed by signal {n}"),
        None => format!("ended with {status}"),
    }
}

/// OOM kills counted by this process's memory cgroup (cgroup v2), if the
/// machine exposes them.
fn oom_kills() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let events = std::fs::read_to_string(
        Path::new("/sys/fs/cgroup")
            .join(path.trim_start_matches('/'))
            .join("memory.events"),
    )
    .ok()?;
    events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

fn kill_group(child: &Child, signal: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        // ESRCH (nothing left) is the common, harmless case.
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

/// The program and its arguments, placeholders filled, parameters appended
/// as flags when the study asks for them.
fn command_line(job: &TrialJob, checkpoint_dir: &Path) -> Result<Vec<String>, TrainError> {
    let a = &job.assignment;
    let params_json = contract::params_json(&a.params);
    let value = |name: &str| -> Option<String> {
        Some(match name {
            "study" => a.trial.study.to_string(),
            "study_name" => a.study_name.clone(),
            "trial" => a.trial.number.to_string(),
            "attempt" => a.attempt.to_string(),
            "seed" => a.seed.to_string(),
            "budget" => a.budget.to_string(),
            "max_resource" => a.max_resource.to_string(),
            "start_step" => job.start_step().to_string(),
            "checkpoint_dir" => checkpoint_dir.display().to_string(),
            "params_json" => params_json.clone(),
            other => a.params.get(other.strip_prefix("params.")?)?.to_string(),
        })
    };
    let mut argv = Vec::with_capacity(a.trainer.command.len());
    for (i, arg) in a.trainer.command.iter().enumerate() {
        argv.push(
            contract::fill(arg, value)
                .map_err(|e| TrainError::Invalid(format!("trainer.command[{i}]: {e}")))?,
        );
    }
    if a.trainer.param_flags {
        argv.extend(contract::param_flags(&a.params));
    }
    Ok(argv)
}

fn trial_env(
    job: &TrialJob,
    checkpoint_dir: &Path,
    endpoint: SocketAddr,
    token: &str,
) -> Vec<(&'static str, String)> {
    let a = &job.assignment;
    vec![
        (env::ENDPOINT, endpoint.to_string()),
        (env::TOKEN, token.to_string()),
        (env::PROTOCOL, contract::TRIAL_PROTOCOL_VERSION.to_string()),
        (env::STUDY, a.trial.study.to_string()),
        (env::STUDY_NAME, a.study_name.clone()),
        (env::TRIAL, a.trial.number.to_string()),
        (env::ATTEMPT, a.attempt.to_string()),
        (env::SEED, a.seed.to_string()),
        (env::PARAMS, contract::params_json(&a.params)),
        (env::BUDGET, a.budget.to_string()),
        (env::MAX_RESOURCE, a.max_resource.to_string()),
        (env::RESOURCE, a.resource.as_str().to_string()),
        (env::START_STEP, job.start_step().to_string()),
        (env::METRIC, a.metric.clone()),
        (env::CHECKPOINT_DIR, checkpoint_dir.display().to_string()),
        (
            "CUDA_VISIBLE_DEVICES",
            match job.device {
                Device::Cuda(i) => i.to_string(),
                // A CPU slot's program must not grab a GPU another slot owns.
                Device::Cpu(_) => String::new(),
            },
        ),
    ]
}

/// Passes a pipe on line by line (lossy UTF-8, long lines cut).
fn spawn_reader(pipe: impl Read + Send + 'static, tx: mpsc::Sender<Msg>, stdout: bool) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match (&mut reader)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut buf)
            {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let mut line = String::from_utf8_lossy(&buf).into_owned();
                    if !line.ends_with('\n') {
                        line.push('\n');
                    }
                    if tx.send(Msg::Line(line, !stdout)).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = tx.send(Msg::ReaderDone);
    });
}

/// `hpo-metric {"step": 3, "val_loss": 0.41}`: the step and the metrics.
fn parse_metric_line(json: &str) -> Result<(u32, MetricValues), String> {
    let v: serde_json::Value =
        serde_json::from_str(json.trim()).map_err(|e| format!("not a JSON object ({e})"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let step = obj
        .get("step")
        .and_then(|s| s.as_u64())
        .filter(|s| *s >= 1 && *s <= u32::MAX as u64)
        .ok_or("needs \"step\": an integer >= 1")? as u32;
    let mut values = MetricValues::new();
    for (k, v) in obj {
        if k == "step" {
            continue;
        }
        let x = v
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("metric \"{k}\" is not a finite number"))?;
        values.insert(k.clone(), x);
    }
    Ok((step, values))
}

/// The loopback endpoint the SDKs talk to: JSON lines, one answer per
/// request. Each connection has a thread; reports are handed to the
/// segment's loop, which owns the `Reporter`.
struct Endpoint {
    addr: SocketAddr,
    closed: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Endpoint {
    fn start(
        token: String,
        tx: mpsc::Sender<Msg>,
        standing: Arc<AtomicU8>,
    ) -> std::io::Result<Endpoint> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        let token = Arc::new(token);
        let accept = std::thread::Builder::new()
            .name("trial-endpoint".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if flag.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (tx, standing, token, flag) =
                        (tx.clone(), standing.clone(), token.clone(), flag.clone());
                    std::thread::spawn(move || serve(stream, &token, tx, standing, flag));
                }
            })?;
        Ok(Endpoint {
            addr,
            closed,
            accept: Some(accept),
        })
    }

    fn close(mut self) {
        self.closed.store(true, Ordering::SeqCst);
        // Wakes the blocking accept.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    stream: TcpStream,
    token: &str,
    tx: mpsc::Sender<Msg>,
    standing: Arc<AtomicU8>,
    closed: Arc<AtomicBool>,
) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let reader = BufReader::new(stream);
    let mut greeted = false;
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let answer = match answer(&line, token, &mut greeted, &tx, &standing, &closed) {
            Ok(v) => v,
            Err(e) => serde_json::json!({"ok": false, "error": e}),
        };
        let mut text = answer.to_string();
        text.push('\n');
        if out.write_all(text.as_bytes()).is_err() {
            break;
        }
    }
}

fn answer(
    line: &str,
    token: &str,
    greeted: &mut bool,
    tx: &mpsc::Sender<Msg>,
    standing: &AtomicU8,
    closed: &AtomicBool,
) -> Result<serde_json::Value, String> {
    let req: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not a JSON request ({e})"))?;
    let op = req
        .get("op")
        .and_then(|o| o.as_str())
        .ok_or("missing \"op\"")?;
    if op == "hello" {
        if req.get("token").and_then(|t| t.as_str()) != Some(token) {
            return Err("wrong token: use the HPO_TOKEN this trial was started with".into());
        }
        let theirs = req.get("protocol").and_then(|p| p.as_u64()).unwrap_or(0);
        if theirs != contract::TRIAL_PROTOCOL_VERSION as u64 {
            return Err(format!(
                "incompatible hpo SDK: it speaks trial protocol {theirs}, this worker speaks {}",
                contract::TRIAL_PROTOCOL_VERSION
            ));
        }
        *greeted = true;
        return Ok(serde_json::json!({"ok": true, "protocol": contract::TRIAL_PROTOCOL_VERSION}));
    }
    if !*greeted {
        return Err(
            "say hello first ({\"op\": \"hello\", \"token\": ..., \"protocol\": 1})".into(),
        );
    }
    match op {
        "should_stop" => {
            let d = standing.load(Ordering::SeqCst);
            Ok(serde_json::json!({"ok": true, "stop": d != CONTINUE, "decision": decision_name(d)}))
        }
        "report" => {
            let step = req
                .get("step")
                .and_then(|s| s.as_u64())
                .filter(|s| *s >= 1 && *s <= u32::MAX as u64)
                .ok_or("\"step\" must be an integer >= 1")? as u32;
            let metrics = req
                .get("metrics")
                .and_then(|m| m.as_object())
                .ok_or("\"metrics\" must be an object of numbers")?;
            let mut values = MetricValues::new();
            for (k, v) in metrics {
                let x = v
                    .as_f64()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| format!("metric \"{k}\" is not a finite number"))?;
                values.insert(k.clone(), x);
            }
            if closed.load(Ordering::SeqCst) {
                return Err("the segment is over".into());
            }
            let (reply, rx) = mpsc::sync_channel(1);
            tx.send(Msg::Report {
                step,
                values,
                reply: Some(reply),
            })
            .map_err(|_| "the segment is over".to_string())?;
            let d = rx.recv().map_err(|_| "the segment is over".to_string())??;
            Ok(serde_json::json!({"ok": true, "decision": decision_name(decision_code(d))}))
        }
        other => Err(format!(
            "unknown op \"{other}\" (expected hello, report or should_stop)"
        )),
    }
}

/// The checkpoint folder as one blob: `HPODIR1\n`, then per regular file
/// its relative path (u32 length, UTF-8, `/`-separated) and contents (u64
/// length), in path order so the same folder packs the same.
pub fn pack_dir(dir: &Path) -> Result<Vec<u8>, TrainError> {
    let mut files = Vec::new();
    collect(dir, "", &mut files)?;
    files.sort();
    let mut out = b"HPODIR1\n".to_vec();
    for rel in files {
        let bytes = std::fs::read(dir.join(&rel))
            .map_err(|e| TrainError::Other(format!("cannot read checkpoint file {rel}: {e}")))?;
        out.extend_from_slice(&(rel.len() as u32).to_le_bytes());
        out.extend_from_slice(rel.as_bytes());
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    Ok(out)
}

fn collect(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<(), TrainError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        TrainError::Other(format!(
            "cannot read checkpoint folder {}: {e}",
            dir.display()
        ))
    })?;
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            return Err(TrainError::Other(format!(
                "checkpoint file names must be UTF-8: {:?}",
                entry.file_name()
            )));
        };
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            collect(&entry.path(), &rel, out)?;
        } else if kind.is_file() {
            out.push(rel);
        }
    }
    Ok(())
}

/// Restores a folder packed by `pack_dir` into `dir`.
pub fn unpack_dir(bytes: &[u8], dir: &Path) -> Result<(), TrainError> {
    let bad =
        |why: &str| TrainError::Invalid(format!("the checkpoint is not a packed folder: {why}"));
    let mut rest = bytes
        .strip_prefix(b"HPODIR1\n".as_slice())
        .ok_or_else(|| bad("no header"))?;
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if rest.len() < n {
            return None;
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Some(head)
    }
    while !rest.is_empty() {
        let len = take(&mut rest, 4).ok_or_else(|| bad("truncated"))?;
        let len = u32::from_le_bytes(len.try_into().map_err(|_| bad("truncated"))?) as usize;
        let name = take(&mut rest, len).ok_or_else(|| bad("truncated name"))?;
        let name = std::str::from_utf8(name).map_err(|_| bad("a name is not UTF-8"))?;
        if name.is_empty()
            || name.starts_with('/')
            || name
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(bad(&format!("unsafe path {name:?}")));
        }
        let size = take(&mut rest, 8).ok_or_else(|| bad("truncated"))?;
        let size = u64::from_le_bytes(size.try_into().map_err(|_| bad("truncated"))?) as usize;
        let data = take(&mut rest, size).ok_or_else(|| bad("truncated contents"))?;
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| TrainError::Other(format!("cannot restore {name}: {e}")))?;
        }
        std::fs::write(&path, data)
            .map_err(|e| TrainError::Other(format!("cannot restore {name}: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn folders_pack_and_unpack() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("a/b")).unwrap();
        std::fs::write(src.path().join("a/b/model.pt"), [0u8, 1, 2, 255]).unwrap();
        std::fs::write(src.path().join("state.json"), "{\"epoch\": 3}").unwrap();
        let blob = pack_dir(src.path()).unwrap();
        assert_eq!(
            blob,
            pack_dir(src.path()).unwrap(),
            "packing is deterministic"
        );
        let dst = tempfile::tempdir().unwrap();
        unpack_dir(&blob, dst.path()).unwrap();
        assert_eq!(
            std::fs::read(dst.path().join("a/b/model.pt")).unwrap(),
            [0u8, 1, 2, 255]
        );
        assert_eq!(
            std::fs::read_to_string(dst.path().join("state.json")).unwrap(),
            "{\"epoch\": 3}"
        );
    }

    #[test]
    fn unsafe_or_broken_blobs_are_refused() {
        let dst = tempfile::tempdir().unwrap();
        let mut evil = b"HPODIR1\n".to_vec();
        evil.extend_from_slice(&5u32.to_le_bytes());
        evil.extend_from_slice(b"../x1");
        evil.extend_from_slice(&0u64.to_le_bytes());
        assert!(
            unpack_dir(&evil, dst.path())
                .unwrap_err()
                .to_string()
                .contains("unsafe path")
        );
        assert!(unpack_dir(b"garbage", dst.path()).is_err());
        assert!(unpack_dir(&evil[..10], dst.path()).is_err());
    }

    #[test]
    fn metric_lines_parse() {
        let (step, v) = parse_metric_line(r#"{"step": 3, "val_loss": 0.41, "acc": 1}"#).unwrap();
        assert_eq!(step, 3);
        assert_eq!(v["val_loss"], 0.41);
        assert_eq!(v["acc"], 1.0);
        assert!(
            parse_metric_line(r#"{"val_loss": 0.41}"#)
                .unwrap_err()
                .contains("step")
        );
        assert!(
            parse_metric_line(r#"{"step": 1, "x": "a"}"#)
                .unwrap_err()
                .contains("\"x\"")
        );
        assert!(parse_metric_line("nope").is_err());
    }
}
