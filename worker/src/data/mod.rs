//! Data sets for the built-in trainers: the named IDX sets (Fashion-MNIST,
//! MNIST), any IDX folder, CSV files and two synthetic sets that need no
//! files at all.
//!
//! A data set is loaded once per worker process and shared by every slot
//! through [`DataCache`]. `tch::Tensor` is `Send` but not `Sync`, so a shared
//! `Arc<Dataset>` cannot hold tensors; it holds the normalised values as plain
//! vectors instead, and each trial builds its own tensors from them
//! ([`Dataset::train_tensors`], [`Dataset::val_tensors`]). That is one copy per
//! trial, small next to the training itself.
//!
//! # CSV files
//!
//! `csv:PATH` reads a CSV file with a header row; options follow the path
//! after a `?`, as `KEY=VALUE` pairs joined by `&`:
//!
//! ```text
//! csv:data/houses.csv?label=price&task=regression&categorical=city,kind
//! csv:iris.csv?split_column=fold&ignore=id
//! ```
//!
//! - `label=COLUMN`: the target column (default: the one named `label`, in
//!   any case, else the last column that is neither ignored nor the split
//!   column).
//! - `task=classification` (default) or `task=regression`. Classification
//!   labels are the distinct values of the label column, integers or any
//!   text, numbered `0..k` in sorted order (numerically when every label is
//!   a number); [`Task::Classification`] keeps their names. Regression
//!   targets are numbers, kept as `f32`.
//! - `val_fraction=F` (`0 < F < 1`, default 0.2): the share of rows held out
//!   for validation, drawn with the data seed and stratified by class for
//!   classification.
//! - `split_column=COLUMN`: the split is given per row instead, by a column
//!   whose values are `train`, `val` (or `validation`) and `test` (any
//!   case); `test` rows form a test split ([`Dataset::test_tensors`]). Not
//!   together with `val_fraction`.
//! - `categorical=A,B,...`: the columns to one-hot encode; every other
//!   feature column must then hold numbers. Without this option a column is
//!   categorical when its values are not numbers; a column that is mostly
//!   numbers with a few values that are not is an error naming the first
//!   such value (a typo, not a category) unless it is listed here.
//! - `ignore=A,B,...`: columns that are not features (ids, free text).
//! - `delimiter=C`: the field separator, one character (`;`, `|`) or `tab`
//!   (default `,`).
//!
//! Fields may be double-quoted (`"a, b"`, `"say ""hi"""`). Numeric feature
//! columns are standardised with the training rows' mean and standard
//! deviation (a constant column becomes 0); a missing value (an empty field,
//! `NA`, `N/A`, `NaN`, `null` or `?`) is imputed with the training mean, so
//! it is 0 after standardisation. Categorical columns are one-hot encoded
//! with the categories seen in training, in sorted order, named
//! `column=value` ([`Dataset::feature_names`]); a category not seen in
//! training, or a missing value, encodes as all zeros. [`check_csv_spec`]
//! checks a spec and the file's header without reading the rows.
//!
//! # Augmentation and class balancing
//!
//! [`augment`] applies random crops, shifts and horizontal flips to a batch
//! of images; [`balanced_rows`] over- or undersamples the training rows so
//! every class is equally frequent. Both are pure functions of their inputs
//! and a seed, for trainers to call per epoch or per batch.
//!
//! Nothing here panics on bad input: a damaged file is a [`DataError`] that
//! names the file and what was expected.

mod augment;
mod balance;
mod csv;

pub use augment::{AUGMENT_SETTINGS, Augment, augment, augment_with_fill, parse_augment};
pub use balance::{Balance, balanced_rows, parse_balance};
pub use csv::{CsvOptions, CsvSplit, check_csv_spec};

use flate2::read::MultiGzDecoder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use tch::Tensor;

/// The seed the trainers pass to [`DataCache::get`]. It is fixed, never a
/// trial's seed, so that every trial of every study sees the same synthetic
/// points and the same CSV split and their metrics can be compared.
pub const DATA_SEED: u64 = 0x00da_7a5e_ed00_0001;

/// The spec forms [`DataSpec::parse`] accepts, for error messages and help.
pub const ACCEPTED_FORMS: &str =
    "fashion-mnist, mnist, idx:PATH, csv:PATH[?OPTIONS], synthetic:spirals or synthetic:blobs";

/// The options `csv:PATH` takes, for error messages and help.
pub const CSV_SYNTAX: &str = "csv:PATH takes options as csv:PATH?KEY=VALUE&KEY=VALUE with keys \
     label=COLUMN, task=classification|regression, \
     val_fraction=F (0 < F < 1, default 0.2) or split_column=COLUMN (values train, val or validation, test), \
     categorical=A,B,... (one-hot; default: the columns that are not numbers), \
     ignore=A,B,..., delimiter=C (one character or `tab`; default `,`)";

/// The data sets known by name, looked up in the folders of [`search_dirs`].
pub const NAMED_SETS: &[&str] = &["fashion-mnist", "mnist"];

/// The four files of an IDX data set, each plain or gzip-compressed (`.gz`).
const IDX_TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
const IDX_TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
const IDX_VAL_IMAGES: &str = "t10k-images-idx3-ubyte";
const IDX_VAL_LABELS: &str = "t10k-labels-idx1-ubyte";
const IDX_FILES: [&str; 4] = [
    IDX_TRAIN_IMAGES,
    IDX_TRAIN_LABELS,
    IDX_VAL_IMAGES,
    IDX_VAL_LABELS,
];

/// More classes than this is almost surely a mislabelled column (an id, a
/// price), and would make an absurdly wide output layer.
const MAX_CLASSES: i64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("unknown data set `{0}`: expected {ACCEPTED_FORMS}")]
    UnknownSpec(String),
    /// A known form (`csv:PATH?...`) whose options do not parse.
    #[error("bad data set spec `{spec}`: {reason}; {CSV_SYNTAX}")]
    BadSpec { spec: String, reason: String },
    /// A named set is in none of the folders searched.
    #[error("{name} not found: {detail}")]
    NotFound {
        name: String,
        /// The folders searched, in order.
        looked: Vec<PathBuf>,
        /// Where it looked and how to install it, as one line.
        detail: String,
    },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is there but its content is not what the format needs.
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

impl DataError {
    fn invalid(path: &Path, reason: impl Into<String>) -> Self {
        DataError::Invalid {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A data set spec, parsed but not loaded: lets a caller check a study's
/// `trainer.dataset` without reading any file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DataSpec {
    /// One of [`NAMED_SETS`].
    Named(&'static str),
    /// A folder holding the four IDX files.
    Idx(PathBuf),
    /// A CSV file with a header row, read with the default options.
    Csv(PathBuf),
    /// A CSV file read with options other than the defaults
    /// (`csv:PATH?KEY=VALUE&...`). A spec whose options are all defaults
    /// parses as [`DataSpec::Csv`], so each file and reading has one form.
    CsvWith {
        path: PathBuf,
        options: CsvOptions,
    },
    Spirals,
    Blobs,
}

impl DataSpec {
    pub fn parse(spec: &str) -> Result<Self, DataError> {
        let trimmed = spec.trim();
        if let Some(name) = NAMED_SETS.iter().find(|n| **n == trimmed) {
            return Ok(DataSpec::Named(name));
        }
        let unknown = || DataError::UnknownSpec(spec.to_string());
        if let Some(path) = trimmed.strip_prefix("idx:") {
            return if path.is_empty() {
                Err(unknown())
            } else {
                Ok(DataSpec::Idx(PathBuf::from(path)))
            };
        }
        if let Some(rest) = trimmed.strip_prefix("csv:") {
            let (path, query) = match rest.split_once('?') {
                Some((path, query)) => (path, Some(query)),
                None => (rest, None),
            };
            if path.is_empty() {
                return Err(unknown());
            }
            let options = match query {
                None => CsvOptions::default(),
                Some(query) => CsvOptions::parse(query).map_err(|reason| DataError::BadSpec {
                    spec: spec.to_string(),
                    reason,
                })?,
            };
            let path = PathBuf::from(path);
            return Ok(if options == CsvOptions::default() {
                DataSpec::Csv(path)
            } else {
                DataSpec::CsvWith { path, options }
            });
        }
        match trimmed {
            "synthetic:spirals" => Ok(DataSpec::Spirals),
            "synthetic:blobs" => Ok(DataSpec::Blobs),
            _ => Err(unknown()),
        }
    }

    /// The file and options of a `csv:` spec (the defaults for a plain
    /// `csv:PATH`); `None` for the other forms.
    pub fn csv(&self) -> Option<(&Path, CsvOptions)> {
        match self {
            DataSpec::Csv(path) => Some((path, CsvOptions::default())),
            DataSpec::CsvWith { path, options } => Some((path, options.clone())),
            _ => None,
        }
    }

    /// Whether the seed changes the data (random draws or a random split).
    /// The cache keys only those specs by seed, so a file set is never read
    /// twice just because two callers passed different seeds.
    fn uses_seed(&self) -> bool {
        matches!(
            self,
            DataSpec::Csv(_) | DataSpec::CsvWith { .. } | DataSpec::Spirals | DataSpec::Blobs
        )
    }
}

impl fmt::Display for DataSpec {
    /// The canonical form, which parses back to the same spec: options in a
    /// fixed order, defaults left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSpec::Named(name) => f.write_str(name),
            DataSpec::Idx(p) => write!(f, "idx:{}", p.display()),
            DataSpec::Csv(p) => write!(f, "csv:{}", p.display()),
            DataSpec::CsvWith { path, options } => {
                write!(f, "csv:{}?{options}", path.display())
            }
            DataSpec::Spirals => f.write_str("synthetic:spirals"),
            DataSpec::Blobs => f.write_str("synthetic:blobs"),
        }
    }
}

/// What a data set's targets are, so a trainer can pick its loss and
/// metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    /// Labels are class indices `0..classes.len()`; `classes[i]` names class
    /// `i` (`"0"`, `"1"`, ... for sets whose labels are bare indices).
    Classification { classes: Vec<String> },
    /// Targets are real numbers (`f32`), for a mean squared error.
    Regression,
}

impl Task {
    pub fn is_regression(&self) -> bool {
        matches!(self, Task::Regression)
    }

    /// Class names `"0"` to `"classes - 1"`.
    fn indexed(classes: i64) -> Self {
        Task::Classification {
            classes: (0..classes.max(0)).map(|c| c.to_string()).collect(),
        }
    }
}

/// How an image set's flat feature vectors are laid out: each row is one
/// image, `channels × height × width`, row-major (view a `[n, features]`
/// batch as `[n, channels, height, width]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageShape {
    pub channels: i64,
    pub height: i64,
    pub width: i64,
    /// The value a black pixel has after normalisation: the fill for
    /// [`augment_with_fill`], so padding looks like the images' background.
    pub background: f32,
}

/// The mean and standard deviation of a regression set's training targets,
/// for a trainer that wants to fit standardised targets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TargetStats {
    pub mean: f64,
    /// Population standard deviation; 1 when the targets are constant.
    pub std: f64,
}

/// A data set, normalised, in CPU memory.
///
/// Features are row-major `f32` (`len × features`). For classification the
/// labels are class indices in `0..classes` (`train_y`, `val_y`); for
/// regression those are empty and the targets are `f32`
/// ([`Dataset::train_targets`]). [`Dataset::train_tensors`] and friends
/// return whichever the [`Dataset::task`] has.
pub struct Dataset {
    pub name: String,
    pub features: i64,
    /// The number of classes, the width of a classifier's output layer; 1
    /// for regression (one output).
    pub classes: i64,
    pub train_x: Vec<f32>,
    pub train_y: Vec<i64>,
    pub val_x: Vec<f32>,
    pub val_y: Vec<i64>,
    task: Task,
    feature_names: Vec<String>,
    image: Option<ImageShape>,
    /// Regression targets per split; empty for classification.
    train_t: Vec<f32>,
    val_t: Vec<f32>,
    test_t: Vec<f32>,
    /// The test split: empty when the set has none.
    test_x: Vec<f32>,
    test_y: Vec<i64>,
}

impl fmt::Debug for Dataset {
    /// Sizes only: the values would be megabytes of output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let task = match &self.task {
            Task::Classification { .. } => "classification",
            Task::Regression => "regression",
        };
        f.debug_struct("Dataset")
            .field("name", &self.name)
            .field("task", &task)
            .field("features", &self.features)
            .field("classes", &self.classes)
            .field("train", &self.train_len())
            .field("val", &self.val_len())
            .field("test", &self.test_len())
            .finish()
    }
}

impl Dataset {
    /// A classification set with classes named by their index and features
    /// named `x0`, `x1`, ...: the shape every set had before tasks, test
    /// splits and feature names.
    pub fn classification(
        name: String,
        features: i64,
        classes: i64,
        train_x: Vec<f32>,
        train_y: Vec<i64>,
        val_x: Vec<f32>,
        val_y: Vec<i64>,
    ) -> Self {
        Dataset {
            name,
            features,
            classes,
            train_x,
            train_y,
            val_x,
            val_y,
            task: Task::indexed(classes),
            feature_names: (0..features).map(|i| format!("x{i}")).collect(),
            image: None,
            train_t: Vec::new(),
            val_t: Vec::new(),
            test_t: Vec::new(),
            test_x: Vec::new(),
            test_y: Vec::new(),
        }
    }

    pub fn task(&self) -> &Task {
        &self.task
    }

    pub fn is_regression(&self) -> bool {
        self.task.is_regression()
    }

    /// One name per feature column, in order: the CSV column names, with
    /// one-hot columns named `column=value`; `x0`, `x1`, ... for synthetic
    /// sets and `pixel_ROW_COL` for images.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    /// How the features are laid out as images, for IDX sets.
    pub fn image_shape(&self) -> Option<ImageShape> {
        self.image
    }

    pub fn train_len(&self) -> usize {
        if self.is_regression() {
            self.train_t.len()
        } else {
            self.train_y.len()
        }
    }

    pub fn val_len(&self) -> usize {
        if self.is_regression() {
            self.val_t.len()
        } else {
            self.val_y.len()
        }
    }

    /// The number of test examples: 0 when the set has no test split.
    pub fn test_len(&self) -> usize {
        if self.is_regression() {
            self.test_t.len()
        } else {
            self.test_y.len()
        }
    }

    /// Regression targets of the training split (empty for classification).
    pub fn train_targets(&self) -> &[f32] {
        &self.train_t
    }

    /// Regression targets of the validation split (empty for
    /// classification).
    pub fn val_targets(&self) -> &[f32] {
        &self.val_t
    }

    /// Regression targets of the test split (empty for classification or
    /// without a test split).
    pub fn test_targets(&self) -> &[f32] {
        &self.test_t
    }

    /// The test split's features, row-major (empty without a test split).
    pub fn test_features(&self) -> &[f32] {
        &self.test_x
    }

    /// The test split's class indices (empty for regression or without a
    /// test split).
    pub fn test_labels(&self) -> &[i64] {
        &self.test_y
    }

    /// The training targets' mean and standard deviation, for regression.
    pub fn target_stats(&self) -> Option<TargetStats> {
        if !self.is_regression() || self.train_t.is_empty() {
            return None;
        }
        let n = self.train_t.len() as f64;
        let mean = self.train_t.iter().map(|&t| f64::from(t)).sum::<f64>() / n;
        let var = self
            .train_t
            .iter()
            .map(|&t| (f64::from(t) - mean).powi(2))
            .sum::<f64>()
            / n;
        let std = if var > 1e-24 { var.sqrt() } else { 1.0 };
        Some(TargetStats { mean, std })
    }

    /// The first `limit` training examples (all when `None` or larger than
    /// the set) as `([n, features] f32, [n])` tensors on `device`; the
    /// targets are `i64` class indices for classification and `f32` values
    /// for regression.
    pub fn train_tensors(
        &self,
        limit: Option<usize>,
        device: tch::Device,
    ) -> Result<(Tensor, Tensor), tch::TchError> {
        let n = limit.map_or(self.train_len(), |l| l.min(self.train_len()));
        self.tensors(&self.train_x, &self.train_y, &self.train_t, n, device)
    }

    /// The validation set as `([n, features] f32, [n])` tensors (targets as
    /// in [`Dataset::train_tensors`]).
    pub fn val_tensors(&self, device: tch::Device) -> Result<(Tensor, Tensor), tch::TchError> {
        self.tensors(
            &self.val_x,
            &self.val_y,
            &self.val_t,
            self.val_len(),
            device,
        )
    }

    /// The test set as `([n, features] f32, [n])` tensors (targets as in
    /// [`Dataset::train_tensors`]), or `None` when the set has no test split.
    pub fn test_tensors(
        &self,
        device: tch::Device,
    ) -> Result<Option<(Tensor, Tensor)>, tch::TchError> {
        if self.test_len() == 0 {
            return Ok(None);
        }
        self.tensors(
            &self.test_x,
            &self.test_y,
            &self.test_t,
            self.test_len(),
            device,
        )
        .map(Some)
    }

    fn tensors(
        &self,
        x: &[f32],
        labels: &[i64],
        targets: &[f32],
        n: usize,
        device: tch::Device,
    ) -> Result<(Tensor, Tensor), tch::TchError> {
        let d = self.features as usize;
        let xs = Tensor::f_from_slice(&x[..n * d])?
            .f_view([n as i64, self.features])?
            .f_to_device(device)?;
        let ys = if self.is_regression() {
            Tensor::f_from_slice(&targets[..n])?
        } else {
            Tensor::f_from_slice(&labels[..n])?
        };
        Ok((xs, ys.f_to_device(device)?))
    }

    /// Checks the invariants the trainers rely on, so a loader bug or an odd
    /// file is an error here rather than an out-of-range index in libtorch.
    fn checked(self, origin: &Path) -> Result<Self, DataError> {
        let d = self.features as usize;
        if self.features < 1 {
            return Err(DataError::invalid(origin, "no feature columns"));
        }
        if self.train_len() == 0 || self.val_len() == 0 {
            return Err(DataError::invalid(
                origin,
                format!(
                    "needs training and validation examples, has {} and {}",
                    self.train_len(),
                    self.val_len()
                ),
            ));
        }
        if self.train_x.len() != self.train_len() * d
            || self.val_x.len() != self.val_len() * d
            || self.test_x.len() != self.test_len() * d
            || self.feature_names.len() != d
        {
            return Err(DataError::invalid(
                origin,
                "feature and label counts differ",
            ));
        }
        match &self.task {
            Task::Regression => {
                let labels = self.train_y.len() + self.val_y.len() + self.test_y.len();
                if self.classes != 1 || labels != 0 {
                    return Err(DataError::invalid(
                        origin,
                        "a regression set has one output and no class labels",
                    ));
                }
                if self
                    .train_t
                    .iter()
                    .chain(&self.val_t)
                    .chain(&self.test_t)
                    .any(|t| !t.is_finite())
                {
                    return Err(DataError::invalid(
                        origin,
                        "a regression target is not a finite number",
                    ));
                }
            }
            Task::Classification { classes } => {
                if self.classes < 2 || self.classes > MAX_CLASSES {
                    return Err(DataError::invalid(
                        origin,
                        format!(
                            "needs between 2 and {MAX_CLASSES} classes, found {}",
                            self.classes
                        ),
                    ));
                }
                if classes.len() as i64 != self.classes {
                    return Err(DataError::invalid(
                        origin,
                        format!("{} class names for {} classes", classes.len(), self.classes),
                    ));
                }
                let targets = self.train_t.len() + self.val_t.len() + self.test_t.len();
                if targets != 0 {
                    return Err(DataError::invalid(
                        origin,
                        "a classification set has no regression targets",
                    ));
                }
                if let Some(bad) = self
                    .train_y
                    .iter()
                    .chain(&self.val_y)
                    .chain(&self.test_y)
                    .find(|&&y| y < 0 || y >= self.classes)
                {
                    return Err(DataError::invalid(
                        origin,
                        format!("label {bad} is outside 0..{}", self.classes),
                    ));
                }
            }
        }
        Ok(self)
    }
}

/// Loads each data set once per process and shares it between slots.
///
/// The map lock is held only to find or insert a key's entry; loading holds
/// that entry's own lock, so concurrent callers for the same spec wait for the
/// one load instead of reading the files twice, while other specs load in
/// parallel. A failed load is not cached: the next caller tries again (the
/// user may have installed the data set in the meantime).
#[derive(Debug, Default)]
pub struct DataCache {
    entries: Mutex<HashMap<String, CacheEntry>>,
}

/// One spec's slot: empty until its first successful load.
type CacheEntry = Arc<Mutex<Option<Arc<Dataset>>>>;

impl DataCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The data set `spec` names. `seed` fixes its random parts (synthetic
    /// draws, the CSV split); the trainers pass [`DATA_SEED`].
    pub fn get(&self, spec: &str, seed: u64) -> Result<Arc<Dataset>, DataError> {
        let parsed = DataSpec::parse(spec)?;
        let key = if parsed.uses_seed() {
            format!("{parsed}#{seed}")
        } else {
            parsed.to_string()
        };
        let entry = {
            let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(entries.entry(key).or_default())
        };
        // A poisoned entry only means a loader panicked before storing
        // anything; the `Option` is still valid.
        let mut slot = entry.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(data) = slot.as_ref() {
            return Ok(Arc::clone(data));
        }
        let data = Arc::new(load_spec(&parsed, seed)?);
        *slot = Some(Arc::clone(&data));
        Ok(data)
    }
}

/// Loads a data set without caching.
pub fn load(spec: &str, seed: u64) -> Result<Dataset, DataError> {
    load_spec(&DataSpec::parse(spec)?, seed)
}

fn load_spec(spec: &DataSpec, seed: u64) -> Result<Dataset, DataError> {
    let name = spec.to_string();
    match spec {
        DataSpec::Named(set) => {
            let dir = resolve_named(set)?;
            load_idx_dir(&dir, name, Some(10))
        }
        DataSpec::Idx(dir) => load_idx_dir(dir, name, None),
        DataSpec::Csv(path) => csv::load(path, &CsvOptions::default(), name, seed),
        DataSpec::CsvWith { path, options } => csv::load(path, options, name, seed),
        DataSpec::Spirals => Ok(spirals(seed, name)),
        DataSpec::Blobs => Ok(blobs(seed, name)),
    }
}

/// The folders searched for a named set, in order: `$HPO_DATASETS/<name>`
/// (when set), `/usr/share/datasets/<name>` (where Debian's `dataset-*`
/// packages install) and `./data/<name>`.
pub fn search_dirs(name: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(root) = std::env::var_os("HPO_DATASETS").filter(|v| !v.is_empty()) {
        dirs.push(PathBuf::from(root).join(name));
    }
    dirs.push(Path::new("/usr/share/datasets").join(name));
    dirs.push(Path::new("./data").join(name));
    dirs
}

/// The folder holding a named set (one of [`NAMED_SETS`]): the first of
/// [`search_dirs`] that has all four IDX files.
pub fn resolve_named(name: &str) -> Result<PathBuf, DataError> {
    if !NAMED_SETS.contains(&name) {
        return Err(DataError::UnknownSpec(name.to_string()));
    }
    resolve_in(name, search_dirs(name))
}

fn resolve_in(name: &str, dirs: Vec<PathBuf>) -> Result<PathBuf, DataError> {
    let mut notes = Vec::new();
    for dir in &dirs {
        if !dir.is_dir() {
            notes.push(dir.display().to_string());
            continue;
        }
        match missing_idx_file(dir) {
            None => return Ok(dir.clone()),
            Some(file) => notes.push(format!("{} (no {file}[.gz])", dir.display())),
        }
    }
    let mut detail = format!("looked in {}", notes.join(", "));
    if std::env::var_os("HPO_DATASETS").is_none_or(|v| v.is_empty()) {
        detail.push_str(" (HPO_DATASETS is not set)");
    }
    if name == "fashion-mnist" {
        detail.push_str("; install Debian's dataset-fashion-mnist or set HPO_DATASETS");
    } else {
        detail.push_str(&format!(
            "; set HPO_DATASETS to a folder holding {name}/ with the four IDX files"
        ));
    }
    Err(DataError::NotFound {
        name: name.to_string(),
        looked: dirs,
        detail,
    })
}

fn missing_idx_file(dir: &Path) -> Option<&'static str> {
    IDX_FILES
        .iter()
        .copied()
        .find(|f| idx_file(dir, f).is_none())
}

/// `dir/stem` if present, else `dir/stem.gz`.
fn idx_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    let plain = dir.join(stem);
    if plain.is_file() {
        return Some(plain);
    }
    let gz = dir.join(format!("{stem}.gz"));
    gz.is_file().then_some(gz)
}

/// Reads a file whole, decompressing it when it is gzip data (by its `.gz`
/// name or its magic bytes, so a misnamed file still loads).
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let named_gz = path.extension().is_some_and(|e| e == "gz");
    if !named_gz && !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4));
    MultiGzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| DataError::invalid(path, format!("damaged or truncated gzip data ({e})")))?;
    Ok(out)
}

/// An IDX file of unsigned bytes: its dimensions and its data.
struct Idx {
    dims: Vec<usize>,
    data: Vec<u8>,
}

/// Parses an IDX file of unsigned bytes (type code 0x08) with `want_dims`
/// dimensions: magic `00 00 08 <dims>`, then each dimension as a big-endian
/// u32, then the values.
fn read_idx(path: &Path, want_dims: u8) -> Result<Idx, DataError> {
    let mut bytes = read_maybe_gz(path)?;
    let expected_magic = 0x0800 | u32::from(want_dims);
    if bytes.len() < 4 {
        return Err(DataError::invalid(
            path,
            format!("too short for an IDX header ({} bytes)", bytes.len()),
        ));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if magic != expected_magic {
        return Err(DataError::invalid(
            path,
            format!(
                "bad IDX magic 0x{magic:08x}: expected 0x{expected_magic:08x} (unsigned bytes, {want_dims} dimension(s))"
            ),
        ));
    }
    let header = 4 + 4 * usize::from(want_dims);
    if bytes.len() < header {
        return Err(DataError::invalid(
            path,
            format!("IDX header cut short: {} of {header} bytes", bytes.len()),
        ));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let declared = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| DataError::invalid(path, format!("IDX dimensions {dims:?} overflow")))?;
    let found = bytes.len() - header;
    if found != declared {
        return Err(DataError::invalid(
            path,
            format!("IDX dimensions {dims:?} need {declared} data bytes, found {found}"),
        ));
    }
    bytes.drain(..header);
    Ok(Idx { dims, data: bytes })
}

/// Images and labels of one split of an IDX set.
fn read_idx_split(dir: &Path, images: &str, labels: &str) -> Result<(Idx, Idx), DataError> {
    let path_of = |stem: &str| {
        idx_file(dir, stem).ok_or_else(|| {
            DataError::invalid(dir, format!("no {stem} or {stem}.gz in this folder"))
        })
    };
    let images_path = path_of(images)?;
    let labels_path = path_of(labels)?;
    let x = read_idx(&images_path, 3)?;
    let y = read_idx(&labels_path, 1)?;
    if x.dims[0] != y.dims[0] {
        return Err(DataError::invalid(
            dir,
            format!(
                "{images} holds {} images but {labels} holds {} labels",
                x.dims[0], y.dims[0]
            ),
        ));
    }
    Ok((x, y))
}

/// Loads an IDX folder. `classes` is known for the named sets; otherwise it
/// is one more than the largest label.
fn load_idx_dir(dir: &Path, name: String, classes: Option<i64>) -> Result<Dataset, DataError> {
    if !dir.is_dir() {
        return Err(DataError::invalid(
            dir,
            "not a folder: idx:PATH needs a folder with the four IDX files",
        ));
    }
    let (train_x, train_y) = read_idx_split(dir, IDX_TRAIN_IMAGES, IDX_TRAIN_LABELS)?;
    let (val_x, val_y) = read_idx_split(dir, IDX_VAL_IMAGES, IDX_VAL_LABELS)?;
    if train_x.dims[1..] != val_x.dims[1..] {
        return Err(DataError::invalid(
            dir,
            format!(
                "training images are {:?} but validation images are {:?}",
                &train_x.dims[1..],
                &val_x.dims[1..]
            ),
        ));
    }
    let features = train_x.dims[1] * train_x.dims[2];
    let largest = train_y
        .data
        .iter()
        .chain(&val_y.data)
        .copied()
        .max()
        .unwrap_or(0);
    let classes = classes.unwrap_or(i64::from(largest) + 1);

    // Scale to 0..1, then standardise with the training pixels' mean and
    // standard deviation (one pair for all pixels: per-pixel statistics
    // divide by zero on the always-black border). A 256-entry table does
    // both in one pass, and a histogram gives the statistics exactly.
    let mut histogram = [0u64; 256];
    for &b in &train_x.data {
        histogram[usize::from(b)] += 1;
    }
    let count = train_x.data.len().max(1) as f64;
    let mean = histogram
        .iter()
        .enumerate()
        .map(|(v, &n)| v as f64 / 255.0 * n as f64)
        .sum::<f64>()
        / count;
    let var = histogram
        .iter()
        .enumerate()
        .map(|(v, &n)| (v as f64 / 255.0 - mean).powi(2) * n as f64)
        .sum::<f64>()
        / count;
    let std = if var > 1e-12 { var.sqrt() } else { 1.0 };
    let table: Vec<f32> = (0..256)
        .map(|v| ((v as f64 / 255.0 - mean) / std) as f32)
        .collect();
    let normalise = |bytes: &[u8]| bytes.iter().map(|&b| table[usize::from(b)]).collect();
    let labels = |bytes: &[u8]| bytes.iter().map(|&b| i64::from(b)).collect();

    let (height, width) = (train_x.dims[1], train_x.dims[2]);
    let mut set = Dataset::classification(
        name,
        features as i64,
        classes,
        normalise(&train_x.data),
        labels(&train_y.data),
        normalise(&val_x.data),
        labels(&val_y.data),
    );
    set.feature_names = (0..height)
        .flat_map(|r| (0..width).map(move |c| format!("pixel_{r}_{c}")))
        .collect();
    set.image = Some(ImageShape {
        channels: 1,
        height: height as i64,
        width: width as i64,
        background: table[0],
    });
    set.checked(dir)
}

/// Standardises each feature column to zero mean and unit variance using the
/// training rows' statistics only (the validation rows must not leak into
/// them). A constant column is only centred.
fn standardise_columns(train: &mut [f32], val: &mut [f32], features: usize) {
    let rows = (train.len() / features).max(1) as f64;
    let mut mean = vec![0f64; features];
    let mut var = vec![0f64; features];
    for row in train.chunks_exact(features) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += f64::from(v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= rows);
    for row in train.chunks_exact(features) {
        for ((s, &v), m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (f64::from(v) - m).powi(2);
        }
    }
    let scale: Vec<f64> = var
        .iter()
        .map(|s| {
            let sd = (s / rows).sqrt();
            if sd > 1e-12 { 1.0 / sd } else { 1.0 }
        })
        .collect();
    for row in train
        .chunks_exact_mut(features)
        .chain(val.chunks_exact_mut(features))
    {
        for ((v, m), s) in row.iter_mut().zip(&mean).zip(&scale) {
            *v = ((f64::from(*v) - m) * s) as f32;
        }
    }
}

/// A standard normal draw (Box-Muller): `rand` 0.8 has no normal
/// distribution without `rand_distr`, and one is all this needs.
fn normal(rng: &mut StdRng) -> f64 {
    // 1 - U lies in (0, 1], so the logarithm is finite.
    let u1: f64 = 1.0 - rng.r#gen::<f64>();
    let u2: f64 = rng.r#gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Splits generated examples: the first `n_train` rows train, the rest
/// validate. Generators interleave the classes, so any prefix (the
/// `train_subset` knob) is balanced.
fn synthetic(
    name: String,
    features: usize,
    classes: i64,
    n_train: usize,
    mut x: Vec<f32>,
    y: Vec<i64>,
) -> Dataset {
    let mut val_x = x.split_off(n_train * features);
    let mut train_x = x;
    let mut train_y = y;
    let val_y = train_y.split_off(n_train);
    standardise_columns(&mut train_x, &mut val_x, features);
    Dataset::classification(
        name,
        features as i64,
        classes,
        train_x,
        train_y,
        val_x,
        val_y,
    )
}

/// Three interleaved spirals in the plane, 1000 points each (2400 train,
/// 600 validation): small and fast, yet far from linearly separable, so
/// depth and width show. The angular noise blurs the arms where they are
/// close (near the centre), which keeps 100% out of reach.
fn spirals(seed: u64, name: String) -> Dataset {
    const PER_CLASS: usize = 1000;
    const CLASSES: usize = 3;
    let mut rng = StdRng::seed_from_u64(seed);
    let n = PER_CLASS * CLASSES;
    let mut x = Vec::with_capacity(n * 2);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % CLASSES;
        let t: f64 = rng.gen_range(0.05..1.0);
        let angle = class as f64 * std::f64::consts::TAU / CLASSES as f64
            + t * 1.5 * std::f64::consts::TAU
            + 0.25 * normal(&mut rng);
        x.push((t * angle.cos()) as f32);
        x.push((t * angle.sin()) as f32);
        y.push(class as i64);
    }
    synthetic(name, 2, CLASSES as i64, n * 4 / 5, x, y)
}

/// Ten classes of gaussian clusters in 64 dimensions, 12000 points (10000
/// train, 2000 validation), the quickstart's stand-in for Fashion-MNIST.
///
/// Each class is a mixture of four clusters whose centres are scattered at
/// random, so the classes are not linearly separable and an MLP's width and
/// learning rate matter; the clusters overlap enough that even a good model
/// stays short of 100%. Tuned so that, in 4 epochs, 8 hidden units reach
/// about 63%, 32 units about 86% and 128-512 units with a good learning
/// rate about 92%.
fn blobs(seed: u64, name: String) -> Dataset {
    const CLASSES: usize = 10;
    const CLUSTERS_PER_CLASS: usize = 4;
    const FEATURES: usize = 64;
    const N: usize = 12_000;
    const CENTRE_SPREAD: f64 = 0.6;
    let mut rng = StdRng::seed_from_u64(seed);
    let centres: Vec<f64> = (0..CLASSES * CLUSTERS_PER_CLASS * FEATURES)
        .map(|_| CENTRE_SPREAD * normal(&mut rng))
        .collect();
    let mut x = Vec::with_capacity(N * FEATURES);
    let mut y = Vec::with_capacity(N);
    for i in 0..N {
        let class = i % CLASSES;
        let cluster = class * CLUSTERS_PER_CLASS + rng.gen_range(0..CLUSTERS_PER_CLASS);
        let centre = &centres[cluster * FEATURES..(cluster + 1) * FEATURES];
        x.extend(centre.iter().map(|c| (c + normal(&mut rng)) as f32));
        y.push(class as i64);
    }
    synthetic(name, FEATURES, CLASSES as i64, 10_000, x, y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_named_set_lists_the_folders_and_the_fix() {
        let tmp = std::env::temp_dir().join("hpo-data-test-nowhere");
        let err = resolve_in("fashion-mnist", vec![tmp.join("fashion-mnist")])
            .expect_err("nothing is there");
        let msg = err.to_string();
        assert!(
            msg.starts_with("fashion-mnist not found: looked in "),
            "{msg}"
        );
        assert!(msg.contains("hpo-data-test-nowhere/fashion-mnist"), "{msg}");
        assert!(msg.contains("dataset-fashion-mnist"), "{msg}");
    }

    #[test]
    fn specs_parse_and_print_back() {
        for spec in [
            "fashion-mnist",
            "mnist",
            "idx:/a/b",
            "csv:x.csv",
            "csv:x.csv?label=y&task=regression&split_column=fold&ignore=id,name",
            "csv:x.csv?val_fraction=0.3&categorical=a,b&delimiter=tab",
            "synthetic:spirals",
            "synthetic:blobs",
        ] {
            let parsed = DataSpec::parse(spec).expect("a valid spec");
            assert_eq!(parsed.to_string(), spec);
        }
        assert!(DataSpec::parse("idx:").is_err());
        assert!(matches!(
            DataSpec::parse("csv:x.csv?colour=red"),
            Err(DataError::BadSpec { .. })
        ));
        assert!(DataSpec::parse("synthetic:moons").is_err());
    }
}
