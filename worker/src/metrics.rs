//! Evaluation metrics, computed once per epoch on the validation (or test)
//! predictions and added to the step's report.
//!
//! Conventions follow scikit-learn where it has one:
//!
//! - Macro averages are taken over the union of the classes that occur in the
//!   labels or in the predictions (sklearn's default `labels=None`): a class
//!   that never occurs in either, though below `classes`, is left out, so a
//!   validation split that lacks a rare class is not penalised for it.
//! - Per-class precision TP/(TP+FP) is 0 when the class is never predicted,
//!   recall TP/(TP+FN) is 0 when it never occurs, and F1 is 0 when both are
//!   (sklearn's `zero_division=0`). Macro F1 is the mean of the per-class F1
//!   scores, not the F1 of the macro precision and recall.
//! - ROC AUC is the Mann–Whitney U statistic with average ranks for ties,
//!   which equals the area under the ROC curve with ties counted as half.
//! - R² is 1 − SS_res/SS_tot; for constant targets (SS_tot = 0) it is 1 when
//!   the predictions are perfect and 0 otherwise (sklearn's
//!   `force_finite=True`).
//!
//! Nothing here panics: slices of different lengths are read up to the
//! shorter one, and empty input gives zeros (and no AUC).

use std::collections::BTreeMap;

/// Classification metrics of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Classification {
    pub accuracy: f64,
    /// Macro-averaged precision.
    pub precision: f64,
    /// Macro-averaged recall.
    pub recall: f64,
    /// Macro-averaged F1 (the mean of the per-class F1 scores).
    pub f1: f64,
    /// Binary tasks only: ROC AUC of the positive class's (label 1) score.
    /// None for other tasks, without scores, when only one class occurs in
    /// the labels, or when a score is NaN.
    pub auc: Option<f64>,
}

/// Metrics of a classifier's predictions.
///
/// `predicted[i]` is the predicted class, `labels[i]` the true one,
/// `classes` the number of classes; `positive_scores` (binary tasks) the
/// model's probability or score of class 1 per example. Labels other than 1
/// count as negatives for the AUC, which is only computed when `classes` is
/// 2. Empty input gives all zeros and no AUC.
pub fn classification(
    predicted: &[i64],
    labels: &[i64],
    classes: usize,
    positive_scores: Option<&[f64]>,
) -> Classification {
    let n = predicted.len().min(labels.len());
    let (predicted, labels) = (&predicted[..n], &labels[..n]);

    #[derive(Default)]
    struct Counts {
        tp: u64,
        fp: u64,
        fn_: u64,
    }
    // Keyed by class: exactly the union of classes seen in either slice.
    let mut per_class: BTreeMap<i64, Counts> = BTreeMap::new();
    let mut correct = 0u64;
    for (&p, &y) in predicted.iter().zip(labels) {
        if p == y {
            correct += 1;
            per_class.entry(y).or_default().tp += 1;
        } else {
            per_class.entry(p).or_default().fp += 1;
            per_class.entry(y).or_default().fn_ += 1;
        }
    }

    let ratio = |num: u64, den: u64| {
        if den == 0 {
            0.0
        } else {
            num as f64 / den as f64
        }
    };
    let (mut precision, mut recall, mut f1) = (0.0, 0.0, 0.0);
    for c in per_class.values() {
        precision += ratio(c.tp, c.tp + c.fp);
        recall += ratio(c.tp, c.tp + c.fn_);
        f1 += ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn_);
    }
    let k = per_class.len().max(1) as f64;

    let auc = match positive_scores {
        Some(scores) if classes == 2 => {
            let m = n.min(scores.len());
            roc_auc(&labels[..m], &scores[..m])
        }
        _ => None,
    };

    Classification {
        accuracy: ratio(correct, n as u64),
        precision: precision / k,
        recall: recall / k,
        f1: f1 / k,
        auc,
    }
}

/// ROC AUC of `scores` for the examples labelled 1 against all others, by
/// the rank-sum (Mann–Whitney U) statistic with average ranks for ties.
fn roc_auc(labels: &[i64], scores: &[f64]) -> Option<f64> {
    if scores.iter().any(|s| s.is_nan()) {
        return None;
    }
    let positives = labels.iter().filter(|&&y| y == 1).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the (1-based, tie-averaged) ranks of the positives.
    let mut rank_sum = 0.0;
    let mut start = 0;
    while start < order.len() {
        let score = scores[order[start]];
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == score {
            end += 1;
        }
        let rank = (start + 1 + end) as f64 / 2.0;
        let tied_positives = order[start..end]
            .iter()
            .filter(|&&i| labels[i] == 1)
            .count();
        rank_sum += rank * tied_positives as f64;
        start = end;
    }
    let (p, q) = (positives as f64, negatives as f64);
    let u = rank_sum - p * (p + 1.0) / 2.0;
    Some(u / (p * q))
}

impl Classification {
    /// Adds the metrics to a report with `prefix` ("val_" or "test_"):
    /// `{prefix}accuracy`, `{prefix}precision`, `{prefix}recall`,
    /// `{prefix}f1` and, when known, `{prefix}auc`.
    pub fn insert_into(&self, prefix: &str, out: &mut BTreeMap<String, f64>) {
        out.insert(format!("{prefix}accuracy"), self.accuracy);
        out.insert(format!("{prefix}precision"), self.precision);
        out.insert(format!("{prefix}recall"), self.recall);
        out.insert(format!("{prefix}f1"), self.f1);
        if let Some(auc) = self.auc {
            out.insert(format!("{prefix}auc"), auc);
        }
    }
}

/// Regression metrics of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Regression {
    /// Root of the mean squared error.
    pub rmse: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// Coefficient of determination, 1 − SS_res/SS_tot (1 or 0 for constant
    /// targets: see the module's documentation). Negative when the
    /// predictions are worse than the targets' mean.
    pub r2: f64,
}

/// Metrics of a regressor's predictions against the targets. Empty input
/// gives all zeros; NaN in the input propagates to the results.
pub fn regression(predicted: &[f64], targets: &[f64]) -> Regression {
    let n = predicted.len().min(targets.len());
    if n == 0 {
        return Regression {
            rmse: 0.0,
            mae: 0.0,
            r2: 0.0,
        };
    }
    let (predicted, targets) = (&predicted[..n], &targets[..n]);
    let count = n as f64;
    let mean = targets.iter().sum::<f64>() / count;
    let (mut ss_res, mut abs, mut ss_tot) = (0.0, 0.0, 0.0);
    for (&p, &y) in predicted.iter().zip(targets) {
        let e = p - y;
        ss_res += e * e;
        abs += e.abs();
        ss_tot += (y - mean) * (y - mean);
    }
    let r2 = if ss_tot > 0.0 {
        1.0 - ss_res / ss_tot
    } else if ss_tot == 0.0 && ss_res == 0.0 {
        1.0
    } else if ss_tot == 0.0 {
        0.0
    } else {
        f64::NAN // NaN in the targets
    };
    Regression {
        rmse: (ss_res / count).sqrt(),
        mae: abs / count,
        r2,
    }
}

impl Regression {
    /// Adds the metrics to a report with `prefix` ("val_" or "test_"):
    /// `{prefix}rmse`, `{prefix}mae` and `{prefix}r2`.
    pub fn insert_into(&self, prefix: &str, out: &mut BTreeMap<String, f64>) {
        out.insert(format!("{prefix}rmse"), self.rmse);
        out.insert(format!("{prefix}mae"), self.mae);
        out.insert(format!("{prefix}r2"), self.r2);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * (1.0 + a.abs().max(b.abs()))
    }

    macro_rules! assert_close {
        ($a:expr, $b:expr) => {{
            let (a, b) = ($a, $b);
            assert!(close(a, b), "{} = {a}, expected {b}", stringify!($a));
        }};
    }

    /// Expands a confusion matrix (rows: true class, columns: predicted)
    /// into prediction and label slices.
    fn from_confusion(matrix: &[&[u32]]) -> (Vec<i64>, Vec<i64>) {
        let (mut predicted, mut labels) = (Vec::new(), Vec::new());
        for (y, row) in matrix.iter().enumerate() {
            for (p, &count) in row.iter().enumerate() {
                for _ in 0..count {
                    predicted.push(p as i64);
                    labels.push(y as i64);
                }
            }
        }
        (predicted, labels)
    }

    #[test]
    fn three_class_confusion_matrix() {
        //            predicted 0  1  2
        // true 0:              4  1  0   (5)
        // true 1:              2  2  1   (5)
        // true 2:              0  0  2   (2)
        // column sums:         6  3  3
        let (predicted, labels) = from_confusion(&[&[4, 1, 0], &[2, 2, 1], &[0, 0, 2]]);
        let m = classification(&predicted, &labels, 3, None);
        assert_close!(m.accuracy, 8.0 / 12.0);
        // Precision: 4/6, 2/3, 2/3.
        assert_close!(m.precision, 2.0 / 3.0);
        // Recall: 4/5, 2/5, 2/2.
        assert_close!(m.recall, (0.8 + 0.4 + 1.0) / 3.0);
        // F1 = 2TP/(2TP+FP+FN): 8/11, 4/8, 4/5.
        assert_close!(m.f1, (8.0 / 11.0 + 0.5 + 0.8) / 3.0);
        // Not the F1 of the averages.
        let of_means = 2.0 * m.precision * m.recall / (m.precision + m.recall);
        assert!((m.f1 - of_means).abs() > 1e-3);
        assert_eq!(m.auc, None);
    }

    #[test]
    fn class_never_predicted_scores_zero() {
        // Class 2 occurs twice but is never predicted.
        let m = classification(&[0, 1, 1, 1], &[0, 1, 2, 2], 3, None);
        assert_close!(m.accuracy, 0.5);
        assert_close!(m.precision, (1.0 + 1.0 / 3.0 + 0.0) / 3.0);
        assert_close!(m.recall, (1.0 + 1.0 + 0.0) / 3.0);
        assert_close!(m.f1, (1.0 + 0.5 + 0.0) / 3.0);
    }

    #[test]
    fn class_only_predicted_counts_in_the_average() {
        // Class 2 is predicted once but never occurs: precision 0, recall 0.
        let m = classification(&[0, 2, 1], &[0, 0, 1], 3, None);
        assert_close!(m.precision, (1.0 + 1.0 + 0.0) / 3.0);
        assert_close!(m.recall, (0.5 + 1.0 + 0.0) / 3.0);
        assert_close!(m.f1, (2.0 / 3.0 + 1.0 + 0.0) / 3.0);
    }

    #[test]
    fn classes_absent_from_both_are_left_out() {
        // Five classes in the task, only 0 and 1 seen: averaged over two.
        let m = classification(&[0, 1, 1, 0], &[0, 1, 0, 0], 5, None);
        // Precision 2/2, 1/2; recall 2/3, 1/1.
        assert_close!(m.precision, 0.75);
        assert_close!(m.recall, (2.0 / 3.0 + 1.0) / 2.0);
        assert_close!(m.f1, (4.0 / 5.0 + 2.0 / 3.0) / 2.0);
    }

    #[test]
    fn perfect_predictions() {
        let y = [0, 1, 2, 2, 1, 0, 3];
        let m = classification(&y, &y, 4, None);
        assert_eq!(
            (m.accuracy, m.precision, m.recall, m.f1),
            (1.0, 1.0, 1.0, 1.0)
        );
    }

    #[test]
    fn binary_auc_with_ties_by_hand() {
        let labels = [0, 0, 1, 1, 0, 1];
        let scores = [0.1, 0.4, 0.35, 0.8, 0.4, 0.4];
        // Pairs (positive, negative), 3 × 3 = 9, a win 1 and a tie ½:
        //   0.35 vs 0.1, 0.4, 0.4 → 1
        //   0.8  vs all          → 3
        //   0.4  vs 0.1 (win), 0.4, 0.4 (ties) → 2
        // AUC = 6/9.
        let predicted = [0, 1, 0, 1, 1, 1]; // scores thresholded at 0.375
        let m = classification(&predicted, &labels, 2, Some(&scores));
        assert_close!(m.auc.unwrap(), 6.0 / 9.0);
        assert_close!(m.accuracy, 3.0 / 6.0); // examples 0, 3 and 5
    }

    #[test]
    fn auc_matches_pair_counting() {
        // A larger case with many ties, against the O(n²) definition.
        let labels: Vec<i64> = (0..60i32).map(|i| i64::from((i * 7) % 5 < 2)).collect();
        let scores: Vec<f64> = (0..60i32).map(|i| f64::from((i * 13) % 9) / 8.0).collect();
        let mut wins = 0.0;
        let mut pairs = 0.0;
        for (i, &yi) in labels.iter().enumerate() {
            for (j, &yj) in labels.iter().enumerate() {
                if yi == 1 && yj == 0 {
                    pairs += 1.0;
                    if scores[i] > scores[j] {
                        wins += 1.0;
                    } else if scores[i] == scores[j] {
                        wins += 0.5;
                    }
                }
            }
        }
        let m = classification(&labels, &labels, 2, Some(&scores));
        assert_close!(m.auc.unwrap(), wins / pairs);
    }

    #[test]
    fn perfect_inverted_and_tied_auc() {
        let labels = [0, 0, 1, 1, 0, 1];
        let perfect = [0.1, 0.2, 0.7, 0.9, 0.3, 0.8];
        let m = classification(&labels, &labels, 2, Some(&perfect));
        assert_eq!(m.auc, Some(1.0));
        let inverted: Vec<f64> = perfect.iter().map(|s| 1.0 - s).collect();
        let m = classification(&labels, &labels, 2, Some(&inverted));
        assert_eq!(m.auc, Some(0.0));
        let tied = [0.5; 6];
        let m = classification(&labels, &labels, 2, Some(&tied));
        assert_eq!(m.auc, Some(0.5));
    }

    #[test]
    fn auc_is_none_when_undefined() {
        // One class only.
        let m = classification(&[1, 1, 0], &[1, 1, 1], 2, Some(&[0.9, 0.8, 0.2]));
        assert_eq!(m.auc, None);
        let m = classification(&[0, 0], &[0, 0], 2, Some(&[0.1, 0.2]));
        assert_eq!(m.auc, None);
        // Not binary.
        let m = classification(&[0, 1, 2], &[0, 1, 2], 3, Some(&[0.1, 0.9, 0.3]));
        assert_eq!(m.auc, None);
        // No scores.
        let m = classification(&[0, 1], &[0, 1], 2, None);
        assert_eq!(m.auc, None);
        // A NaN score.
        let m = classification(&[0, 1], &[0, 1], 2, Some(&[0.1, f64::NAN]));
        assert_eq!(m.auc, None);
    }

    #[test]
    fn one_class_only() {
        let m = classification(&[0, 0, 0], &[0, 0, 0], 2, None);
        assert_eq!(
            (m.accuracy, m.precision, m.recall, m.f1),
            (1.0, 1.0, 1.0, 1.0)
        );
        let m = classification(&[1, 1], &[0, 0], 2, None);
        assert_eq!(
            (m.accuracy, m.precision, m.recall, m.f1),
            (0.0, 0.0, 0.0, 0.0)
        );
    }

    #[test]
    fn empty_and_mismatched_input() {
        let m = classification(&[], &[], 3, Some(&[]));
        assert_eq!(
            m,
            Classification {
                accuracy: 0.0,
                precision: 0.0,
                recall: 0.0,
                f1: 0.0,
                auc: None
            }
        );
        // Lengths differ: the common prefix counts.
        let m = classification(&[0, 1, 1, 1], &[0, 1], 2, Some(&[0.2]));
        assert_eq!(m.accuracy, 1.0);
        assert_eq!(m.auc, None); // one score: only one class
        let m = classification(&[0, 1], &[0, 1, 0], 2, Some(&[0.2, 0.7, 0.9]));
        assert_eq!(m.auc, Some(1.0));
        // Odd labels (negative, beyond `classes`) are classes like any other.
        let m = classification(&[-1, 7], &[-1, 7], 2, None);
        assert_eq!(m.f1, 1.0);
        let r = regression(&[], &[]);
        assert_eq!(
            r,
            Regression {
                rmse: 0.0,
                mae: 0.0,
                r2: 0.0
            }
        );
        let r = regression(&[1.0, 2.0, 3.0], &[1.0]);
        assert_eq!((r.rmse, r.mae, r.r2), (0.0, 0.0, 1.0));
    }

    #[test]
    fn regression_by_hand() {
        // Errors 0.5, 0.5, 0, 1 (scikit-learn's documentation example).
        let r = regression(&[2.5, 0.0, 2.0, 8.0], &[3.0, -0.5, 2.0, 7.0]);
        assert_close!(r.rmse, (1.5f64 / 4.0).sqrt());
        assert_close!(r.mae, 0.5);
        // Mean 2.875; SS_tot = 0.125² + 3.375² + 0.875² + 4.125² = 29.1875.
        assert_close!(r.r2, 1.0 - 1.5 / 29.1875);
    }

    #[test]
    fn r2_reference_points() {
        let targets = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(regression(&targets, &targets).r2, 1.0);
        // Predicting the mean scores 0.
        assert_close!(regression(&[2.5; 4], &targets).r2, 0.0);
        // Worse than the mean: negative. SS_res = 9+1+1+9 = 20, SS_tot = 5.
        let r = regression(&[4.0, 3.0, 2.0, 1.0], &targets);
        assert_close!(r.r2, 1.0 - 20.0 / 5.0);
        assert_close!(r.rmse, 5.0f64.sqrt());
        assert_close!(r.mae, 2.0);
    }

    #[test]
    fn r2_for_constant_targets() {
        assert_eq!(regression(&[2.0, 2.0, 2.0], &[2.0, 2.0, 2.0]).r2, 1.0);
        let r = regression(&[2.0, 3.0, 2.0], &[2.0, 2.0, 2.0]);
        assert_eq!(r.r2, 0.0);
        assert_close!(r.mae, 1.0 / 3.0);
        assert_eq!(regression(&[5.0], &[4.0]).r2, 0.0);
    }

    #[test]
    fn insert_into_names() {
        let mut out = BTreeMap::new();
        let m = classification(&[0, 1], &[0, 1], 2, Some(&[0.2, 0.9]));
        m.insert_into("val_", &mut out);
        let keys: Vec<&str> = out.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "val_accuracy",
                "val_auc",
                "val_f1",
                "val_precision",
                "val_recall"
            ]
        );
        assert_eq!(out["val_auc"], 1.0);

        let mut out = BTreeMap::new();
        classification(&[0, 1, 2], &[0, 1, 2], 3, None).insert_into("test_", &mut out);
        assert!(!out.contains_key("test_auc"));
        assert_eq!(out.len(), 4);

        let mut out = BTreeMap::new();
        regression(&[1.0, 2.0], &[1.0, 3.0]).insert_into("test_", &mut out);
        let keys: Vec<&str> = out.keys().map(String::as_str).collect();
        assert_eq!(keys, ["test_mae", "test_r2", "test_rmse"]);
        assert_close!(out["test_rmse"], 0.5f64.sqrt());
    }
}
