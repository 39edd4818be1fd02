//! The CSV reader behind `csv:PATH?OPTIONS`: the options, a small RFC 4180
//! record reader, the split, and the encoding of the feature columns. The
//! [module documentation](super) describes the spec syntax and what each
//! option does.

use super::{DataError, DataSpec, Dataset, MAX_CLASSES, Task};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::BufRead;
use std::path::Path;

/// The share of rows held out for validation when nothing else is said.
const DEFAULT_VAL_FRACTION: f64 = 0.2;

/// More one-hot columns than this from one column is almost surely an id or
/// free text, and would make a huge input layer.
const MAX_CATEGORIES: usize = 1000;

/// The longest header [`check_csv_spec`] reads before giving up (a quote
/// that is never closed would otherwise make it read the whole file).
const MAX_HEADER_BYTES: usize = 1 << 20;

/// The option keys, for the unknown-option error.
const OPTION_KEYS: &str = "label, task, val_fraction, split_column, categorical, ignore, delimiter";

/// How a CSV file's rows are split into training, validation and test.
#[derive(Debug, Clone)]
pub enum CsvSplit {
    /// This share of the rows (`0 < F < 1`) validates, drawn with the data
    /// seed and stratified by class for classification; the rest trains.
    Fraction(f64),
    /// This column names each row's split: `train`, `val` (or `validation`)
    /// or `test`.
    Column(String),
}

impl PartialEq for CsvSplit {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (CsvSplit::Fraction(a), CsvSplit::Fraction(b)) => a.to_bits() == b.to_bits(),
            (CsvSplit::Column(a), CsvSplit::Column(b)) => a == b,
            _ => false,
        }
    }
}

// The fraction is always finite (parsing checks it), so bitwise equality is
// an equivalence.
impl Eq for CsvSplit {}

impl Hash for CsvSplit {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            CsvSplit::Fraction(f) => {
                0u8.hash(state);
                f.to_bits().hash(state);
            }
            CsvSplit::Column(c) => {
                1u8.hash(state);
                c.hash(state);
            }
        }
    }
}

/// The options of a `csv:PATH?KEY=VALUE&...` spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CsvOptions {
    /// The label column; `None`: the column named `label` (any case), else
    /// the last column that is neither ignored nor the split column.
    pub label: Option<String>,
    /// Real-valued targets (`task=regression`) instead of classes.
    pub regression: bool,
    pub split: CsvSplit,
    /// The columns to one-hot encode, every other feature then being
    /// numeric; `None`: detected from the values.
    pub categorical: Option<Vec<String>>,
    /// Columns that are not features.
    pub ignore: Vec<String>,
    /// The field separator (ASCII).
    pub delimiter: char,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            label: None,
            regression: false,
            split: CsvSplit::Fraction(DEFAULT_VAL_FRACTION),
            categorical: None,
            ignore: Vec::new(),
            delimiter: ',',
        }
    }
}

impl CsvOptions {
    /// Parses the part of a spec after the `?`: `KEY=VALUE` pairs joined by
    /// `&`. The error is a reason, without the spec.
    pub fn parse(query: &str) -> Result<Self, String> {
        let mut options = CsvOptions::default();
        let mut seen = BTreeSet::new();
        for pair in query.split('&').filter(|p| !p.trim().is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                format!("option `{}` has no value: expected KEY=VALUE", pair.trim())
            })?;
            let (key, value) = (key.trim(), value.trim());
            if !seen.insert(key) {
                return Err(format!("option `{key}` is given twice"));
            }
            let name = |what: &str| {
                if value.is_empty() {
                    Err(format!("{key} needs {what}"))
                } else {
                    Ok(value.to_string())
                }
            };
            match key {
                "label" => options.label = Some(name("a column name")?),
                "split_column" => options.split = CsvSplit::Column(name("a column name")?),
                "task" => {
                    options.regression = match value.to_ascii_lowercase().as_str() {
                        "classification" => false,
                        "regression" => true,
                        _ => {
                            return Err(format!(
                                "task must be classification or regression, got `{value}`"
                            ));
                        }
                    }
                }
                "val_fraction" => {
                    let fraction = value
                        .parse::<f64>()
                        .ok()
                        .filter(|f| *f > 0.0 && *f < 1.0)
                        .ok_or_else(|| {
                            format!(
                                "val_fraction must be a number between 0 and 1 (both excluded), got `{value}`"
                            )
                        })?;
                    options.split = CsvSplit::Fraction(fraction);
                }
                "categorical" => options.categorical = Some(name_list(value)),
                "ignore" => options.ignore = name_list(value),
                "delimiter" => options.delimiter = parse_delimiter(value)?,
                _ => return Err(format!("unknown option `{key}` (options: {OPTION_KEYS})")),
            }
        }
        if seen.contains("val_fraction") && seen.contains("split_column") {
            return Err(
                "val_fraction and split_column exclude each other: the split is by one or the other"
                    .to_string(),
            );
        }
        Ok(options)
    }
}

/// `a, b,c` as names, empty entries dropped.
fn name_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn parse_delimiter(value: &str) -> Result<char, String> {
    if value.eq_ignore_ascii_case("tab") || value == "\\t" {
        return Ok('\t');
    }
    let mut chars = value.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii_punctuation() && !"\"&=?.-+".contains(c) => Ok(c),
        _ => Err(format!(
            "delimiter must be `tab` or one ASCII punctuation character other than \" & = ? . - +, got `{value}`"
        )),
    }
}

impl fmt::Display for CsvOptions {
    /// The canonical query, defaults left out: what [`CsvOptions::parse`]
    /// reads back to the same options.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(label) = &self.label {
            parts.push(format!("label={label}"));
        }
        if self.regression {
            parts.push("task=regression".to_string());
        }
        match &self.split {
            CsvSplit::Fraction(fraction) if *fraction == DEFAULT_VAL_FRACTION => {}
            CsvSplit::Fraction(fraction) => parts.push(format!("val_fraction={fraction}")),
            CsvSplit::Column(column) => parts.push(format!("split_column={column}")),
        }
        if let Some(columns) = &self.categorical {
            parts.push(format!("categorical={}", columns.join(",")));
        }
        if !self.ignore.is_empty() {
            parts.push(format!("ignore={}", self.ignore.join(",")));
        }
        match self.delimiter {
            ',' => {}
            '\t' => parts.push("delimiter=tab".to_string()),
            c => parts.push(format!("delimiter={c}")),
        }
        f.write_str(&parts.join("&"))
    }
}

/// Checks a data set spec without loading it: for a `csv:` spec, that the
/// options parse, the file is readable, and its header has the label, split,
/// categorical and ignored columns the options name. Reads only the header
/// row. Other specs are only parsed.
pub fn check_csv_spec(spec: &str) -> Result<(), DataError> {
    let parsed = DataSpec::parse(spec)?;
    let Some((path, options)) = parsed.csv() else {
        return Ok(());
    };
    let header = read_header(path, &options)?;
    resolve_columns(path, &header, &options).map(|_| ())
}

/// The header row of a CSV file, reading no further than it.
fn read_header(path: &Path, options: &CsvOptions) -> Result<Vec<String>, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = std::io::BufReader::new(file);
    let mut bytes = Vec::new();
    loop {
        let read = reader
            .read_until(b'\n', &mut bytes)
            .map_err(|e| DataError::io(path, e))?;
        let text = std::str::from_utf8(&bytes).map_err(|_| not_utf8(path))?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let at_end = read == 0;
        match Records::new(text, options.delimiter).next_record() {
            Some(Ok(record)) => {
                return Ok(record.fields.into_iter().map(Cow::into_owned).collect());
            }
            Some(Err(RecordError::Unclosed { .. }))
                if !at_end && bytes.len() < MAX_HEADER_BYTES => {}
            Some(Err(e)) => return Err(DataError::invalid(path, e.to_string())),
            None if at_end => return Err(empty_file(path)),
            None => {}
        }
    }
}

fn not_utf8(path: &Path) -> DataError {
    DataError::invalid(path, "not UTF-8 text: expected a CSV file")
}

fn empty_file(path: &Path) -> DataError {
    DataError::invalid(path, "empty file: expected a header row")
}

/// One record of a CSV file: the line it starts on (1-based) and its
/// fields, trimmed and unquoted.
struct Record<'a> {
    line: usize,
    fields: Vec<Cow<'a, str>>,
}

#[derive(Debug)]
enum RecordError {
    Unclosed { line: usize },
    AfterQuote { line: usize, field: usize },
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Unclosed { line } => {
                write!(f, "line {line}: a quoted field is not closed")
            }
            RecordError::AfterQuote { line, field } => write!(
                f,
                "line {line}: field {field} has text after its closing quote"
            ),
        }
    }
}

/// Reads records one at a time: fields separated by the delimiter, records
/// by newlines (`\n` or `\r\n`); a field in double quotes may hold the
/// delimiter, newlines and doubled quotes (`""`). Blank lines are skipped.
struct Records<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
    delimiter: u8,
}

impl<'a> Records<'a> {
    fn new(text: &'a str, delimiter: char) -> Self {
        // Options only accept ASCII delimiters, so the byte is the char.
        let delimiter = u8::try_from(delimiter).unwrap_or(b',');
        Records {
            text,
            pos: 0,
            line: 1,
            delimiter,
        }
    }

    /// Spaces (and tabs, unless tab separates fields) before or after a
    /// field's quotes.
    fn is_blank(&self, b: u8) -> bool {
        b == b' ' || b == b'\r' || (b == b'\t' && self.delimiter != b'\t')
    }

    fn next_record(&mut self) -> Option<Result<Record<'a>, RecordError>> {
        let bytes = self.text.as_bytes();
        while self.pos < bytes.len() {
            let line = self.line;
            let mut fields: Vec<Cow<'a, str>> = Vec::new();
            let mut quoted = false;
            loop {
                let mut p = self.pos;
                while p < bytes.len() && self.is_blank(bytes[p]) {
                    p += 1;
                }
                if bytes.get(p) == Some(&b'"') {
                    quoted = true;
                    let mut value = String::new();
                    p += 1;
                    loop {
                        let Some(offset) = self.text[p..].find('"') else {
                            self.pos = bytes.len();
                            return Some(Err(RecordError::Unclosed { line }));
                        };
                        let segment = &self.text[p..p + offset];
                        self.line += segment.matches('\n').count();
                        value.push_str(segment);
                        p += offset + 1;
                        if bytes.get(p) == Some(&b'"') {
                            value.push('"');
                            p += 1;
                        } else {
                            break;
                        }
                    }
                    while p < bytes.len() && self.is_blank(bytes[p]) {
                        p += 1;
                    }
                    if p < bytes.len() && bytes[p] != self.delimiter && bytes[p] != b'\n' {
                        let field = fields.len() + 1;
                        self.pos = bytes.len();
                        return Some(Err(RecordError::AfterQuote {
                            line: self.line,
                            field,
                        }));
                    }
                    let trimmed = value.trim();
                    fields.push(if trimmed.len() == value.len() {
                        Cow::Owned(value)
                    } else {
                        Cow::Owned(trimmed.to_string())
                    });
                    self.pos = p;
                } else {
                    let end = bytes[self.pos..]
                        .iter()
                        .position(|&b| b == self.delimiter || b == b'\n')
                        .map_or(bytes.len(), |e| self.pos + e);
                    fields.push(Cow::Borrowed(self.text[self.pos..end].trim()));
                    self.pos = end;
                }
                match bytes.get(self.pos) {
                    Some(&b) if b == self.delimiter => self.pos += 1,
                    Some(b'\n') => {
                        self.pos += 1;
                        self.line += 1;
                        break;
                    }
                    _ => break,
                }
            }
            if !quoted && fields.len() == 1 && fields[0].is_empty() {
                continue;
            }
            return Some(Ok(Record { line, fields }));
        }
        None
    }
}

/// How a feature column is read.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Numeric,
    Categorical,
    /// Categorical when its values are not numbers.
    Detect,
}

/// Which column is what, resolved against the header.
#[derive(Debug)]
struct Columns {
    label: usize,
    split: Option<usize>,
    /// The feature columns in file order.
    features: Vec<(usize, Kind)>,
}

/// The position of `name` in the header: an exact match, else the first
/// match ignoring case.
fn column_index<S: AsRef<str>>(header: &[S], name: &str) -> Option<usize> {
    header.iter().position(|c| c.as_ref() == name).or_else(|| {
        header
            .iter()
            .position(|c| c.as_ref().eq_ignore_ascii_case(name))
    })
}

/// Resolves the options' column names against the header. The same checks
/// run for [`check_csv_spec`] and for loading, so both give the same errors.
fn resolve_columns<S: AsRef<str>>(
    path: &Path,
    header: &[S],
    options: &CsvOptions,
) -> Result<Columns, DataError> {
    if header.len() < 2 {
        return Err(DataError::invalid(
            path,
            "the header names one column: expected features and a label",
        ));
    }
    let find = |name: &str| {
        column_index(header, name).ok_or_else(|| {
            let names: Vec<&str> = header.iter().map(AsRef::as_ref).collect();
            DataError::invalid(
                path,
                format!("no column `{name}` (columns: {})", names.join(", ")),
            )
        })
    };
    let name_of = |col: usize| header[col].as_ref();
    let split = match &options.split {
        CsvSplit::Column(name) => Some(find(name)?),
        CsvSplit::Fraction(_) => None,
    };
    let ignored = options
        .ignore
        .iter()
        .map(|name| find(name))
        .collect::<Result<BTreeSet<usize>, _>>()?;
    let free = |col: &usize| Some(*col) != split && !ignored.contains(col);
    let label = match &options.label {
        Some(name) => find(name)?,
        None => (0..header.len())
            .filter(free)
            .find(|&c| name_of(c).eq_ignore_ascii_case("label"))
            .or_else(|| (0..header.len()).rfind(free))
            .ok_or_else(|| {
                DataError::invalid(
                    path,
                    "no column is left for the label: name one with label=",
                )
            })?,
    };
    if Some(label) == split {
        return Err(DataError::invalid(
            path,
            format!(
                "column `{}` is both the label and the split column",
                name_of(label)
            ),
        ));
    }
    if ignored.contains(&label) {
        return Err(DataError::invalid(
            path,
            format!(
                "column `{}` is the label and cannot be ignored",
                name_of(label)
            ),
        ));
    }
    let categorical = match &options.categorical {
        None => None,
        Some(names) => {
            let mut cols = BTreeSet::new();
            for name in names {
                let col = find(name)?;
                let role = if col == label {
                    Some("the label")
                } else if Some(col) == split {
                    Some("the split column")
                } else if ignored.contains(&col) {
                    Some("ignored")
                } else {
                    None
                };
                if let Some(role) = role {
                    return Err(DataError::invalid(
                        path,
                        format!(
                            "column `{}` is {role}: categorical= lists feature columns only",
                            name_of(col)
                        ),
                    ));
                }
                cols.insert(col);
            }
            Some(cols)
        }
    };
    let features: Vec<(usize, Kind)> = (0..header.len())
        .filter(|c| *c != label && free(c))
        .map(|c| {
            let kind = match &categorical {
                None => Kind::Detect,
                Some(cols) if cols.contains(&c) => Kind::Categorical,
                Some(_) => Kind::Numeric,
            };
            (c, kind)
        })
        .collect();
    if features.is_empty() {
        return Err(DataError::invalid(
            path,
            "no feature columns: every column is the label, the split column or ignored",
        ));
    }
    Ok(Columns {
        label,
        split,
        features,
    })
}

/// An empty field, `NA`, `N/A`, `NaN`, `null` or `?`, in any case.
fn is_missing(field: &str) -> bool {
    field.is_empty()
        || ["na", "n/a", "nan", "null", "?"]
            .iter()
            .any(|m| field.eq_ignore_ascii_case(m))
}

/// A finite number.
fn parse_number(field: &str) -> Option<f64> {
    field.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// A class name for a numeric label: `3` rather than `3.0`.
fn number_name(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// How one feature column becomes input values.
enum Encoder<'a> {
    /// Standardised: `(v - mean) * scale`, 0 for a missing value; `scale` is
    /// 0 for a constant column.
    Numeric {
        values: Vec<f64>,
        mean: f64,
        scale: f64,
    },
    /// One-hot over the categories seen in training.
    OneHot {
        col: usize,
        index: HashMap<&'a str, usize>,
    },
}

impl Encoder<'_> {
    fn width(&self) -> usize {
        match self {
            Encoder::Numeric { .. } => 1,
            Encoder::OneHot { index, .. } => index.len(),
        }
    }
}

/// Which split a row of a split column belongs to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Part {
    Train,
    Val,
    Test,
}

fn parse_part(field: &str) -> Option<Part> {
    match field.to_ascii_lowercase().as_str() {
        "train" | "training" => Some(Part::Train),
        "val" | "valid" | "validation" => Some(Part::Val),
        "test" => Some(Part::Test),
        _ => None,
    }
}

/// Splits rows by a seeded fraction: `round(n × fraction)` rows validate
/// (at least one, and at least one row trains). Each group (a class, or all
/// rows for regression) gives its share, the rounding going to the groups
/// with the largest remainders, so the classes keep their proportions.
/// Training rows come back shuffled, validation rows in file order.
fn fraction_split(
    groups: Vec<Vec<usize>>,
    n: usize,
    fraction: f64,
    rng: &mut StdRng,
) -> (Vec<usize>, Vec<usize>) {
    let n_val = ((n as f64 * fraction).round() as usize).clamp(1, n.saturating_sub(1).max(1));
    let mut take: Vec<usize> = groups.iter().map(|g| g.len() * n_val / n).collect();
    let remainder: Vec<usize> = groups.iter().map(|g| g.len() * n_val % n).collect();
    let short = n_val - take.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by(|&a, &b| remainder[b].cmp(&remainder[a]).then(a.cmp(&b)));
    for &g in order.iter().take(short) {
        take[g] += 1;
    }
    let mut train = Vec::with_capacity(n - n_val);
    let mut val = Vec::with_capacity(n_val);
    for (mut rows, take) in groups.into_iter().zip(take) {
        rows.shuffle(rng);
        val.extend_from_slice(&rows[..take]);
        train.extend_from_slice(&rows[take..]);
    }
    train.shuffle(rng);
    val.sort_unstable();
    (train, val)
}

/// The targets of every row, in file order.
enum Targets {
    Classes {
        names: Vec<String>,
        labels: Vec<i64>,
    },
    Values(Vec<f32>),
}

/// Loads a CSV file as [`CsvOptions`] say.
pub(super) fn load(
    path: &Path,
    options: &CsvOptions,
    name: String,
    seed: u64,
) -> Result<Dataset, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| not_utf8(path))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let bad_record = |e: RecordError| DataError::invalid(path, e.to_string());
    let mut records = Records::new(text, options.delimiter);
    let header = records
        .next_record()
        .ok_or_else(|| empty_file(path))?
        .map_err(bad_record)?;
    let columns = header.fields;
    let layout = resolve_columns(path, &columns, options)?;

    let mut rows: Vec<Record> = Vec::new();
    while let Some(record) = records.next_record() {
        let record = record.map_err(bad_record)?;
        if record.fields.len() != columns.len() {
            return Err(DataError::invalid(
                path,
                format!(
                    "line {}: {} fields, but the header has {}",
                    record.line,
                    record.fields.len(),
                    columns.len()
                ),
            ));
        }
        rows.push(record);
    }
    let n = rows.len();
    if n < 2 {
        return Err(DataError::invalid(
            path,
            format!("{n} data row(s): need at least 2 to split into training and validation"),
        ));
    }
    let field = |row: usize, col: usize| rows[row].fields[col].as_ref();
    let expected = |row: usize, col: usize, what: &str| {
        DataError::invalid(
            path,
            format!(
                "line {}, column {}: expected {what}, got {:?}",
                rows[row].line,
                columns[col],
                field(row, col)
            ),
        )
    };

    // Targets.
    let label = layout.label;
    let targets = if options.regression {
        let values = (0..n)
            .map(|r| {
                parse_number(field(r, label))
                    .map(|v| v as f32)
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| expected(r, label, "a number"))
            })
            .collect::<Result<Vec<f32>, _>>()?;
        Targets::Values(values)
    } else {
        if let Some(r) = (0..n).find(|&r| is_missing(field(r, label))) {
            return Err(expected(r, label, "a class label"));
        }
        let numbers: Option<Vec<f64>> = (0..n)
            .map(|r| parse_number(field(r, label)).map(|v| v + 0.0))
            .collect();
        let (names, labels) = match numbers {
            Some(values) => {
                let mut distinct = values.clone();
                distinct.sort_by(f64::total_cmp);
                distinct.dedup();
                let labels = values
                    .iter()
                    .map(|v| distinct.partition_point(|d| d < v) as i64)
                    .collect();
                (distinct.into_iter().map(number_name).collect(), labels)
            }
            None => {
                let distinct: BTreeSet<&str> = (0..n).map(|r| field(r, label)).collect();
                let index: HashMap<&str, i64> = distinct
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (*s, i as i64))
                    .collect();
                let labels = (0..n).map(|r| index[field(r, label)]).collect();
                (
                    distinct.into_iter().map(str::to_string).collect::<Vec<_>>(),
                    labels,
                )
            }
        };
        if names.len() as i64 > MAX_CLASSES {
            return Err(DataError::invalid(
                path,
                format!(
                    "column {} has {} distinct labels, more than {MAX_CLASSES} classes (for a numeric target, use task=regression)",
                    columns[label],
                    names.len()
                ),
            ));
        }
        Targets::Classes { names, labels }
    };

    // The split.
    let mut rng = StdRng::seed_from_u64(seed);
    let (train_rows, val_rows, test_rows) = match (&options.split, layout.split) {
        (CsvSplit::Column(_), Some(col)) => {
            let mut parts = (Vec::new(), Vec::new(), Vec::new());
            for r in 0..n {
                match parse_part(field(r, col)) {
                    Some(Part::Train) => parts.0.push(r),
                    Some(Part::Val) => parts.1.push(r),
                    Some(Part::Test) => parts.2.push(r),
                    None => return Err(expected(r, col, "train, val, validation or test")),
                }
            }
            if parts.0.is_empty() || parts.1.is_empty() {
                return Err(DataError::invalid(
                    path,
                    format!(
                        "split column {} marks {} row(s) train and {} val: both need at least one",
                        columns[col],
                        parts.0.len(),
                        parts.1.len()
                    ),
                ));
            }
            parts.0.shuffle(&mut rng);
            parts
        }
        (split, _) => {
            let fraction = match split {
                CsvSplit::Fraction(f) => *f,
                CsvSplit::Column(_) => DEFAULT_VAL_FRACTION,
            };
            let groups = match &targets {
                Targets::Classes { names, labels } => {
                    let mut groups = vec![Vec::new(); names.len()];
                    for (r, &y) in labels.iter().enumerate() {
                        groups[y as usize].push(r);
                    }
                    groups
                }
                Targets::Values(_) => vec![(0..n).collect()],
            };
            let (train, val) = fraction_split(groups, n, fraction, &mut rng);
            (train, val, Vec::new())
        }
    };

    // Feature encoders, fitted on the training rows only.
    let mut encoders = Vec::with_capacity(layout.features.len());
    let mut feature_names = Vec::new();
    for &(col, kind) in &layout.features {
        let kind = match kind {
            Kind::Detect => {
                let mut numbers = 0usize;
                let mut others = Vec::new();
                for r in 0..n {
                    let f = field(r, col);
                    if is_missing(f) {
                        continue;
                    }
                    if parse_number(f).is_some() {
                        numbers += 1;
                    } else {
                        others.push(r);
                    }
                }
                match others.first() {
                    None => Kind::Numeric,
                    Some(&r) if numbers > others.len() => {
                        return Err(DataError::invalid(
                            path,
                            format!(
                                "line {}, column {}: expected a number, got {:?} (the column is mostly numbers; list it in categorical= to one-hot encode it)",
                                rows[r].line,
                                columns[col],
                                field(r, col)
                            ),
                        ));
                    }
                    Some(_) => Kind::Categorical,
                }
            }
            kind => kind,
        };
        let name = columns[col].as_ref();
        if kind == Kind::Categorical {
            let categories: BTreeSet<&str> = train_rows
                .iter()
                .map(|&r| field(r, col))
                .filter(|f| !is_missing(f))
                .collect();
            if categories.len() > MAX_CATEGORIES {
                return Err(DataError::invalid(
                    path,
                    format!(
                        "column {name} has {} distinct values in training, more than {MAX_CATEGORIES} to one-hot encode (leave it out with ignore={name})",
                        categories.len()
                    ),
                ));
            }
            feature_names.extend(categories.iter().map(|c| format!("{name}={c}")));
            let index = categories
                .into_iter()
                .enumerate()
                .map(|(i, c)| (c, i))
                .collect();
            encoders.push(Encoder::OneHot { col, index });
        } else {
            let values = (0..n)
                .map(|r| {
                    let f = field(r, col);
                    if is_missing(f) {
                        Ok(f64::NAN)
                    } else {
                        parse_number(f).ok_or_else(|| expected(r, col, "a number"))
                    }
                })
                .collect::<Result<Vec<f64>, _>>()?;
            let present: Vec<f64> = train_rows
                .iter()
                .map(|&r| values[r])
                .filter(|v| !v.is_nan())
                .collect();
            let count = present.len().max(1) as f64;
            let mean = present.iter().sum::<f64>() / count;
            let var = present.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / count;
            let sd = var.sqrt();
            let scale = if sd > 1e-12 * mean.abs().max(1.0) {
                1.0 / sd
            } else {
                0.0
            };
            feature_names.push(name.to_string());
            encoders.push(Encoder::Numeric {
                values,
                mean,
                scale,
            });
        }
    }
    let width: usize = encoders.iter().map(Encoder::width).sum();
    let encode = |split: &[usize]| -> Vec<f32> {
        let mut x = Vec::with_capacity(split.len() * width);
        for &r in split {
            for encoder in &encoders {
                match encoder {
                    Encoder::Numeric {
                        values,
                        mean,
                        scale,
                    } => {
                        let v = values[r];
                        x.push(if v.is_nan() {
                            0.0
                        } else {
                            ((v - mean) * scale) as f32
                        });
                    }
                    Encoder::OneHot { col, index } => {
                        let start = x.len();
                        x.resize(start + index.len(), 0.0);
                        if let Some(&i) = index.get(field(r, *col)) {
                            x[start + i] = 1.0;
                        }
                    }
                }
            }
        }
        x
    };

    let mut set = Dataset::classification(
        name,
        width as i64,
        1,
        encode(&train_rows),
        Vec::new(),
        encode(&val_rows),
        Vec::new(),
    );
    set.test_x = encode(&test_rows);
    set.feature_names = feature_names;
    match targets {
        Targets::Classes { names, labels } => {
            let pick = |split: &[usize]| split.iter().map(|&r| labels[r]).collect();
            set.train_y = pick(&train_rows);
            set.val_y = pick(&val_rows);
            set.test_y = pick(&test_rows);
            set.classes = names.len() as i64;
            set.task = Task::Classification { classes: names };
        }
        Targets::Values(values) => {
            let pick = |split: &[usize]| split.iter().map(|&r| values[r]).collect();
            set.train_t = pick(&train_rows);
            set.val_t = pick(&val_rows);
            set.test_t = pick(&test_rows);
            set.task = Task::Regression;
        }
    }
    set.checked(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(text: &str) -> Vec<(usize, Vec<String>)> {
        let mut reader = Records::new(text, ',');
        let mut out = Vec::new();
        while let Some(record) = reader.next_record() {
            let record = record.expect("a valid record");
            out.push((
                record.line,
                record.fields.into_iter().map(Cow::into_owned).collect(),
            ));
        }
        out
    }

    #[test]
    fn quoted_fields_hold_delimiters_quotes_and_newlines() {
        let got = records("a, \"b, c\" ,\"say \"\"hi\"\"\"\r\n\n\"two\nlines\",x,\nlast,1,2");
        assert_eq!(
            got,
            vec![
                (1, vec!["a".into(), "b, c".into(), "say \"hi\"".into()]),
                (3, vec!["two\nlines".into(), "x".into(), String::new()]),
                (5, vec!["last".into(), "1".into(), "2".into()]),
            ]
        );
    }

    #[test]
    fn broken_quotes_are_errors_with_their_line() {
        let mut reader = Records::new("a,b\n1,\"open\n", ',');
        assert!(reader.next_record().is_some_and(|r| r.is_ok()));
        let err = reader
            .next_record()
            .and_then(Result::err)
            .map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("line 2: a quoted field is not closed"));
        let mut reader = Records::new("\"a\"b,c\n", ',');
        let err = reader
            .next_record()
            .and_then(Result::err)
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("line 1: field 1 has text after its closing quote")
        );
    }

    #[test]
    fn options_print_back_canonically() {
        for query in [
            "label=price&task=regression&val_fraction=0.3&categorical=city,kind&ignore=id&delimiter=;",
            "split_column=fold&categorical=&delimiter=tab",
        ] {
            let options = CsvOptions::parse(query).expect("valid options");
            assert_eq!(options.to_string(), query);
            assert_eq!(CsvOptions::parse(&options.to_string()), Ok(options));
        }
        assert_eq!(
            CsvOptions::parse("task=Classification&val_fraction=0.2"),
            Ok(CsvOptions::default())
        );
    }

    #[test]
    fn stratified_split_keeps_proportions_and_sizes() {
        let groups = vec![(0..60).collect(), (60..90).collect(), (90..100).collect()];
        let (train, val) = fraction_split(groups, 100, 0.2, &mut StdRng::seed_from_u64(3));
        assert_eq!((train.len(), val.len()), (80, 20));
        let count = |lo: usize, hi: usize| val.iter().filter(|&&r| (lo..hi).contains(&r)).count();
        assert_eq!((count(0, 60), count(60, 90), count(90, 100)), (12, 6, 2));
        let mut all: Vec<usize> = train.iter().chain(&val).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
    }
}
