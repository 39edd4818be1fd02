//! The study file: TOML, versioned, unknown keys rejected. Parsing is done by
//! hand over `toml::Table` (not serde derive) so every error can name the file,
//! the dotted key and what was expected, e.g.
//! `quickstart.toml: params.lr.low: must be > 0 when log = true`.

use crate::command;
use crate::domain::{Direction, ParamValue, Params, Resource, TrainerConfig};
use crate::trainers::{self, KnownKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// The only study-file version this build reads.
pub const STUDY_FILE_VERSION: i64 = 1;
/// A grid larger than this is almost surely a mistake (a float step too small).
pub const MAX_GRID_POINTS: u64 = 1_000_000;
/// The GP's input dimension limit (numeric parameters count one, a
/// categorical one per choice): past it the model needs far more trials
/// than a study runs to learn anything.
pub const GP_MAX_DIMS: usize = 64;
/// Upper bound on max_trials; keeps per-study bookkeeping bounded.
pub const MAX_TRIALS_LIMIT: i64 = 1_000_000;

/// An invalid study file: which file, which key, what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {key}{sep}{message}", sep = if key.is_empty() { "" } else { ": " })]
pub struct SpecError {
    pub source_name: String,
    pub key: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudySpec {
    pub name: String,
    /// None: the coordinator picks one at submit time and stores it.
    pub seed: Option<u64>,
    pub objective: Objective,
    pub search: Search,
    pub trainer: TrainerConfig,
    pub params: BTreeMap<String, ParamSpec>,
    /// Early stopping; `SchedulerKind::None` when the file has no `[schedule]`.
    #[serde(default)]
    pub schedule: ScheduleSpec,
}

/// Early-stopping scheduler, from the `[schedule]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SchedulerKind {
    /// Every trial trains to `max_resource`.
    #[default]
    None,
    /// Median stopping rule (Golovin et al. 2017).
    Median,
    /// Synchronous successive halving (Jamieson and Talwalkar 2016).
    SuccessiveHalving,
    /// Asynchronous successive halving (Li et al. 2020).
    Asha,
    /// Synchronous Hyperband (Li et al. 2018).
    Hyperband,
    /// Hyperband's brackets, each run as ASHA.
    AsyncHyperband,
}

impl SchedulerKind {
    pub const ALL: [SchedulerKind; 6] = [
        SchedulerKind::None,
        SchedulerKind::Median,
        SchedulerKind::SuccessiveHalving,
        SchedulerKind::Asha,
        SchedulerKind::Hyperband,
        SchedulerKind::AsyncHyperband,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SchedulerKind::None => "none",
            SchedulerKind::Median => "median",
            SchedulerKind::SuccessiveHalving => "successive_halving",
            SchedulerKind::Asha => "asha",
            SchedulerKind::Hyperband => "hyperband",
            SchedulerKind::AsyncHyperband => "async_hyperband",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Schedulers that pause trials at rungs (and so need checkpoints).
    pub fn pauses(self) -> bool {
        matches!(
            self,
            SchedulerKind::SuccessiveHalving
                | SchedulerKind::Asha
                | SchedulerKind::Hyperband
                | SchedulerKind::AsyncHyperband
        )
    }
}

/// The `[schedule]` table, validated: `min_resource < max_resource`,
/// `reduction_factor >= 2`, and a resource the trainer supports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    pub algorithm: SchedulerKind,
    pub resource: Resource,
    /// Smallest budget (the first rung), in resource units.
    pub min_resource: u32,
    /// Full budget: `trainer.epochs` for `resource = "epochs"`.
    pub max_resource: u32,
    /// η: a rung keeps its best 1/η.
    pub reduction_factor: u32,
    /// Median rule: no stopping before this step.
    pub grace_period: u32,
    /// Median rule: no stopping until this many other trials reported the
    /// same step.
    pub min_trials: u32,
    /// Hyperband: how many brackets (default: all, `s_max + 1`).
    pub brackets: Option<u32>,
    /// Keep the final model of the best completed trial (every other
    /// checkpoint goes when its trial ends); `hpo model` downloads it.
    #[serde(default)]
    pub keep_best: bool,
}

impl Default for ScheduleSpec {
    fn default() -> Self {
        ScheduleSpec {
            algorithm: SchedulerKind::None,
            resource: Resource::Epochs,
            min_resource: 1,
            max_resource: 1,
            reduction_factor: 3,
            grace_period: 1,
            min_trials: 3,
            brackets: None,
            keep_best: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    pub metric: String,
    pub direction: Direction,
    pub scope: Scope,
}

/// Which of a trial's reported values is its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// The value at the last reported step (Ray Tune's default).
    Last,
    /// The best value over all steps (Keras Tuner's habit).
    Best,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    Grid,
    Random,
    /// Scrambled Sobol quasi-random points.
    Sobol,
    /// Tree-structured Parzen estimator (multivariate).
    Tpe,
    /// Gaussian-process Bayesian optimisation.
    Gp,
    /// BOHB (Falkner et al. 2018): TPE fitted on the largest Hyperband
    /// budget with enough results, a third of the trials random.
    Bohb,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Grid => "grid",
            Algorithm::Random => "random",
            Algorithm::Sobol => "sobol",
            Algorithm::Tpe => "tpe",
            Algorithm::Gp => "gp",
            Algorithm::Bohb => "bohb",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Search {
    pub algorithm: Algorithm,
    pub max_trials: u32,
    pub max_parallel: u32,
    pub max_duration: Option<Duration>,
    /// Stop the study once its trials have trained this many resource units
    /// in total (epochs; a resumed trial does not pay twice). For comparing
    /// schedulers at an equal budget.
    #[serde(default)]
    pub max_total_resource: Option<u64>,
    /// Configurations to try first, in order (trial n gets the n-th), before
    /// the sampler proposes.
    #[serde(default)]
    pub enqueue: Vec<Params>,
    /// Earlier studies (by name, or id) whose completed trials a
    /// model-based sampler learns from before its own.
    #[serde(default)]
    pub warm_start: Vec<String>,
    pub target: Option<f64>,
    /// How many times a trial whose worker vanished is run again.
    pub max_retries: u32,
    /// Higher is served first when workers are scarce; equal ones share.
    pub priority: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ParamSpec {
    Float {
        low: f64,
        high: f64,
        log: bool,
        step: Option<f64>,
    },
    Int {
        low: i64,
        high: i64,
        log: bool,
        step: i64,
    },
    Categorical {
        choices: Vec<ParamValue>,
    },
}

impl ParamSpec {
    /// The grid values of this parameter, or None where it has no finite grid.
    pub fn grid_values(&self) -> Option<Vec<ParamValue>> {
        match self {
            ParamSpec::Float {
                low,
                high,
                step: Some(step),
                ..
            } => {
                let n = ((high - low) / step + 1e-9).floor() as u64 + 1;
                Some(
                    (0..n)
                        .map(|i| ParamValue::Float(low + step * i as f64))
                        .collect(),
                )
            }
            ParamSpec::Float { step: None, .. } => None,
            ParamSpec::Int {
                low,
                high,
                step,
                log: false,
            } => Some(
                (0..=(high - low) / step)
                    .map(|i| ParamValue::Int(low + i * step))
                    .collect(),
            ),
            ParamSpec::Int { log: true, .. } => None,
            ParamSpec::Categorical { choices } => Some(choices.clone()),
        }
    }

    /// Number of grid points without building them.
    fn grid_len(&self) -> Option<u64> {
        match self {
            ParamSpec::Float {
                low,
                high,
                step: Some(step),
                ..
            } => Some(((high - low) / step + 1e-9).floor() as u64 + 1),
            ParamSpec::Int {
                low,
                high,
                step,
                log: false,
            } => Some(((high - low) / step) as u64 + 1),
            ParamSpec::Categorical { choices } => Some(choices.len() as u64),
            _ => None,
        }
    }

    /// True when `value` lies in this parameter's domain.
    pub fn contains(&self, value: &ParamValue) -> bool {
        match (self, value) {
            (ParamSpec::Float { low, high, .. }, ParamValue::Float(v)) => {
                *v >= *low && *v <= *high + 1e-12 * high.abs().max(1.0)
            }
            (ParamSpec::Int { low, high, .. }, ParamValue::Int(v)) => v >= low && v <= high,
            (ParamSpec::Categorical { choices }, v) => choices.contains(v),
            _ => false,
        }
    }
}

impl StudySpec {
    /// Parses and validates a study file. `source_name` is used in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<StudySpec, SpecError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| SpecError {
            source_name: source_name.to_string(),
            key: String::new(),
            message: format!("invalid toml: {}", e.message().trim()),
        })?;
        let cx = Cx { source_name };
        cx.study(&table)
    }

    /// Total grid points, when every parameter has a grid.
    pub fn grid_size(&self) -> Option<u64> {
        grid_points(&self.params)
    }
}

/// Points in the grid of `params`, or None when one has no finite grid.
/// `s_max`: the number of times `min_resource` can be multiplied by η without
/// passing `max_resource` (Hyperband's `floor(log_η(R / r))`).
pub fn levels(min_resource: u32, max_resource: u32, eta: u32) -> u32 {
    let mut s = 0;
    let mut r = u64::from(min_resource.max(1));
    while r * u64::from(eta.max(2)) <= u64::from(max_resource) {
        r *= u64::from(eta.max(2));
        s += 1;
    }
    s
}

fn grid_points(params: &BTreeMap<String, ParamSpec>) -> Option<u64> {
    params
        .values()
        .try_fold(1u64, |acc, p| p.grid_len().map(|n| acc.saturating_mul(n)))
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

struct Cx<'a> {
    source_name: &'a str,
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a datetime",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

impl Cx<'_> {
    fn err(&self, key: impl Into<String>, message: impl Into<String>) -> SpecError {
        SpecError {
            source_name: self.source_name.to_string(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn only_keys(&self, t: &toml::Table, prefix: &str, allowed: &[&str]) -> Result<(), SpecError> {
        for k in t.keys() {
            if !allowed.contains(&k.as_str()) {
                return Err(self.err(
                    join(prefix, k),
                    format!("unknown key (expected one of: {})", allowed.join(", ")),
                ));
            }
        }
        Ok(())
    }

    fn table<'t>(&self, t: &'t toml::Table, key: &str) -> Result<&'t toml::Table, SpecError> {
        match t.get(key) {
            Some(toml::Value::Table(v)) => Ok(v),
            Some(other) => {
                Err(self.err(key, format!("expected a table, got {}", type_name(other))))
            }
            None => Err(self.err(key, "missing table")),
        }
    }

    fn string(
        &self,
        t: &toml::Table,
        prefix: &str,
        key: &str,
    ) -> Result<Option<String>, SpecError> {
        match t.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.err(
                join(prefix, key),
                format!("expected a string, got {}", type_name(other)),
            )),
        }
    }

    fn required_string(
        &self,
        t: &toml::Table,
        prefix: &str,
        key: &str,
    ) -> Result<String, SpecError> {
        let s = self
            .string(t, prefix, key)?
            .ok_or_else(|| self.err(join(prefix, key), "missing (expected a string)"))?;
        if s.trim().is_empty() {
            return Err(self.err(join(prefix, key), "must not be empty"));
        }
        Ok(s)
    }

    fn int(&self, t: &toml::Table, prefix: &str, key: &str) -> Result<Option<i64>, SpecError> {
        match t.get(key) {
            None => Ok(None),
            Some(toml::Value::Integer(i)) => Ok(Some(*i)),
            Some(other) => Err(self.err(
                join(prefix, key),
                format!("expected an integer, got {}", type_name(other)),
            )),
        }
    }

    fn float(&self, t: &toml::Table, prefix: &str, key: &str) -> Result<Option<f64>, SpecError> {
        let v = match t.get(key) {
            None => return Ok(None),
            Some(toml::Value::Float(f)) => *f,
            Some(toml::Value::Integer(i)) => *i as f64,
            Some(other) => {
                return Err(self.err(
                    join(prefix, key),
                    format!("expected a number, got {}", type_name(other)),
                ));
            }
        };
        if !v.is_finite() {
            return Err(self.err(join(prefix, key), "must be a finite number"));
        }
        Ok(Some(v))
    }

    fn bool(&self, t: &toml::Table, prefix: &str, key: &str) -> Result<Option<bool>, SpecError> {
        match t.get(key) {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(*b)),
            Some(other) => Err(self.err(
                join(prefix, key),
                format!("expected true or false, got {}", type_name(other)),
            )),
        }
    }

    fn ranged(&self, key: String, v: i64, low: i64, high: i64) -> Result<i64, SpecError> {
        if v < low || v > high {
            return Err(self.err(key, format!("must be between {low} and {high}, got {v}")));
        }
        Ok(v)
    }

    fn study(&self, t: &toml::Table) -> Result<StudySpec, SpecError> {
        self.only_keys(
            t,
            "",
            &[
                "version",
                "name",
                "seed",
                "objective",
                "search",
                "trainer",
                "params",
                "schedule",
            ],
        )?;
        let version = self.int(t, "", "version")?.unwrap_or(STUDY_FILE_VERSION);
        if version != STUDY_FILE_VERSION {
            return Err(self.err(
                "version",
                format!("unsupported study file version {version} (this hpo reads version {STUDY_FILE_VERSION})"),
            ));
        }
        let name = self.required_string(t, "", "name")?;
        let seed = match self.int(t, "", "seed")? {
            Some(s) if s < 0 => return Err(self.err("seed", "must be >= 0")),
            Some(s) => Some(s as u64),
            None => None,
        };
        let objective = self.objective(self.table(t, "objective")?)?;
        let trainer = self.trainer(self.table(t, "trainer")?)?;
        let kind = trainers::lookup(&trainer.kind).ok_or_else(|| {
            self.err(
                "trainer.kind",
                format!(
                    "unknown trainer `{}` (expected one of: {})",
                    trainer.kind,
                    trainers::names().join(", ")
                ),
            )
        })?;
        let params = self.params(self.table(t, "params")?, kind)?;
        for (name, value) in &trainer.settings {
            self.check_setting(kind, name, value)?;
            if params.contains_key(name) {
                return Err(self.err(
                    format!("trainer.{name}"),
                    "is also a searched parameter in [params]; set it in one place",
                ));
            }
        }
        let names: Vec<&str> = params.keys().map(String::as_str).collect();
        self.check_command(&trainer, &names)?;
        if kind.needs_dataset && trainer.dataset.is_empty() {
            return Err(self.err("trainer.dataset", "missing (expected a data set name)"));
        }
        let mut search = self.search(self.table(t, "search")?)?;
        match search.algorithm {
            Algorithm::Grid => {
                for (name, p) in &params {
                    if p.grid_len().is_none() {
                        return Err(self.err(
                            format!("params.{name}"),
                            "grid search needs a finite set: give `step` (not with log = true) or use type = \"categorical\"",
                        ));
                    }
                }
                let size = self.grid_size(&params)?;
                // Every point runs once: a larger budget could never be spent.
                if search.max_trials == 0 || u64::from(search.max_trials) > size {
                    search.max_trials = size as u32;
                }
            }
            Algorithm::Random
            | Algorithm::Sobol
            | Algorithm::Tpe
            | Algorithm::Gp
            | Algorithm::Bohb => {
                if search.max_trials == 0 {
                    return Err(self.err(
                        "search.max_trials",
                        format!(
                            "missing ({} search needs a trial budget)",
                            search.algorithm.as_str()
                        ),
                    ));
                }
            }
        }
        if search.max_parallel == 0 {
            search.max_parallel = search.max_trials;
        }
        search.enqueue = self.enqueue(self.table(t, "search")?, &params, &search)?;
        if search.algorithm == Algorithm::Gp {
            let encoded: usize = params
                .values()
                .map(|p| match p {
                    ParamSpec::Categorical { choices } => choices.len(),
                    _ => 1,
                })
                .sum();
            if encoded > GP_MAX_DIMS {
                return Err(self.err(
                    "search.algorithm",
                    format!(
                        "gp models at most {GP_MAX_DIMS} dimensions (a categorical parameter counts one per choice) and this space has {encoded}: use \"tpe\", or fewer choices"
                    ),
                ));
            }
        }
        let mut trainer = trainer;
        let schedule = match t.get("schedule") {
            None if trainer.epochs == 0 => {
                return Err(self.err("trainer.epochs", "missing (expected an integer >= 1)"));
            }
            None => ScheduleSpec {
                max_resource: trainer.epochs,
                ..ScheduleSpec::default()
            },
            Some(_) => self.schedule(self.table(t, "schedule")?, &mut trainer, kind)?,
        };
        if search.algorithm == Algorithm::Bohb
            && !matches!(
                schedule.algorithm,
                SchedulerKind::Hyperband | SchedulerKind::AsyncHyperband
            )
        {
            return Err(self.err(
                "search.algorithm",
                format!(
                    "bohb proposes for Hyperband's budgets: set [schedule] algorithm = \"hyperband\" or \"async_hyperband\" (it is \"{}\")",
                    schedule.algorithm.as_str()
                ),
            ));
        }
        Ok(StudySpec {
            name,
            seed,
            objective,
            search,
            trainer,
            params,
            schedule,
        })
    }

    /// The grid's size, refused above the limit. Called once every parameter
    /// is known to have a finite grid.
    fn grid_size(&self, params: &BTreeMap<String, ParamSpec>) -> Result<u64, SpecError> {
        let total = grid_points(params).unwrap_or(u64::MAX);
        if total > MAX_GRID_POINTS {
            return Err(self.err(
                "params",
                format!("grid has {total} points, more than the limit of {MAX_GRID_POINTS}"),
            ));
        }
        Ok(total)
    }

    fn objective(&self, t: &toml::Table) -> Result<Objective, SpecError> {
        let p = "objective";
        self.only_keys(t, p, &["metric", "direction", "scope"])?;
        let metric = self.required_string(t, p, "metric")?;
        let direction = match self.required_string(t, p, "direction")?.as_str() {
            "maximize" | "max" => Direction::Maximize,
            "minimize" | "min" => Direction::Minimize,
            other => {
                return Err(self.err(
                    "objective.direction",
                    format!("expected \"maximize\" or \"minimize\", got \"{other}\""),
                ));
            }
        };
        let scope = match self.string(t, p, "scope")?.as_deref() {
            None | Some("last") => Scope::Last,
            Some("best") => Scope::Best,
            Some(other) => {
                return Err(self.err(
                    "objective.scope",
                    format!("expected \"last\" or \"best\", got \"{other}\""),
                ));
            }
        };
        Ok(Objective {
            metric,
            direction,
            scope,
        })
    }

    fn search(&self, t: &toml::Table) -> Result<Search, SpecError> {
        let p = "search";
        self.only_keys(
            t,
            p,
            &[
                "algorithm",
                "max_trials",
                "max_parallel",
                "max_duration",
                "target",
                "max_retries",
                "priority",
                "max_total_resource",
                "enqueue",
                "warm_start",
            ],
        )?;
        let algorithm = match self.required_string(t, p, "algorithm")?.as_str() {
            "grid" => Algorithm::Grid,
            "random" => Algorithm::Random,
            "sobol" => Algorithm::Sobol,
            "tpe" => Algorithm::Tpe,
            "gp" => Algorithm::Gp,
            "bohb" => Algorithm::Bohb,
            other => {
                return Err(self.err(
                    "search.algorithm",
                    format!("expected one of: grid, random, sobol, tpe, gp, bohb, got \"{other}\""),
                ));
            }
        };
        let max_trials = match self.int(t, p, "max_trials")? {
            Some(n) => self.ranged(join(p, "max_trials"), n, 1, MAX_TRIALS_LIMIT)? as u32,
            None => 0,
        };
        let max_parallel = match self.int(t, p, "max_parallel")? {
            Some(n) => self.ranged(join(p, "max_parallel"), n, 1, 100_000)? as u32,
            None => 0,
        };
        let max_duration = match self.string(t, p, "max_duration")? {
            None => None,
            Some(s) => {
                let d = humantime::parse_duration(&s).map_err(|e| {
                    self.err(
                        "search.max_duration",
                        format!("expected a duration such as \"30m\" or \"2h\", got \"{s}\" ({e})"),
                    )
                })?;
                if d.is_zero() {
                    return Err(self.err("search.max_duration", "must be longer than zero"));
                }
                Some(d)
            }
        };
        let target = self.float(t, p, "target")?;
        let warm_start = match t.get("warm_start") {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => {
                let mut names = Vec::with_capacity(items.len());
                for (i, v) in items.iter().enumerate() {
                    match v {
                        toml::Value::String(s) if !s.trim().is_empty() => names.push(s.clone()),
                        toml::Value::Integer(n) if *n > 0 => names.push(n.to_string()),
                        other => {
                            return Err(self.err(
                                format!("search.warm_start[{i}]"),
                                format!("expected a study name or id, got {}", type_name(other)),
                            ));
                        }
                    }
                }
                names
            }
            Some(other) => {
                return Err(self.err(
                    "search.warm_start",
                    format!(
                        "expected an array of study names such as [\"earlier-study\"], got {}",
                        type_name(other)
                    ),
                ));
            }
        };
        if !warm_start.is_empty()
            && !matches!(algorithm, Algorithm::Tpe | Algorithm::Gp | Algorithm::Bohb)
        {
            return Err(self.err(
                "search.warm_start",
                format!(
                    "only the model-based samplers (tpe, gp, bohb) learn from earlier studies, not {}",
                    algorithm.as_str()
                ),
            ));
        }
        let max_total_resource = match self.int(t, p, "max_total_resource")? {
            Some(n) => Some(self.ranged(join(p, "max_total_resource"), n, 1, i64::MAX)? as u64),
            None => None,
        };
        let max_retries = match self.int(t, p, "max_retries")? {
            Some(n) => self.ranged(join(p, "max_retries"), n, 0, 100)? as u32,
            None => 2,
        };
        let priority = match self.int(t, p, "priority")? {
            Some(n) => self.ranged(join(p, "priority"), n, -1000, 1000)? as i32,
            None => 0,
        };
        Ok(Search {
            algorithm,
            max_trials,
            max_parallel,
            max_duration,
            target,
            max_retries,
            priority,
            max_total_resource,
            enqueue: Vec::new(),
            warm_start,
        })
    }

    /// `[search] enqueue`: an array of tables, each a complete configuration
    /// inside the search space.
    fn enqueue(
        &self,
        t: &toml::Table,
        params: &BTreeMap<String, ParamSpec>,
        search: &Search,
    ) -> Result<Vec<Params>, SpecError> {
        let Some(v) = t.get("enqueue") else {
            return Ok(Vec::new());
        };
        let toml::Value::Array(items) = v else {
            return Err(self.err(
                "search.enqueue",
                format!(
                    "expected an array of configurations such as [{{ lr = 0.01 }}], got {}",
                    type_name(v)
                ),
            ));
        };
        if search.algorithm == Algorithm::Grid && !items.is_empty() {
            return Err(self.err(
                "search.enqueue",
                "grid search runs every point already; enqueue is for random, sobol, tpe and gp",
            ));
        }
        if items.len() as u64 > u64::from(search.max_trials) {
            return Err(self.err(
                "search.enqueue",
                format!(
                    "{} configurations, more than max_trials = {}",
                    items.len(),
                    search.max_trials
                ),
            ));
        }
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let key = format!("search.enqueue[{i}]");
            let toml::Value::Table(cfg) = item else {
                return Err(self.err(
                    key,
                    format!(
                        "expected a table of parameter values, got {}",
                        type_name(item)
                    ),
                ));
            };
            let mut p = Params::new();
            for (name, value) in cfg {
                let vkey = format!("{key}.{name}");
                let Some(spec) = params.get(name) else {
                    return Err(self.err(vkey, "not a parameter in [params]"));
                };
                let value = match (spec, value) {
                    (ParamSpec::Float { .. }, toml::Value::Float(f)) => ParamValue::Float(*f),
                    (ParamSpec::Float { .. }, toml::Value::Integer(n)) => {
                        ParamValue::Float(*n as f64)
                    }
                    (ParamSpec::Int { .. }, toml::Value::Integer(n)) => ParamValue::Int(*n),
                    (ParamSpec::Categorical { .. }, toml::Value::String(s)) => {
                        ParamValue::Categorical(s.clone())
                    }
                    (ParamSpec::Categorical { .. }, toml::Value::Integer(n)) => ParamValue::Int(*n),
                    (ParamSpec::Categorical { .. }, toml::Value::Float(f)) => ParamValue::Float(*f),
                    (_, other) => {
                        return Err(self.err(
                            vkey,
                            format!(
                                "expected a value of params.{name}, got {}",
                                type_name(other)
                            ),
                        ));
                    }
                };
                if !spec.contains(&value) {
                    return Err(self.err(
                        vkey,
                        format!("{value} is outside the search space of params.{name}"),
                    ));
                }
                p.insert(name.clone(), value);
            }
            if let Some(missing) = params.keys().find(|n| !p.contains_key(*n)) {
                return Err(self.err(key, format!("missing parameter `{missing}`")));
            }
            out.push(p);
        }
        Ok(out)
    }

    /// The `[schedule]` table. For `resource = "epochs"` the full budget is
    /// the trainer's epochs: `max_resource` may stand in for a missing
    /// `trainer.epochs`, but may not contradict it.
    fn schedule(
        &self,
        t: &toml::Table,
        trainer: &mut TrainerConfig,
        info: &trainers::TrainerInfo,
    ) -> Result<ScheduleSpec, SpecError> {
        let p = "schedule";
        self.only_keys(
            t,
            p,
            &[
                "algorithm",
                "resource",
                "min_resource",
                "max_resource",
                "reduction_factor",
                "grace_period",
                "min_trials",
                "brackets",
                "keep_best",
            ],
        )?;
        let algorithm = match self.string(t, p, "algorithm")? {
            None => SchedulerKind::None,
            Some(a) => SchedulerKind::parse(&a).ok_or_else(|| {
                let names: Vec<&str> = SchedulerKind::ALL.iter().map(|k| k.as_str()).collect();
                self.err(
                    "schedule.algorithm",
                    format!("expected one of: {}, got \"{a}\"", names.join(", ")),
                )
            })?,
        };
        let resource = match self.string(t, p, "resource")?.as_deref() {
            None | Some("epochs") => Resource::Epochs,
            Some("data_fraction") => Resource::DataFraction,
            Some(other) => {
                return Err(self.err(
                    "schedule.resource",
                    format!("expected \"epochs\" or \"data_fraction\", got \"{other}\""),
                ));
            }
        };
        if !info.resources.contains(&resource) {
            let names: Vec<&str> = info.resources.iter().map(|r| r.as_str()).collect();
            return Err(self.err(
                "schedule.resource",
                format!(
                    "trainer `{}` does not support resource \"{}\" (it supports: {})",
                    info.name,
                    resource.as_str(),
                    names.join(", ")
                ),
            ));
        }
        let positive = |key: &str| -> Result<Option<u32>, SpecError> {
            match self.int(t, p, key)? {
                Some(n) => Ok(Some(self.ranged(join(p, key), n, 1, 1_000_000)? as u32)),
                None => Ok(None),
            }
        };
        let min_resource = positive("min_resource")?.unwrap_or(1);
        let max_resource = match (resource, positive("max_resource")?) {
            (Resource::Epochs, Some(m)) if trainer.epochs != 0 && m != trainer.epochs => {
                return Err(self.err(
                    "schedule.max_resource",
                    format!(
                        "is {m} but trainer.epochs is {}: with resource = \"epochs\" the full budget is the trainer's epochs (set one of them, or both equal)",
                        trainer.epochs
                    ),
                ));
            }
            (Resource::Epochs, Some(m)) => {
                trainer.epochs = m;
                m
            }
            (Resource::Epochs, None) => trainer.epochs,
            (Resource::DataFraction, Some(m)) => m,
            (Resource::DataFraction, None) => {
                return Err(self.err(
                    "schedule.max_resource",
                    "missing (resource = \"data_fraction\" needs the number of levels: a budget b trains on b / max_resource of the data)",
                ));
            }
        };
        if trainer.epochs == 0 {
            return Err(self.err("trainer.epochs", "missing (expected an integer >= 1)"));
        }
        let reduction_factor = match self.int(t, p, "reduction_factor")? {
            Some(n) if n < 2 => {
                return Err(self.err(
                    "schedule.reduction_factor",
                    format!(
                        "must be at least 2 (a rung keeps its best 1/reduction_factor), got {n}"
                    ),
                ));
            }
            Some(n) => self.ranged(join(p, "reduction_factor"), n, 2, 1000)? as u32,
            None => 3,
        };
        if algorithm != SchedulerKind::None && min_resource >= max_resource {
            return Err(self.err(
                "schedule.min_resource",
                format!(
                    "must be less than max_resource ({max_resource}), got {min_resource}: with one budget level there is nothing to stop early"
                ),
            ));
        }
        let grace_period = positive("grace_period")?.unwrap_or(min_resource);
        let min_trials = match self.int(t, p, "min_trials")? {
            Some(n) => self.ranged(join(p, "min_trials"), n, 1, 1_000_000)? as u32,
            None => 3,
        };
        let s_max = levels(min_resource, max_resource, reduction_factor);
        let brackets = match positive("brackets")? {
            Some(b) if b > s_max + 1 => {
                return Err(self.err(
                    "schedule.brackets",
                    format!(
                        "must be at most {} for min_resource = {min_resource}, max_resource = {max_resource}, reduction_factor = {reduction_factor}, got {b}",
                        s_max + 1
                    ),
                ));
            }
            other => other,
        };
        let keep_best = self.bool(t, p, "keep_best")?.unwrap_or(false);
        Ok(ScheduleSpec {
            keep_best,
            algorithm,
            resource,
            min_resource,
            max_resource,
            reduction_factor,
            grace_period,
            min_trials,
            brackets,
        })
    }

    fn trainer(&self, t: &toml::Table) -> Result<TrainerConfig, SpecError> {
        let p = "trainer";
        let kind = self.required_string(t, p, "kind")?;
        let dataset = self.string(t, p, "dataset")?.unwrap_or_default();
        // 0 when missing: `[schedule] max_resource` may supply it; checked in
        // `study` once the schedule is read.
        let epochs = match self.int(t, p, "epochs")? {
            Some(n) => self.ranged(join(p, "epochs"), n, 1, 100_000)? as u32,
            None => 0,
        };
        let mut settings = Params::new();
        let mut config = TrainerConfig {
            kind,
            dataset,
            epochs,
            ..TrainerConfig::default()
        };
        self.command_keys(t, &mut config)?;
        for (k, v) in t {
            if matches!(k.as_str(), "kind" | "dataset" | "epochs")
                || trainers::COMMAND_KEYS.contains(&k.as_str())
            {
                continue;
            }
            let value = match v {
                toml::Value::Float(f) if f.is_finite() => ParamValue::Float(*f),
                toml::Value::Integer(i) => ParamValue::Int(*i),
                toml::Value::String(s) => ParamValue::Categorical(s.clone()),
                other => {
                    return Err(self.err(
                        join(p, k),
                        format!("expected a number or a string, got {}", type_name(other)),
                    ));
                }
            };
            settings.insert(k.clone(), value);
        }
        config.settings = settings;
        Ok(config)
    }

    /// `command`, `env`, `working_dir` and `param_flags`: read for
    /// `kind = "command"`, refused for any other kind. Placeholders are
    /// checked once the parameters are known (`check_command`).
    fn command_keys(&self, t: &toml::Table, config: &mut TrainerConfig) -> Result<(), SpecError> {
        let p = "trainer";
        if config.kind != "command" {
            if let Some(k) = trainers::COMMAND_KEYS.iter().find(|k| t.contains_key(**k)) {
                return Err(self.err(
                    join(p, k),
                    format!(
                        "only trainer kind = \"command\" reads `{k}` (this trainer is `{}`)",
                        config.kind
                    ),
                ));
            }
            return Ok(());
        }
        let key = join(p, "command");
        let argv = match t.get("command") {
            None => return Err(self.err(&key, "missing (expected an array such as [\"python\", \"train.py\", \"--epochs\", \"{budget}\"])")),
            Some(toml::Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => Err(self.err(
                        format!("{key}[{i}]"),
                        format!("expected a string, got {}", type_name(other)),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(toml::Value::String(s)) => {
                return Err(self.err(
                    &key,
                    format!("expected an array of strings (the program, then each argument: no shell splits it), got the string \"{s}\""),
                ));
            }
            Some(other) => {
                return Err(self.err(&key, format!("expected an array of strings, got {}", type_name(other))));
            }
        };
        if argv.first().is_none_or(|a| a.trim().is_empty()) {
            return Err(self.err(
                &key,
                "must name a program (the array is empty or starts with an empty string)",
            ));
        }
        config.command = argv;
        match t.get("env") {
            None => {}
            Some(toml::Value::Table(vars)) => {
                for (name, v) in vars {
                    let vk = format!("{p}.env.{name}");
                    if name.is_empty() || name.contains('=') || name.contains('\0') {
                        return Err(self.err(vk, "is not a valid environment variable name"));
                    }
                    if name.starts_with("HPO_") || name == "CUDA_VISIBLE_DEVICES" {
                        return Err(self.err(
                            vk,
                            "is set by the worker for each trial and cannot be overridden",
                        ));
                    }
                    match v {
                        toml::Value::String(s) => config.env.insert(name.clone(), s.clone()),
                        toml::Value::Integer(i) => config.env.insert(name.clone(), i.to_string()),
                        toml::Value::Float(f) => config.env.insert(name.clone(), f.to_string()),
                        toml::Value::Boolean(b) => config.env.insert(name.clone(), b.to_string()),
                        other => {
                            return Err(self
                                .err(vk, format!("expected a string, got {}", type_name(other))));
                        }
                    };
                }
            }
            Some(other) => {
                return Err(self.err(
                    join(p, "env"),
                    format!(
                        "expected a table of strings such as {{ OMP_NUM_THREADS = \"4\" }}, got {}",
                        type_name(other)
                    ),
                ));
            }
        }
        config.working_dir = self.string(t, p, "working_dir")?.unwrap_or_default();
        config.param_flags = self.bool(t, p, "param_flags")?.unwrap_or(false);
        Ok(())
    }

    /// Every placeholder of `trainer.command` is known, and `{params.X}`
    /// names a parameter of the study.
    fn check_command(&self, trainer: &TrainerConfig, params: &[&str]) -> Result<(), SpecError> {
        for (i, arg) in trainer.command.iter().enumerate() {
            let key = format!("trainer.command[{i}]");
            let names = command::placeholders(arg).map_err(|m| self.err(&key, m))?;
            for name in names {
                command::check_placeholder(&name, params).map_err(|m| self.err(&key, m))?;
            }
        }
        Ok(())
    }

    fn check_setting(
        &self,
        trainer: &trainers::TrainerInfo,
        name: &str,
        value: &ParamValue,
    ) -> Result<(), SpecError> {
        let key = format!("trainer.{name}");
        let known = trainer.param(name).ok_or_else(|| {
            self.err(
                &key,
                format!(
                    "unknown setting for trainer `{}` (expected one of: kind, dataset, epochs, {})",
                    trainer.name,
                    trainer.param_names().join(", ")
                ),
            )
        })?;
        known.check_value(value).map_err(|m| self.err(key, m))
    }

    fn params(
        &self,
        t: &toml::Table,
        trainer: &trainers::TrainerInfo,
    ) -> Result<BTreeMap<String, ParamSpec>, SpecError> {
        if t.is_empty() {
            return Err(self.err("params", "no parameters to search (expected at least one)"));
        }
        let mut out = BTreeMap::new();
        for (name, v) in t {
            let key = format!("params.{name}");
            let spec = match v {
                toml::Value::Table(pt) => self.param(pt, &key)?,
                toml::Value::Array(items) => self.choices(items, &key)?,
                other => {
                    return Err(self.err(
                        key,
                        format!(
                            "expected a table such as {{ type = \"float\", low = 0.0, high = 1.0 }} or an array of choices, got {}",
                            type_name(other)
                        ),
                    ));
                }
            };
            let known = trainer.param(name).ok_or_else(|| {
                self.err(
                    &key,
                    format!(
                        "trainer `{}` has no parameter `{name}` (it knows: {})",
                        trainer.name,
                        trainer.param_names().join(", ")
                    ),
                )
            })?;
            self.check_against(known, &spec, &key)?;
            out.insert(name.clone(), spec);
        }
        Ok(out)
    }

    fn check_against(
        &self,
        known: &trainers::KnownParam,
        spec: &ParamSpec,
        key: &str,
    ) -> Result<(), SpecError> {
        let ok = matches!(
            (&known.kind, spec),
            (KnownKind::Any, _)
                | (
                    KnownKind::Float,
                    ParamSpec::Float { .. } | ParamSpec::Int { .. }
                )
                | (KnownKind::Int, ParamSpec::Int { .. })
                | (_, ParamSpec::Categorical { .. })
        );
        if !ok {
            return Err(self.err(
                key,
                format!("expected type = \"{}\"", known.kind.type_name()),
            ));
        }
        // Every value the space can produce must be acceptable to the trainer.
        let probes: Vec<ParamValue> = match spec {
            ParamSpec::Float { low, high, .. } => {
                vec![ParamValue::Float(*low), ParamValue::Float(*high)]
            }
            ParamSpec::Int { low, high, .. } => vec![ParamValue::Int(*low), ParamValue::Int(*high)],
            ParamSpec::Categorical { choices } => choices.clone(),
        };
        for p in probes {
            known.check_value(&p).map_err(|m| self.err(key, m))?;
        }
        Ok(())
    }

    fn choices(&self, items: &[toml::Value], key: &str) -> Result<ParamSpec, SpecError> {
        if items.is_empty() {
            return Err(self.err(key, "choices must not be empty"));
        }
        let mut choices = Vec::with_capacity(items.len());
        for (i, v) in items.iter().enumerate() {
            let value = match v {
                toml::Value::String(s) => ParamValue::Categorical(s.clone()),
                toml::Value::Integer(n) => ParamValue::Int(*n),
                toml::Value::Float(f) if f.is_finite() => ParamValue::Float(*f),
                other => {
                    return Err(self.err(
                        format!("{key}[{i}]"),
                        format!("expected a string or a number, got {}", type_name(other)),
                    ));
                }
            };
            if choices.contains(&value) {
                return Err(self.err(format!("{key}[{i}]"), format!("duplicate choice {value}")));
            }
            choices.push(value);
        }
        Ok(ParamSpec::Categorical { choices })
    }

    fn param(&self, t: &toml::Table, key: &str) -> Result<ParamSpec, SpecError> {
        let ty = self.string(t, key, "type")?.ok_or_else(|| {
            self.err(
                join(key, "type"),
                "missing (expected \"float\", \"int\" or \"categorical\")",
            )
        })?;
        match ty.as_str() {
            "float" => {
                self.only_keys(t, key, &["type", "low", "high", "log", "step"])?;
                let low = self
                    .float(t, key, "low")?
                    .ok_or_else(|| self.err(join(key, "low"), "missing (expected a number)"))?;
                let high = self
                    .float(t, key, "high")?
                    .ok_or_else(|| self.err(join(key, "high"), "missing (expected a number)"))?;
                let log = self.bool(t, key, "log")?.unwrap_or(false);
                let step = self.float(t, key, "step")?;
                if low >= high {
                    return Err(self.err(
                        join(key, "high"),
                        format!("must be > low ({low}), got {high}"),
                    ));
                }
                if log && low <= 0.0 {
                    return Err(self.err(join(key, "low"), "must be > 0 when log = true"));
                }
                if let Some(s) = step {
                    if s <= 0.0 {
                        return Err(self.err(join(key, "step"), "must be > 0"));
                    }
                    if log {
                        return Err(
                            self.err(join(key, "step"), "cannot be combined with log = true")
                        );
                    }
                    if s > high - low {
                        return Err(self.err(
                            join(key, "step"),
                            format!("must be <= high - low ({})", high - low),
                        ));
                    }
                }
                Ok(ParamSpec::Float {
                    low,
                    high,
                    log,
                    step,
                })
            }
            "int" => {
                self.only_keys(t, key, &["type", "low", "high", "log", "step"])?;
                let low = self
                    .int(t, key, "low")?
                    .ok_or_else(|| self.err(join(key, "low"), "missing (expected an integer)"))?;
                let high = self
                    .int(t, key, "high")?
                    .ok_or_else(|| self.err(join(key, "high"), "missing (expected an integer)"))?;
                let log = self.bool(t, key, "log")?.unwrap_or(false);
                let step = self.int(t, key, "step")?;
                if low > high {
                    return Err(self.err(
                        join(key, "high"),
                        format!("must be >= low ({low}), got {high}"),
                    ));
                }
                if log && low < 1 {
                    return Err(self.err(join(key, "low"), "must be >= 1 when log = true"));
                }
                let step = match step {
                    Some(s) if s < 1 => return Err(self.err(join(key, "step"), "must be >= 1")),
                    Some(s) if s > 1 && log => {
                        return Err(
                            self.err(join(key, "step"), "cannot be combined with log = true")
                        );
                    }
                    Some(s) => s,
                    None => 1,
                };
                if (high - low) % step != 0 {
                    return Err(self.err(
                        join(key, "high"),
                        format!(
                            "high - low ({}) must be a multiple of step ({step})",
                            high - low
                        ),
                    ));
                }
                Ok(ParamSpec::Int {
                    low,
                    high,
                    log,
                    step,
                })
            }
            "categorical" => {
                self.only_keys(t, key, &["type", "choices"])?;
                match t.get("choices") {
                    Some(toml::Value::Array(items)) => self.choices(items, &join(key, "choices")),
                    Some(other) => Err(self.err(
                        join(key, "choices"),
                        format!("expected an array, got {}", type_name(other)),
                    )),
                    None => Err(self.err(
                        join(key, "choices"),
                        "missing (expected an array of choices)",
                    )),
                }
            }
            other => Err(self.err(
                join(key, "type"),
                format!("expected \"float\", \"int\" or \"categorical\", got \"{other}\""),
            )),
        }
    }
}

#[cfg(test)]
mod tests;
