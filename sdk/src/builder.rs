//! `StudyBuilder`: a study file written from Rust. It produces the same TOML
//! a user would write (`docs/study-file.md`'s keys) and checks it with the
//! coordinator's own parser (`StudySpec::parse`) before anything is sent, so
//! a bad value is a `SpecError` naming the key, as for a file.

use crate::{Client, Result, SdkError};
use hpo_proto::study::{ParamSpec, Scope};
use hpo_proto::{Direction, ParamValue, Params, SpecError, StudyId, StudySpec};
use std::path::Path;
use std::time::Duration;
use toml::{Table, Value};

/// A study, built key by key. Every setter takes and returns the builder;
/// nothing is checked until `to_toml` or `spec`, which run the study-file
/// parser over the result.
///
/// ```no_run
/// # use hpo_sdk::StudyBuilder;
/// # use hpo_proto::Direction;
/// let toml = StudyBuilder::new("quadratic")
///     .seed(7)
///     .objective("loss", Direction::Minimize)
///     .algorithm("tpe")
///     .max_trials(20)
///     .max_parallel(4)
///     .trainer_external(1)
///     .float("x", -5.0, 5.0, false)
///     .float("lr", 1e-4, 1e-1, true)
///     .int("layers", 1, 4)
///     .categorical("opt", ["adam", "sgd"])
///     .to_toml()?;
/// # Ok::<(), hpo_proto::SpecError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct StudyBuilder {
    name: String,
    seed: Option<Value>,
    objective: Option<Table>,
    search: Table,
    trainer: Option<Table>,
    params: Table,
    schedule: Option<Table>,
}

/// An integer key: TOML integers are i64, so a larger u64 is kept as text
/// and refused by the parser with the key's name.
fn int_value(v: u64) -> Value {
    i64::try_from(v).map_or_else(|_| Value::String(v.to_string()), Value::Integer)
}

fn param_value(v: &ParamValue) -> Value {
    match v {
        ParamValue::Float(f) => Value::Float(*f),
        ParamValue::Int(i) => Value::Integer(*i),
        ParamValue::Categorical(s) => Value::String(s.clone()),
    }
}

fn param_table(spec: &ParamSpec) -> Table {
    let mut t = Table::new();
    match spec {
        ParamSpec::Float {
            low,
            high,
            log,
            step,
        } => {
            t.insert("type".into(), "float".into());
            t.insert("low".into(), Value::Float(*low));
            t.insert("high".into(), Value::Float(*high));
            if *log {
                t.insert("log".into(), Value::Boolean(true));
            }
            if let Some(s) = step {
                t.insert("step".into(), Value::Float(*s));
            }
        }
        ParamSpec::Int {
            low,
            high,
            log,
            step,
        } => {
            t.insert("type".into(), "int".into());
            t.insert("low".into(), Value::Integer(*low));
            t.insert("high".into(), Value::Integer(*high));
            if *log {
                t.insert("log".into(), Value::Boolean(true));
            }
            if *step != 1 {
                t.insert("step".into(), Value::Integer(*step));
            }
        }
        ParamSpec::Categorical { choices } => {
            t.insert("type".into(), "categorical".into());
            t.insert(
                "choices".into(),
                Value::Array(choices.iter().map(param_value).collect()),
            );
        }
    }
    t
}

impl StudyBuilder {
    pub fn new(name: impl Into<String>) -> StudyBuilder {
        StudyBuilder {
            name: name.into(),
            seed: None,
            objective: None,
            search: Table::new(),
            trainer: None,
            params: Table::new(),
            schedule: None,
        }
    }

    /// The name the study's errors start with: "study `name`".
    pub fn source_name(&self) -> String {
        format!("study `{}`", self.name)
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(int_value(seed));
        self
    }

    /// `[objective]`: the metric to optimise and in which direction.
    pub fn objective(mut self, metric: impl Into<String>, direction: Direction) -> Self {
        let t = self.objective.get_or_insert_with(Table::new);
        t.insert("metric".into(), Value::String(metric.into()));
        t.insert("direction".into(), direction.as_str().into());
        self
    }

    /// `objective.scope`: a trial's value is its last report (default) or
    /// its best.
    pub fn scope(mut self, scope: Scope) -> Self {
        let s = match scope {
            Scope::Last => "last",
            Scope::Best => "best",
        };
        self.objective
            .get_or_insert_with(Table::new)
            .insert("scope".into(), s.into());
        self
    }

    fn search_key(mut self, key: &str, value: Value) -> Self {
        self.search.insert(key.into(), value);
        self
    }

    /// `search.algorithm`: grid, random, sobol, tpe, gp or bohb.
    pub fn algorithm(self, algorithm: impl Into<String>) -> Self {
        self.search_key("algorithm", Value::String(algorithm.into()))
    }

    pub fn max_trials(self, n: u32) -> Self {
        self.search_key("max_trials", Value::Integer(n.into()))
    }

    pub fn max_parallel(self, n: u32) -> Self {
        self.search_key("max_parallel", Value::Integer(n.into()))
    }

    /// `search.max_duration`, in whole milliseconds.
    pub fn max_duration(self, d: Duration) -> Self {
        self.search_key("max_duration", format!("{}ms", d.as_millis()).into())
    }

    pub fn target(self, value: f64) -> Self {
        self.search_key("target", Value::Float(value))
    }

    pub fn max_retries(self, n: u32) -> Self {
        self.search_key("max_retries", Value::Integer(n.into()))
    }

    pub fn priority(self, p: i32) -> Self {
        self.search_key("priority", Value::Integer(p.into()))
    }

    pub fn max_total_resource(self, units: u64) -> Self {
        self.search_key("max_total_resource", int_value(units))
    }

    /// `search.enqueue`: a configuration to try before the sampler proposes
    /// (in call order).
    pub fn enqueue(mut self, config: &Params) -> Self {
        let t: Table = config
            .iter()
            .map(|(k, v)| (k.clone(), param_value(v)))
            .collect();
        push(&mut self.search, "enqueue", Value::Table(t));
        self
    }

    /// `search.warm_start`: an earlier study (name or id) a model-based
    /// sampler learns from.
    pub fn warm_start(mut self, study: impl Into<String>) -> Self {
        push(&mut self.search, "warm_start", Value::String(study.into()));
        self
    }

    /// `[trainer]`: `kind` and the rest of its table (epochs, dataset,
    /// settings), replacing any trainer set before.
    pub fn trainer(mut self, kind: impl Into<String>, table: Table) -> Self {
        let mut t = table;
        t.insert("kind".into(), Value::String(kind.into()));
        self.trainer = Some(t);
        self
    }

    /// A study run by ask-and-tell clients (`AskTell`) and never by
    /// workers; `epochs` is the full budget of a trial, in its report steps.
    pub fn trainer_external(self, epochs: u32) -> Self {
        let mut t = Table::new();
        t.insert("epochs".into(), Value::Integer(epochs.into()));
        self.trainer("external", t)
    }

    /// The `command` trainer: the program and its arguments (no shell), run
    /// by workers once per trial segment.
    pub fn trainer_command<S: Into<String>>(
        self,
        argv: impl IntoIterator<Item = S>,
        epochs: u32,
    ) -> Self {
        let mut t = Table::new();
        t.insert(
            "command".into(),
            Value::Array(argv.into_iter().map(|a| Value::String(a.into())).collect()),
        );
        t.insert("epochs".into(), Value::Integer(epochs.into()));
        self.trainer("command", t)
    }

    /// One more key of `[trainer]` (a setting, `dataset`, `env`, ...).
    pub fn trainer_setting(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.trainer
            .get_or_insert_with(Table::new)
            .insert(key.into(), value.into());
        self
    }

    /// A float parameter in [low, high], on a log scale when `log`.
    pub fn float(self, name: impl Into<String>, low: f64, high: f64, log: bool) -> Self {
        self.param(
            name,
            &ParamSpec::Float {
                low,
                high,
                log,
                step: None,
            },
        )
    }

    /// An integer parameter in [low, high].
    pub fn int(self, name: impl Into<String>, low: i64, high: i64) -> Self {
        self.param(
            name,
            &ParamSpec::Int {
                low,
                high,
                log: false,
                step: 1,
            },
        )
    }

    /// A categorical parameter of string choices (`param` takes numeric
    /// ones).
    pub fn categorical<S: Into<String>>(
        self,
        name: impl Into<String>,
        choices: impl IntoIterator<Item = S>,
    ) -> Self {
        let choices = choices
            .into_iter()
            .map(|c| ParamValue::Categorical(c.into()))
            .collect();
        self.param(name, &ParamSpec::Categorical { choices })
    }

    /// Any parameter (a float grid step, a log-scaled integer, numeric
    /// choices), replacing one of the same name.
    pub fn param(mut self, name: impl Into<String>, spec: &ParamSpec) -> Self {
        self.params
            .insert(name.into(), Value::Table(param_table(spec)));
        self
    }

    /// `[schedule]`: the early-stopping scheduler (median,
    /// successive_halving, asha, hyperband, async_hyperband), its first
    /// budget and η.
    pub fn schedule(
        mut self,
        algorithm: impl Into<String>,
        min_resource: u32,
        reduction_factor: u32,
    ) -> Self {
        let t = self.schedule.get_or_insert_with(Table::new);
        t.insert("algorithm".into(), Value::String(algorithm.into()));
        t.insert("min_resource".into(), Value::Integer(min_resource.into()));
        t.insert(
            "reduction_factor".into(),
            Value::Integer(reduction_factor.into()),
        );
        self
    }

    /// One more key of `[schedule]` (grace_period, min_trials, brackets,
    /// keep_best, resource, max_resource).
    pub fn schedule_setting(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.schedule
            .get_or_insert_with(Table::new)
            .insert(key.into(), value.into());
        self
    }

    /// The study file as a TOML table, unchecked.
    fn table(&self) -> Table {
        let mut t = Table::new();
        t.insert("version".into(), Value::Integer(1));
        t.insert("name".into(), Value::String(self.name.clone()));
        if let Some(seed) = &self.seed {
            t.insert("seed".into(), seed.clone());
        }
        if let Some(o) = &self.objective {
            t.insert("objective".into(), Value::Table(o.clone()));
        }
        t.insert("search".into(), Value::Table(self.search.clone()));
        if let Some(tr) = &self.trainer {
            t.insert("trainer".into(), Value::Table(tr.clone()));
        }
        t.insert("params".into(), Value::Table(self.params.clone()));
        if let Some(s) = &self.schedule {
            t.insert("schedule".into(), Value::Table(s.clone()));
        }
        t
    }

    /// The study file's text, checked by the study-file parser.
    pub fn to_toml(&self) -> std::result::Result<String, SpecError> {
        let text = self.table().to_string();
        StudySpec::parse(&text, &self.source_name())?;
        Ok(text)
    }

    /// The study as the coordinator will read it.
    pub fn spec(&self) -> std::result::Result<StudySpec, SpecError> {
        StudySpec::parse(&self.table().to_string(), &self.source_name())
    }
}

/// Appends `value` to the array at `key`, creating it.
fn push(t: &mut Table, key: &str, value: Value) {
    match t.get_mut(key) {
        Some(Value::Array(items)) => items.push(value),
        _ => {
            t.insert(key.into(), Value::Array(vec![value]));
        }
    }
}

impl Client {
    /// Checks a built study locally, then submits it; its errors name
    /// "study `name`".
    pub async fn submit_spec(&self, study: &StudyBuilder) -> Result<StudyId> {
        let text = study.to_toml()?;
        self.submit(&text, &study.source_name()).await
    }

    /// Submits a study file; the coordinator's errors name the file, a read
    /// error names its path.
    pub async fn submit_file(&self, path: impl AsRef<Path>) -> Result<StudyId> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| SdkError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        self.submit(&text, &name).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn large_seeds_are_refused_not_wrapped() {
        let e = StudyBuilder::new("s")
            .seed(u64::MAX)
            .objective("loss", Direction::Minimize)
            .algorithm("random")
            .max_trials(2)
            .trainer_external(1)
            .float("x", 0.0, 1.0, false)
            .to_toml()
            .unwrap_err();
        assert_eq!(e.key, "seed");
    }
}
