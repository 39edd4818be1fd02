//! Inside a trial: the program a worker started for trainer kind
//! `command` reads its trial from the environment and reports to the
//! worker's loopback endpoint, which answers continue, stop or pause.
//!
//! Blocking and dependency-light on purpose: a training loop calls
//! `report` between epochs and has no async runtime of its own.
//!
//! ```no_run
//! use hpo_sdk::{Decision, Trial};
//! let trial = Trial::from_env()?;
//! let lr = trial.param_f64("lr")?;
//! let mut state = trial.load("state.json")?.unwrap_or_default();
//! for epoch in trial.start_step() + 1..=trial.max_resource() {
//!     let loss = 1.0 / (epoch as f64 * lr);
//!     state = format!("{epoch}").into_bytes();
//!     match trial.report(epoch, [("loss", loss)])? {
//!         Decision::Continue => {}
//!         Decision::Pause => { trial.save("state.json", &state)?; break; }
//!         Decision::Stop => break,
//!     }
//! }
//! # Ok::<(), hpo_sdk::TrialError>(())
//! ```

use hpo_proto::command::{TRIAL_PROTOCOL_VERSION, env};
use hpo_proto::{Decision, ParamValue, Params};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum TrialError {
    /// The program was not started by an hpo worker.
    #[error(
        "not inside an hpo trial: {0} is not set (run this program as a study's trainer, kind = \"command\")"
    )]
    NotInTrial(&'static str),
    #[error("incompatible hpo worker: {0}")]
    Incompatible(String),
    #[error("{name} is {value:?}, expected {expected}")]
    BadEnv {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("parameter `{0}`: {1}")]
    Param(String, String),
    /// The worker refused a request (a step out of order, say).
    #[error("the worker refused: {0}")]
    Refused(String),
    #[error("trial endpoint: {0}")]
    Io(#[from] std::io::Error),
}

type Result<T> = std::result::Result<T, TrialError>;

/// The trial this program runs, from the worker's `HPO_*` variables.
#[derive(Debug)]
pub struct Trial {
    endpoint: String,
    token: String,
    study: u64,
    study_name: String,
    number: u32,
    attempt: u32,
    seed: u64,
    params: Params,
    budget: u32,
    max_resource: u32,
    resource: String,
    start_step: u32,
    metric: String,
    checkpoint_dir: PathBuf,
    conn: Mutex<Option<Conn>>,
}

#[derive(Debug)]
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

fn var(name: &'static str) -> Result<String> {
    std::env::var(name).map_err(|_| TrialError::NotInTrial(name))
}

fn number<T: std::str::FromStr>(name: &'static str) -> Result<T> {
    let v = var(name)?;
    v.trim().parse().map_err(|_| TrialError::BadEnv {
        name,
        value: v,
        expected: "a whole number",
    })
}

impl Trial {
    /// Reads the trial from the environment the worker set. Outside a
    /// trial (no `HPO_ENDPOINT`) this is `TrialError::NotInTrial`; a worker
    /// of another trial protocol is `TrialError::Incompatible`.
    pub fn from_env() -> Result<Trial> {
        let endpoint = var(env::ENDPOINT)?;
        let protocol: u32 = number(env::PROTOCOL)?;
        if protocol != TRIAL_PROTOCOL_VERSION {
            return Err(TrialError::Incompatible(format!(
                "the worker speaks trial protocol {protocol}, this hpo-sdk speaks {TRIAL_PROTOCOL_VERSION}: use the same hpo release for both"
            )));
        }
        let params_text = var(env::PARAMS)?;
        let params = parse_params(&params_text).map_err(|why| TrialError::BadEnv {
            name: env::PARAMS,
            value: format!("{params_text} ({why})"),
            expected: "a JSON object of numbers and strings",
        })?;
        Ok(Trial {
            endpoint,
            token: var(env::TOKEN)?,
            study: number(env::STUDY)?,
            study_name: var(env::STUDY_NAME).unwrap_or_default(),
            number: number(env::TRIAL)?,
            attempt: number(env::ATTEMPT)?,
            seed: number(env::SEED)?,
            params,
            budget: number(env::BUDGET)?,
            max_resource: number(env::MAX_RESOURCE)?,
            resource: var(env::RESOURCE).unwrap_or_else(|_| "epochs".into()),
            start_step: number(env::START_STEP)?,
            metric: var(env::METRIC).unwrap_or_default(),
            checkpoint_dir: PathBuf::from(var(env::CHECKPOINT_DIR)?),
            conn: Mutex::new(None),
        })
    }

    pub fn study(&self) -> u64 {
        self.study
    }
    pub fn study_name(&self) -> &str {
        &self.study_name
    }
    /// The trial's number in its study.
    pub fn number(&self) -> u32 {
        self.number
    }
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    /// Seed your RNGs with it: the same study seed and trial number give
    /// the same value.
    pub fn seed(&self) -> u64 {
        self.seed
    }
    pub fn params(&self) -> &Params {
        &self.params
    }
    /// Train up to this step in this run; the worker answers `Pause` there
    /// when it is below `max_resource`.
    pub fn budget(&self) -> u32 {
        self.budget
    }
    /// The full budget (the study's `trainer.epochs`).
    pub fn max_resource(&self) -> u32 {
        self.max_resource
    }
    /// "epochs" or "data_fraction".
    pub fn resource(&self) -> &str {
        &self.resource
    }
    /// A resumed run starts after this step (0 for a fresh one).
    pub fn start_step(&self) -> u32 {
        self.start_step
    }
    pub fn is_resumed(&self) -> bool {
        self.start_step > 0
    }
    /// The study's objective metric: report it.
    pub fn metric(&self) -> &str {
        &self.metric
    }
    /// Save checkpoints here; a resumed run finds the previous run's.
    pub fn checkpoint_dir(&self) -> &Path {
        &self.checkpoint_dir
    }

    fn param(&self, name: &str) -> Result<&ParamValue> {
        self.params.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.params.keys().map(String::as_str).collect();
            TrialError::Param(
                name.into(),
                format!("not in this trial (it has: {})", known.join(", ")),
            )
        })
    }

    /// A float parameter (an integer one converts).
    pub fn param_f64(&self, name: &str) -> Result<f64> {
        self.param(name)?
            .as_f64()
            .ok_or_else(|| TrialError::Param(name.into(), "is categorical, not a number".into()))
    }

    pub fn param_i64(&self, name: &str) -> Result<i64> {
        match self.param(name)? {
            ParamValue::Int(v) => Ok(*v),
            ParamValue::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(*f as i64),
            other => Err(TrialError::Param(
                name.into(),
                format!("is {other}, not an integer"),
            )),
        }
    }

    pub fn param_str(&self, name: &str) -> Result<&str> {
        match self.param(name)? {
            ParamValue::Categorical(s) => Ok(s),
            other => Err(TrialError::Param(
                name.into(),
                format!("is the number {other}, not a string"),
            )),
        }
    }

    /// Reports one step's metrics (steps count from 1 and increase) and
    /// returns what to do: `Continue`; `Pause`: save a checkpoint in
    /// `checkpoint_dir` and exit with status 0, to be resumed later; `Stop`:
    /// exit with status 0, the trial is over.
    pub fn report<I, K>(&self, step: u32, metrics: I) -> Result<Decision>
    where
        I: IntoIterator<Item = (K, f64)>,
        K: Into<String>,
    {
        let mut map = serde_json::Map::new();
        for (k, v) in metrics {
            let k = k.into();
            let n = serde_json::Number::from_f64(v).ok_or_else(|| {
                TrialError::Refused(format!("metric \"{k}\" is {v}, not a finite number"))
            })?;
            map.insert(k, serde_json::Value::Number(n));
        }
        let answer =
            self.call(serde_json::json!({"op": "report", "step": step, "metrics": map}))?;
        decision(&answer)
    }

    /// True once the worker has said stop or pause (the study was
    /// cancelled, the scheduler decided, the worker is shutting down).
    pub fn should_stop(&self) -> Result<bool> {
        let answer = self.call(serde_json::json!({"op": "should_stop"}))?;
        Ok(answer
            .get("stop")
            .and_then(|s| s.as_bool())
            .unwrap_or(false))
    }

    /// Writes `name` in the checkpoint folder atomically (temporary file,
    /// then rename), creating subfolders.
    pub fn save(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.checkpoint_dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = path.with_extension("hpo-tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// Reads `name` from the checkpoint folder; None when it is not there.
    pub fn load(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match std::fs::read(self.checkpoint_dir.join(name)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn call(&self, request: serde_json::Value) -> Result<serde_json::Value> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            let stream = TcpStream::connect(&self.endpoint)?;
            let mut conn = Conn {
                reader: BufReader::new(stream.try_clone()?),
                writer: stream,
            };
            let hello = exchange(
                &mut conn,
                &serde_json::json!({
                    "op": "hello",
                    "token": self.token,
                    "protocol": TRIAL_PROTOCOL_VERSION,
                    "sdk": concat!("rust ", env!("CARGO_PKG_VERSION")),
                }),
            )?;
            if let Err(TrialError::Refused(why)) = ok(&hello) {
                return Err(if why.contains("incompatible") {
                    TrialError::Incompatible(why)
                } else {
                    TrialError::Refused(why)
                });
            }
            *guard = Some(conn);
        }
        let conn = guard
            .as_mut()
            .ok_or(TrialError::NotInTrial(env::ENDPOINT))?;
        let answer = exchange(conn, &request);
        if answer.is_err() {
            // A broken connection is opened again on the next call.
            *guard = None;
        }
        let answer = answer?;
        ok(&answer)?;
        Ok(answer)
    }
}

fn exchange(conn: &mut Conn, request: &serde_json::Value) -> Result<serde_json::Value> {
    let mut line = request.to_string();
    line.push('\n');
    conn.writer.write_all(line.as_bytes())?;
    let mut reply = String::new();
    if conn.reader.read_line(&mut reply)? == 0 {
        return Err(TrialError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the worker closed the trial endpoint",
        )));
    }
    serde_json::from_str(&reply).map_err(|e| TrialError::Refused(format!("bad answer ({e})")))
}

fn ok(answer: &serde_json::Value) -> Result<()> {
    if answer.get("ok").and_then(|o| o.as_bool()) == Some(true) {
        Ok(())
    } else {
        Err(TrialError::Refused(
            answer
                .get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("no reason given")
                .to_string(),
        ))
    }
}

fn decision(answer: &serde_json::Value) -> Result<Decision> {
    match answer.get("decision").and_then(|d| d.as_str()) {
        Some("continue") => Ok(Decision::Continue),
        Some("stop") => Ok(Decision::Stop),
        Some("pause") => Ok(Decision::Pause),
        other => Err(TrialError::Refused(format!("unknown decision {other:?}"))),
    }
}

/// `HPO_PARAMS`: integers stay integers, other numbers are floats,
/// strings are categorical values.
fn parse_params(text: &str) -> std::result::Result<Params, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let obj = v.as_object().ok_or("not an object")?;
    let mut out = Params::new();
    for (k, v) in obj {
        let p = match v {
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => ParamValue::Int(i),
                None => ParamValue::Float(n.as_f64().ok_or("a number out of range")?),
            },
            serde_json::Value::String(s) => ParamValue::Categorical(s.clone()),
            _ => return Err(format!("\"{k}\" is neither a number nor a string")),
        };
        out.insert(k.clone(), p);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn params_parse_with_their_types() {
        let p = parse_params(r#"{"lr": 0.01, "layers": 3, "opt": "adam"}"#).unwrap();
        assert_eq!(p["lr"], ParamValue::Float(0.01));
        assert_eq!(p["layers"], ParamValue::Int(3));
        assert_eq!(p["opt"], ParamValue::Categorical("adam".into()));
        assert!(parse_params("[1]").is_err());
        assert!(parse_params(r#"{"x": null}"#).is_err());
    }
}
