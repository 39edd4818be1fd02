//! Class balancing by resampling the training rows.

use hpo_proto::ParamValue;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::index::sample;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// How [`balanced_rows`] evens out the classes (setting `balance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Balance {
    /// Every row once, as it is.
    #[default]
    None,
    /// Repeat rows of the smaller classes until each class has as many rows
    /// as the largest.
    Oversample,
    /// Keep a random subset of each class as large as the smallest class.
    Undersample,
}

impl Balance {
    pub const NAMES: &'static [&'static str] = &["none", "oversample", "undersample"];

    pub fn as_str(self) -> &'static str {
        match self {
            Balance::None => "none",
            Balance::Oversample => "oversample",
            Balance::Undersample => "undersample",
        }
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Balance {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(Balance::None),
            "oversample" => Ok(Balance::Oversample),
            "undersample" => Ok(Balance::Undersample),
            _ => Err(format!(
                "balance must be one of none, oversample, undersample, got `{s}`"
            )),
        }
    }
}

/// Reads the `balance` setting: `none` (also when missing), `oversample` or
/// `undersample`.
pub fn parse_balance(get: &dyn Fn(&str) -> Option<ParamValue>) -> Result<Balance, String> {
    match get("balance") {
        None => Ok(Balance::None),
        Some(ParamValue::Categorical(s)) => s.parse(),
        Some(other) => Err(format!(
            "balance must be one of none, oversample, undersample, got `{other}`"
        )),
    }
}

/// The training rows to use, as indices into `labels`, so that every class
/// present is equally frequent:
///
/// - [`Balance::None`]: every row once, `0..n`.
/// - [`Balance::Oversample`]: every row, and each smaller class's rows again
///   until it has as many as the largest class: whole copies first, then a
///   seeded draw without repetition for the remainder, so no row is repeated
///   more than once more than another of its class.
/// - [`Balance::Undersample`]: a seeded subset of each class, as many rows as
///   the smallest class has, each row at most once.
///
/// The result is sorted (a row's copies side by side): shuffle it per epoch.
/// The same labels, mode and seed give the same rows.
pub fn balanced_rows(labels: &[i64], mode: Balance, seed: u64) -> Vec<i64> {
    let all = || (0..labels.len() as i64).collect();
    let mut by_class: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (row, &label) in labels.iter().enumerate() {
        by_class.entry(label).or_default().push(row);
    }
    let sizes = by_class.values().map(Vec::len);
    let (Some(smallest), Some(largest)) = (sizes.clone().min(), sizes.max()) else {
        return Vec::new();
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut rows: Vec<usize> = match mode {
        Balance::None => return all(),
        Balance::Oversample => {
            let mut rows = Vec::with_capacity(largest * by_class.len());
            for class in by_class.values() {
                for _ in 0..largest / class.len() {
                    rows.extend_from_slice(class);
                }
                let extra = largest % class.len();
                rows.extend(
                    sample(&mut rng, class.len(), extra)
                        .iter()
                        .map(|i| class[i]),
                );
            }
            rows
        }
        Balance::Undersample => {
            let mut rows = Vec::with_capacity(smallest * by_class.len());
            for class in by_class.values() {
                rows.extend(
                    sample(&mut rng, class.len(), smallest)
                        .iter()
                        .map(|i| class[i]),
                );
            }
            rows
        }
    };
    rows.sort_unstable();
    rows.into_iter().map(|r| r as i64).collect()
}
