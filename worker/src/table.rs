//! Tabular learning curves (LCBench and the like): configurations with their
//! metrics at every step, loaded from two CSV files.
//!
//! The `table` trainer replays these curves to the coordinator, and `hpo
//! bench` reads them directly to simulate whole studies without workers, so
//! everything here is public and free of the `Trainer` seam.
//!
//! # Files
//!
//! - *configs*: a header, then one row per configuration: its id (first
//!   column, an integer) and one numeric column per parameter.
//! - *curves*: a header with the id column first, a step column named `epoch`
//!   or `step`, and metric columns (every other column); one row per
//!   configuration and step. A configuration's rows come in step order,
//!   1, 2, 3, ...; rows of different configurations may interleave. A name
//!   ending in `.gz` is read through gzip.
//!
//! Both are parsed by hand: a CSV of numbers needs no quoting rules, and one
//! LCBench task (52,000 rows, 900 KB of gzip) loads in tens of milliseconds.
//!
//! # Nearest configuration
//!
//! A sampler proposes arbitrary points; the table has a finite set. Each
//! parameter is mapped to its quantile among the table's values of that
//! column (the empirical CDF, linear between distinct values, ties at their
//! middle rank), and the nearest configuration is the one at the smallest
//! Euclidean distance in that space. Quantiles are scale-free (a learning
//! rate in 1e-4..1e-1 counts as much as a dropout in 0..1) and follow the
//! table's own sampling: a log-uniform column is spread evenly in quantile
//! space, so nearness means the same at both ends of its range.

use flate2::read::GzDecoder;
use hpo_proto::{Direction, MetricValues, Params};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// The metric column `step_cost` charges when none is named.
pub const DEFAULT_TIME_COLUMN: &str = "time";

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not the CSV this module reads; `line` counts from 1.
    #[error("{path}:{line}: {reason}")]
    Format {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("the table's configurations have a `{0}` column, but the trial has no parameter `{0}`")]
    MissingParam(String),
    #[error("parameter `{name}` must be a number to match the table, got `{value}`")]
    NotNumeric { name: String, value: String },
    #[error("the table has no metric column `{0}`")]
    UnknownColumn(String),
}

/// One parameter column's empirical CDF: its distinct values, ascending, and
/// the quantile of each (the middle rank of its ties, over `n - 1`).
#[derive(Debug, Clone)]
struct Cdf {
    values: Vec<f64>,
    quantiles: Vec<f64>,
}

impl Cdf {
    fn new(column: &[f64]) -> Self {
        let mut sorted = column.to_vec();
        sorted.sort_by(f64::total_cmp);
        let last = sorted.len().saturating_sub(1).max(1) as f64;
        let (mut values, mut quantiles) = (Vec::new(), Vec::new());
        let mut i = 0;
        while i < sorted.len() {
            let mut j = i;
            while j + 1 < sorted.len() && sorted[j + 1] == sorted[i] {
                j += 1;
            }
            values.push(sorted[i]);
            quantiles.push((i + j) as f64 / 2.0 / last);
            i = j + 1;
        }
        if sorted.len() == 1 {
            // One configuration: every value is as near as any other.
            quantiles[0] = 0.5;
        }
        Cdf { values, quantiles }
    }

    /// The quantile of `v`: interpolated between the neighbouring distinct
    /// values, clamped to the ends outside the table's range.
    fn quantile(&self, v: f64) -> f64 {
        let (xs, qs) = (&self.values, &self.quantiles);
        let Some(&first) = xs.first() else {
            return 0.5;
        };
        if v <= first || v.is_nan() {
            return qs[0];
        }
        let hi = xs.partition_point(|&x| x < v);
        if hi == xs.len() {
            return qs[xs.len() - 1];
        }
        if xs[hi] == v {
            return qs[hi];
        }
        let lo = hi - 1;
        let t = (v - xs[lo]) / (xs[hi] - xs[lo]);
        qs[lo] + t * (qs[hi] - qs[lo])
    }
}

/// The configurations and curves of one benchmark task, immutable once
/// loaded. Configurations are numbered by index (`0..len()`), in the order
/// of the configs file; configurations without any curve rows are left out,
/// so use [`Table::config_id`] for the file's ids.
#[derive(Debug, Clone)]
pub struct Table {
    configs_path: PathBuf,
    curves_path: PathBuf,
    param_names: Vec<String>,
    ids: Vec<i64>,
    /// Parameter values, configuration-major (`len() × param_names.len()`).
    params: Vec<f64>,
    /// The same, as quantiles of their columns.
    quantiles: Vec<f64>,
    cdfs: Vec<Cdf>,
    step_column: String,
    metric_names: Vec<String>,
    /// Per configuration: its steps' metrics, step-major
    /// (`steps × metric_names.len()`).
    curves: Vec<Vec<f64>>,
}

type CacheEntry = Arc<Mutex<Option<Arc<Table>>>>;

/// Tables already loaded in this process, by (configs, curves) path.
fn cache() -> &'static Mutex<HashMap<(PathBuf, PathBuf), CacheEntry>> {
    static CACHE: OnceLock<Mutex<HashMap<(PathBuf, PathBuf), CacheEntry>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

impl Table {
    /// Reads and checks both files. See the module doc for their format.
    pub fn load(
        configs_path: impl AsRef<Path>,
        curves_path: impl AsRef<Path>,
    ) -> Result<Table, TableError> {
        let (configs_path, curves_path) = (configs_path.as_ref(), curves_path.as_ref());
        let configs = Csv::read(configs_path)?;
        let curves = Csv::read(curves_path)?;

        // Configurations: id, then one numeric column per parameter.
        let param_names: Vec<String> = configs.header[1..].to_vec();
        if param_names.is_empty() {
            return Err(configs.error(1, "needs a config id column and parameter columns"));
        }
        let mut ids = Vec::new();
        let mut params = Vec::new();
        let mut index_of = HashMap::new();
        for row in configs.rows() {
            let (line, fields) = row?;
            let id = configs.id(line, fields[0])?;
            if index_of.insert(id, ids.len()).is_some() {
                return Err(configs.error(line, format!("config id {id} appears twice")));
            }
            ids.push(id);
            for (k, field) in fields[1..].iter().enumerate() {
                let v = configs.number(line, &param_names[k], field)?;
                // A NaN or infinite value has no place in the CDF.
                if !v.is_finite() {
                    return Err(configs.error(
                        line,
                        format!("column `{}` must be finite, got `{field}`", param_names[k]),
                    ));
                }
                params.push(v);
            }
        }

        // Curves: id, step, metrics; each configuration's steps in order.
        let step_at = curves
            .header
            .iter()
            .position(|c| c == "epoch" || c == "step")
            .filter(|&i| i > 0)
            .ok_or_else(|| curves.error(1, "needs a step column named `epoch` or `step`"))?;
        let metric_at: Vec<usize> = (1..curves.header.len()).filter(|&i| i != step_at).collect();
        if metric_at.is_empty() {
            return Err(curves.error(1, "has no metric columns"));
        }
        let metric_names: Vec<String> = metric_at
            .iter()
            .map(|&i| curves.header[i].clone())
            .collect();
        let mut curves_of: Vec<Vec<f64>> = vec![Vec::new(); ids.len()];
        for row in curves.rows() {
            let (line, fields) = row?;
            let id = curves.id(line, fields[0])?;
            let Some(&config) = index_of.get(&id) else {
                return Err(curves.error(
                    line,
                    format!("config id {id} is not in {}", configs_path.display()),
                ));
            };
            let curve = &mut curves_of[config];
            let expected = curve.len() / metric_at.len() + 1;
            let step = curves.number(line, &curves.header[step_at], fields[step_at])?;
            if step != expected as f64 {
                return Err(curves.error(
                    line,
                    format!("config {id}: step {step} where step {expected} was expected (steps count from 1, in order)"),
                ));
            }
            for &i in &metric_at {
                curve.push(curves.number(line, &curves.header[i], fields[i])?);
            }
        }

        // Keep the configurations that have a curve.
        let n_params = param_names.len();
        let keep: Vec<usize> = (0..ids.len())
            .filter(|&c| !curves_of[c].is_empty())
            .collect();
        if keep.is_empty() {
            return Err(curves.error(1, "has no rows for any configuration"));
        }
        let ids: Vec<i64> = keep.iter().map(|&c| ids[c]).collect();
        let params: Vec<f64> = keep
            .iter()
            .flat_map(|&c| params[c * n_params..(c + 1) * n_params].iter().copied())
            .collect();
        let curves_kept: Vec<Vec<f64>> = keep
            .iter()
            .map(|&c| std::mem::take(&mut curves_of[c]))
            .collect();

        let cdfs: Vec<Cdf> = (0..n_params)
            .map(|k| {
                let column: Vec<f64> = params.iter().skip(k).step_by(n_params).copied().collect();
                Cdf::new(&column)
            })
            .collect();
        let quantiles = params
            .iter()
            .enumerate()
            .map(|(i, &v)| cdfs[i % n_params].quantile(v))
            .collect();

        Ok(Table {
            configs_path: configs_path.to_path_buf(),
            curves_path: curves_path.to_path_buf(),
            param_names,
            ids,
            params,
            quantiles,
            cdfs,
            step_column: curves.header[step_at].clone(),
            metric_names,
            curves: curves_kept,
        })
    }

    /// Like [`Table::load`], but each pair of paths is read once per
    /// process: every slot of a worker (and every simulated worker of a
    /// bench) shares one copy. A failed load is not remembered, so a file
    /// fixed in the meantime is read on the next call; a file changed after a
    /// successful load is not.
    pub fn cached(
        configs_path: impl AsRef<Path>,
        curves_path: impl AsRef<Path>,
    ) -> Result<Arc<Table>, TableError> {
        let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let key = (
            canonical(configs_path.as_ref()),
            canonical(curves_path.as_ref()),
        );
        // The map's lock only finds the entry; loading holds the entry's own
        // lock, so other tables load in parallel and one table loads once.
        let entry = {
            let mut map = cache().lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(map.entry(key).or_default())
        };
        let mut slot = entry.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(table) = slot.as_ref() {
            return Ok(Arc::clone(table));
        }
        let table = Arc::new(Table::load(configs_path, curves_path)?);
        *slot = Some(Arc::clone(&table));
        Ok(table)
    }

    /// The number of configurations (with a curve).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn configs_path(&self) -> &Path {
        &self.configs_path
    }

    pub fn curves_path(&self) -> &Path {
        &self.curves_path
    }

    /// The parameter columns of the configs file, in file order.
    pub fn param_names(&self) -> &[String] {
        &self.param_names
    }

    /// The metric columns of the curves file (all but the id and step
    /// columns), in file order.
    pub fn metric_names(&self) -> &[String] {
        &self.metric_names
    }

    /// The name of the curves file's step column (`epoch` or `step`).
    pub fn step_column(&self) -> &str {
        &self.step_column
    }

    /// The position of a metric column in [`Table::metric_names`], for
    /// [`Table::metric`].
    pub fn metric_index(&self, name: &str) -> Option<usize> {
        self.metric_names.iter().position(|m| m == name)
    }

    /// The id the files give configuration `config`. Panics when `config`
    /// is not below `len()`, like slice indexing.
    pub fn config_id(&self, config: usize) -> i64 {
        self.ids[config]
    }

    /// The index of the configuration with file id `id`.
    pub fn index_of(&self, id: i64) -> Option<usize> {
        self.ids.iter().position(|&i| i == id)
    }

    /// Configuration `config`'s parameter values, in `param_names` order.
    pub fn param_values(&self, config: usize) -> &[f64] {
        let n = self.param_names.len();
        &self.params[config * n..(config + 1) * n]
    }

    /// The number of steps of `config`'s curve (0 for an unknown config).
    pub fn steps(&self, config: usize) -> u32 {
        self.curves
            .get(config)
            .map_or(0, |c| (c.len() / self.metric_names.len()) as u32)
    }

    /// One metric of `config` at `step` (from 1), by its index in
    /// `metric_names`: the allocation-free form of [`Table::metrics`].
    pub fn metric(&self, config: usize, step: u32, metric: usize) -> Option<f64> {
        let width = self.metric_names.len();
        if step == 0 || metric >= width {
            return None;
        }
        self.curves
            .get(config)?
            .get((step as usize - 1) * width + metric)
            .copied()
    }

    /// Every metric column of `config` at `step` (from 1), the time column
    /// included; None past the end of its curve.
    pub fn metrics(&self, config: usize, step: u32) -> Option<MetricValues> {
        let width = self.metric_names.len();
        if step == 0 {
            return None;
        }
        let start = (step as usize - 1) * width;
        let row = self.curves.get(config)?.get(start..start + width)?;
        Some(
            self.metric_names
                .iter()
                .cloned()
                .zip(row.iter().copied())
                .collect(),
        )
    }

    /// The seconds step `step` of `config` costs by the [`DEFAULT_TIME_COLUMN`];
    /// 0 when the table has no such column. See [`Table::step_cost_by`].
    pub fn step_cost(&self, config: usize, step: u32) -> f64 {
        self.metric_index(DEFAULT_TIME_COLUMN)
            .map_or(0.0, |t| self.step_cost_by(t, config, step))
    }

    /// The seconds step `step` of `config` costs, from the cumulative time
    /// column at index `time`: `max(0, time[step] - max(time[1..step]))`.
    /// Surrogate tables' cumulative times sometimes dip; charging only what
    /// exceeds the running maximum never charges negative time and still
    /// sums to the curve's maximum. 0 outside the curve.
    pub fn step_cost_by(&self, time: usize, config: usize, step: u32) -> f64 {
        let Some(now) = self.metric(config, step, time) else {
            return 0.0;
        };
        let before = (1..step)
            .filter_map(|s| self.metric(config, s, time))
            .fold(0.0_f64, f64::max);
        (now - before).max(0.0)
    }

    /// The best value of `metric` at the last step of each configuration's
    /// curve: the reference for regret. None for an unknown metric.
    pub fn best_final(&self, metric: &str, direction: Direction) -> Option<f64> {
        let m = self.metric_index(metric)?;
        (0..self.len())
            .filter_map(|c| self.metric(c, self.steps(c), m))
            .filter(|v| !v.is_nan())
            .reduce(|best, v| if direction.better(v, best) { v } else { best })
    }

    /// The configuration nearest to `params` in quantile space (module
    /// doc); ties go to the lower config id. Parameters are matched to the
    /// configs file's columns by name; any others are ignored.
    pub fn nearest(&self, params: &Params) -> Result<usize, TableError> {
        let point = self
            .param_names
            .iter()
            .zip(&self.cdfs)
            .map(|(name, cdf)| {
                let value = params
                    .get(name)
                    .ok_or_else(|| TableError::MissingParam(name.clone()))?;
                let v = value.as_f64().ok_or_else(|| TableError::NotNumeric {
                    name: name.clone(),
                    value: value.to_string(),
                })?;
                Ok(cdf.quantile(v))
            })
            .collect::<Result<Vec<f64>, TableError>>()?;
        let n = point.len();
        let mut best = (f64::INFINITY, i64::MAX, 0);
        for (c, q) in self.quantiles.chunks_exact(n).enumerate() {
            let d: f64 = q.iter().zip(&point).map(|(a, b)| (a - b) * (a - b)).sum();
            let id = self.ids[c];
            if d < best.0 || (d == best.0 && id < best.1) {
                best = (d, id, c);
            }
        }
        Ok(best.2)
    }
}

/// A CSV file of numbers, read whole: its header and its data lines.
struct Csv {
    path: PathBuf,
    text: String,
    header: Vec<String>,
}

impl Csv {
    fn read(path: &Path) -> Result<Csv, TableError> {
        let io = |source| TableError::Io {
            path: path.display().to_string(),
            source,
        };
        let raw = std::fs::read(path).map_err(io)?;
        let text = if path.extension().is_some_and(|e| e == "gz") {
            let mut text = String::with_capacity(raw.len() * 5);
            GzDecoder::new(raw.as_slice())
                .read_to_string(&mut text)
                .map_err(io)?;
            text
        } else {
            String::from_utf8(raw)
                .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?
        };
        let header_line = text.lines().next().unwrap_or("");
        let header: Vec<String> = header_line
            .split(',')
            .map(|c| c.trim().to_string())
            .collect();
        let mut csv = Csv {
            path: path.to_path_buf(),
            text: String::new(),
            header,
        };
        if csv.header.len() < 2 || csv.header.iter().any(String::is_empty) {
            return Err(csv.error(1, "needs a header of at least two named columns"));
        }
        csv.text = text;
        Ok(csv)
    }

    /// The data lines as (line number, fields), blank lines skipped; a line
    /// with the wrong number of fields is an error.
    fn rows(&self) -> impl Iterator<Item = Result<(usize, Vec<&str>), TableError>> + '_ {
        let width = self.header.len();
        self.text
            .lines()
            .enumerate()
            .skip(1)
            .filter(|(_, l)| !l.trim().is_empty())
            .map(move |(i, l)| {
                let fields: Vec<&str> = l.split(',').map(str::trim).collect();
                if fields.len() == width {
                    Ok((i + 1, fields))
                } else {
                    Err(self.error(
                        i + 1,
                        format!("{} fields where the header has {width}", fields.len()),
                    ))
                }
            })
    }

    fn error(&self, line: usize, reason: impl Into<String>) -> TableError {
        TableError::Format {
            path: self.path.display().to_string(),
            line,
            reason: reason.into(),
        }
    }

    fn number(&self, line: usize, column: &str, field: &str) -> Result<f64, TableError> {
        field.parse::<f64>().map_err(|_| {
            self.error(
                line,
                format!("column `{column}` must be numeric, got `{field}`"),
            )
        })
    }

    /// A config id: an integer (`17`, or `17.0` as a float writer puts it).
    fn id(&self, line: usize, field: &str) -> Result<i64, TableError> {
        if let Ok(id) = field.parse::<i64>() {
            return Ok(id);
        }
        match field.parse::<f64>() {
            Ok(v) if v.fract() == 0.0 && v.abs() < 9e15 => Ok(v as i64),
            _ => Err(self.error(
                line,
                format!(
                    "column `{}` must hold integer config ids, got `{field}`",
                    self.header[0]
                ),
            )),
        }
    }
}
