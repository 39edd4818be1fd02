//! The dashboard's JSON, shaped from stored records: pure functions of the
//! records, so they are tested without a server. Large studies are reduced
//! here (curves and parameter rows sampled, tables paginated), so no answer
//! grows with the study beyond what a page can draw.

use crate::storage::{StudyRecord, TrialEvent, TrialRecord};
use hpo_proto::study::ParamSpec;
use hpo_proto::{
    Direction, MetricPoint, ParamValue, Params, StudyInfo, TrialCounts, TrialState, now_ms,
};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Points per learning curve at most.
pub const CURVE_POINTS: usize = 100;

pub fn param_value(v: &ParamValue) -> Value {
    match v {
        ParamValue::Float(f) => json!(f),
        ParamValue::Int(i) => json!(i),
        ParamValue::Categorical(s) => json!(s),
    }
}

pub fn params_json(p: &Params) -> Value {
    Value::Object(
        p.iter()
            .map(|(k, v)| (k.clone(), param_value(v)))
            .collect::<Map<_, _>>(),
    )
}

fn finite(v: Option<f64>) -> Value {
    match v {
        Some(v) if v.is_finite() => json!(v),
        _ => Value::Null,
    }
}

fn counts_json(c: &TrialCounts) -> Value {
    json!({
        "waiting": c.waiting, "running": c.running, "paused": c.paused,
        "completed": c.completed, "stopped": c.stopped, "failed": c.failed,
        "cancelled": c.cancelled,
    })
}

fn total(c: &TrialCounts) -> u32 {
    c.waiting + c.running + c.paused + c.completed + c.stopped + c.failed + c.cancelled
}

pub fn study_json(info: &StudyInfo, record: &StudyRecord) -> Value {
    let end = if info.ended_at_ms > 0 {
        info.ended_at_ms
    } else {
        now_ms()
    };
    json!({
        "id": info.id.0,
        "name": info.name,
        "state": info.state.to_string(),
        "end_reason": info.end_reason,
        "metric": info.metric,
        "direction": info.direction.as_str(),
        "sampler": record.spec.search.algorithm.as_str(),
        "scheduler": info.scheduler,
        "counts": counts_json(&info.counts),
        "trials": total(&info.counts),
        "max_trials": info.max_trials,
        "best_value": finite(info.best.as_ref().and_then(|b| b.value)),
        "best_trial": info.best.as_ref().map(|b| b.id.number),
        "resource_used": info.resource_used,
        "max_total_resource": record.spec.search.max_total_resource,
        "created_at_ms": info.created_at_ms,
        "ended_at_ms": info.ended_at_ms,
        "duration_ms": (end - info.created_at_ms).max(0),
    })
}

pub fn trial_row(t: &TrialRecord) -> Value {
    let end = if t.ended_at_ms > 0 {
        t.ended_at_ms
    } else if t.started_at_ms > 0 && t.state == TrialState::Running {
        now_ms()
    } else {
        t.started_at_ms
    };
    json!({
        "number": t.id.number,
        "state": t.state.to_string(),
        "value": finite(t.value),
        "params": params_json(&t.params),
        "last_step": t.last_step,
        "attempt": t.attempt,
        "worker": t.worker.as_ref().map(|w| w.0.clone()),
        "reason": t.reason,
        "rung": t.placement.rung,
        "budget": t.placement.budget,
        "started_at_ms": t.started_at_ms,
        "ended_at_ms": t.ended_at_ms,
        "duration_ms": duration_ms(t, end),
    })
}

fn duration_ms(t: &TrialRecord, end: i64) -> i64 {
    if t.started_at_ms > 0 {
        (end - t.started_at_ms).max(0)
    } else {
        0
    }
}

pub fn param_specs_json(record: &StudyRecord) -> Value {
    Value::Array(
        record
            .spec
            .params
            .iter()
            .map(|(name, spec)| match spec {
                ParamSpec::Float {
                    low,
                    high,
                    log,
                    step,
                } => json!({"name": name, "type": "float", "low": low, "high": high, "log": log, "step": step}),
                ParamSpec::Int {
                    low,
                    high,
                    log,
                    step,
                } => json!({"name": name, "type": "int", "low": low, "high": high, "log": log, "step": step}),
                ParamSpec::Categorical { choices } => json!({
                    "name": name, "type": "categorical",
                    "choices": choices.iter().map(param_value).collect::<Vec<_>>(),
                }),
            })
            .collect(),
    )
}

/// Resource used and what early stopping saved: a trial that ended (or
/// runs) below the full budget saved the difference.
pub fn resource_json(record: &StudyRecord, trials: &[TrialRecord], used: u64) -> Value {
    let max = u64::from(record.spec.schedule.max_resource);
    let started = trials
        .iter()
        // Started and not waiting to run again, or with a step reported.
        .filter(|t| (t.attempt > 0 && t.state != TrialState::Waiting) || t.last_step.is_some())
        .count() as u64;
    let full = started * max;
    json!({
        "unit": record.spec.schedule.resource.as_str(),
        "max_resource": max,
        "used": used,
        "full": full,
        "saved": full.saturating_sub(used),
    })
}

/// Finished trials with a value, by number, columnar.
pub fn history_json(record: &StudyRecord, trials: &[TrialRecord]) -> Value {
    let mut number = Vec::new();
    let mut value = Vec::new();
    let mut state = Vec::new();
    let mut ended = Vec::new();
    for t in trials {
        if matches!(t.state, TrialState::Completed | TrialState::Stopped)
            && let Some(v) = t.value.filter(|v| v.is_finite())
        {
            number.push(t.id.number);
            value.push(v);
            state.push(t.state.as_str());
            ended.push(t.ended_at_ms);
        }
    }
    json!({
        "metric": record.spec.objective.metric,
        "direction": record.spec.objective.direction.as_str(),
        "trial": number, "value": value, "state": state, "ended_at_ms": ended,
    })
}

/// Orders finished trials best first (by direction), ties by number.
fn best_first(direction: Direction, trials: &mut [&TrialRecord]) {
    trials.sort_by(|a, b| {
        let (x, y) = (a.value.unwrap_or(f64::NAN), b.value.unwrap_or(f64::NAN));
        let ord = match direction {
            Direction::Maximize => y.total_cmp(&x),
            Direction::Minimize => x.total_cmp(&y),
        };
        ord.then(a.id.number.cmp(&b.id.number))
    });
}

/// `k` evenly spaced items of `items` (all when there are no more).
fn even_sample<T: Copy>(items: &[T], k: usize) -> Vec<T> {
    if items.len() <= k {
        return items.to_vec();
    }
    (0..k).map(|i| items[i * items.len() / k]).collect()
}

/// The trials a size-limited view shows: every one in `always`, then the
/// best finished ones (half the rest), then an even sample of the others;
/// by trial number.
pub fn pick_trials<'a>(
    direction: Direction,
    always: Vec<&'a TrialRecord>,
    finished: Vec<&'a TrialRecord>,
    max: usize,
) -> Vec<&'a TrialRecord> {
    let mut out = always;
    out.truncate(max);
    let room = max - out.len();
    let mut finished = finished;
    best_first(direction, &mut finished);
    let best = (room / 2).max(room.min(1)).min(finished.len());
    out.extend_from_slice(&finished[..best]);
    let rest = &finished[best..];
    out.extend(even_sample(rest, room - best));
    out.sort_by_key(|t| t.id.number);
    out
}

/// Reduces a curve to at most `max` points: the first, the last, and for
/// each bucket in between its lowest and highest value (so spikes and the
/// best value survive), in step order.
pub fn downsample(steps: &[u32], values: &[f64], max: usize) -> (Vec<u32>, Vec<f64>) {
    let n = steps.len().min(values.len());
    if n <= max || max < 4 {
        return (steps[..n].to_vec(), values[..n].to_vec());
    }
    let buckets = (max - 2) / 2;
    let mut keep = vec![0usize];
    let inner = n - 2;
    for b in 0..buckets {
        let lo = 1 + b * inner / buckets;
        let hi = 1 + (b + 1) * inner / buckets;
        if lo >= hi {
            continue;
        }
        let (mut imin, mut imax) = (lo, lo);
        for i in lo..hi {
            if values[i] < values[imin] {
                imin = i;
            }
            if values[i] > values[imax] {
                imax = i;
            }
        }
        keep.push(imin.min(imax));
        if imin != imax {
            keep.push(imin.max(imax));
        }
    }
    keep.push(n - 1);
    (
        keep.iter().map(|&i| steps[i]).collect(),
        keep.iter().map(|&i| values[i]).collect(),
    )
}

/// The latest attempt's value of every metric at each step: a resumed or
/// retried trial reports some steps again, and the later report wins.
pub fn latest_per_step(points: &[MetricPoint]) -> BTreeMap<u32, &hpo_proto::MetricValues> {
    let mut by_step: BTreeMap<u32, (u32, &hpo_proto::MetricValues)> = BTreeMap::new();
    for p in points {
        let e = by_step.entry(p.step).or_insert((p.attempt, &p.values));
        if p.attempt >= e.0 {
            *e = (p.attempt, &p.values);
        }
    }
    by_step.into_iter().map(|(s, (_, v))| (s, v)).collect()
}

/// One trial's objective curve, down-sampled.
pub fn curve_json(t: &TrialRecord, metric: &str, points: &[MetricPoint]) -> Value {
    let mut steps = Vec::new();
    let mut values = Vec::new();
    for (step, v) in latest_per_step(points) {
        if let Some(x) = v.get(metric).filter(|x| x.is_finite()) {
            steps.push(step);
            values.push(*x);
        }
    }
    let (steps, values) = downsample(&steps, &values, CURVE_POINTS);
    json!({
        "trial": t.id.number,
        "state": t.state.to_string(),
        "value": finite(t.value),
        "params": params_json(&t.params),
        "steps": steps,
        "values": values,
    })
}

/// Every metric of a trial per step, columnar.
pub fn metrics_json(points: &[MetricPoint]) -> Value {
    let per_step = latest_per_step(points);
    let mut names: Vec<&String> = per_step.values().flat_map(|v| v.keys()).collect();
    names.sort();
    names.dedup();
    let steps: Vec<u32> = per_step.keys().copied().collect();
    let values: Map<String, Value> = names
        .iter()
        .map(|name| {
            let col: Vec<Value> = per_step
                .values()
                .map(|v| finite(v.get(*name).copied()))
                .collect();
            ((*name).clone(), Value::Array(col))
        })
        .collect();
    json!({"steps": steps, "names": names, "values": values})
}

pub fn events_json(events: &[TrialEvent]) -> Value {
    Value::Array(
        events
            .iter()
            .map(|e| {
                json!({
                    "at_ms": e.at_ms,
                    "kind": e.kind.as_str(),
                    "attempt": e.attempt,
                    "worker": e.worker.as_ref().map(|w| w.0.clone()),
                    "slot": e.slot,
                    "step": e.step,
                    "rung": e.rung,
                    "budget": e.budget,
                    "reason": e.reason,
                })
            })
            .collect(),
    )
}

/// Sort keys of the trials table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortKey {
    Number,
    Value,
    State,
    LastStep,
    Duration,
    Started,
    Param(String),
}

impl SortKey {
    pub fn parse(s: &str, record: &StudyRecord) -> Result<SortKey, String> {
        Ok(match s {
            "" | "number" => SortKey::Number,
            "value" => SortKey::Value,
            "state" => SortKey::State,
            "last_step" => SortKey::LastStep,
            "duration" => SortKey::Duration,
            "started" => SortKey::Started,
            other => match other.strip_prefix("param.") {
                Some(p) if record.spec.params.contains_key(p) => SortKey::Param(p.to_string()),
                Some(p) => return Err(format!("sort: the study has no parameter `{p}`")),
                None => {
                    return Err(format!(
                        "sort: `{other}` is not one of number, value, state, last_step, duration, started, param.NAME"
                    ));
                }
            },
        })
    }
}

/// A sortable cell: numbers before strings; None (missing) sorts last in
/// either order.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Cell {
    Num(f64),
    Text(String),
}

fn cell(t: &TrialRecord, key: &SortKey, now: i64) -> Option<Cell> {
    match key {
        SortKey::Number => Some(Cell::Num(f64::from(t.id.number))),
        SortKey::Value => t.value.filter(|v| v.is_finite()).map(Cell::Num),
        SortKey::State => Some(Cell::Text(t.state.as_str().to_string())),
        SortKey::LastStep => t.last_step.map(|s| Cell::Num(f64::from(s))),
        SortKey::Duration => (t.started_at_ms > 0).then(|| {
            let end = if t.ended_at_ms > 0 {
                t.ended_at_ms
            } else {
                now
            };
            Cell::Num((end - t.started_at_ms) as f64)
        }),
        SortKey::Started => (t.started_at_ms > 0).then_some(Cell::Num(t.started_at_ms as f64)),
        SortKey::Param(p) => t.params.get(p).map(|v| match v {
            ParamValue::Float(f) => Cell::Num(*f),
            ParamValue::Int(i) => Cell::Num(*i as f64),
            ParamValue::Categorical(s) => Cell::Text(s.clone()),
        }),
    }
}

/// Sorts trials by `key` (`desc` reverses), missing keys last, ties by
/// number.
pub fn sort_trials(trials: &mut [&TrialRecord], key: &SortKey, desc: bool) {
    let now = now_ms();
    trials.sort_by(|a, b| {
        let (x, y) = (cell(a, key, now), cell(b, key, now));
        let ord = match (x, y) {
            (None, None) => std::cmp::Ordering::Equal,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(_), None) => std::cmp::Ordering::Less,
            (Some(x), Some(y)) => {
                let o = x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal);
                if desc { o.reverse() } else { o }
            }
        };
        ord.then(a.id.number.cmp(&b.id.number))
    });
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The trials as CSV: fixed columns, then one per parameter.
pub fn trials_csv(record: &StudyRecord, trials: &[&TrialRecord]) -> String {
    let mut out = String::from(
        "number,state,value,last_step,attempt,worker,rung,budget,started_at_ms,ended_at_ms,reason",
    );
    for p in record.spec.params.keys() {
        out.push(',');
        out.push_str(&csv_field(p));
    }
    out.push('\n');
    for t in trials {
        let fields = [
            t.id.number.to_string(),
            t.state.as_str().to_string(),
            t.value.map(|v| v.to_string()).unwrap_or_default(),
            t.last_step.map(|v| v.to_string()).unwrap_or_default(),
            t.attempt.to_string(),
            t.worker.as_ref().map(|w| w.0.clone()).unwrap_or_default(),
            t.placement.rung.to_string(),
            t.placement.budget.to_string(),
            t.started_at_ms.to_string(),
            t.ended_at_ms.to_string(),
            t.reason.clone(),
        ];
        let mut row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        for p in record.spec.params.keys() {
            row.push(match t.params.get(p) {
                Some(ParamValue::Float(f)) => f.to_string(),
                Some(ParamValue::Int(i)) => i.to_string(),
                Some(ParamValue::Categorical(s)) => csv_field(s),
                None => String::new(),
            });
        }
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

/// Parameters against the objective, columnar, for parallel coordinates
/// and slice plots.
pub fn params_rows_json(record: &StudyRecord, trials: &[&TrialRecord], total: usize) -> Value {
    let mut columns: Map<String, Value> = Map::new();
    for name in record.spec.params.keys() {
        let col: Vec<Value> = trials
            .iter()
            .map(|t| t.params.get(name).map_or(Value::Null, param_value))
            .collect();
        columns.insert(name.clone(), Value::Array(col));
    }
    json!({
        "params": param_specs_json(record),
        "total": total,
        "trial": trials.iter().map(|t| t.id.number).collect::<Vec<_>>(),
        "state": trials.iter().map(|t| t.state.as_str()).collect::<Vec<_>>(),
        "value": trials.iter().map(|t| finite(t.value)).collect::<Vec<_>>(),
        "columns": columns,
    })
}

/// A trial's log as the API answers it.
pub fn log_json(log: &hpo_proto::TrialLog) -> Value {
    json!({
        "text": log.text, "start": log.start, "total": log.total, "dropped": log.dropped,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::storage::{Placement, rules};
    use hpo_proto::StudyId;
    use hpo_proto::study::StudySpec;

    fn record() -> StudyRecord {
        let spec = StudySpec::parse(
            r#"
name = "v"
[objective]
metric = "acc"
direction = "maximize"
[search]
algorithm = "random"
max_trials = 10
[trainer]
kind = "simulated"
epochs = 5
[params]
lr = { type = "float", low = 0.001, high = 0.1, log = true }
act = ["relu", "tanh"]
"#,
            "v.toml",
        )
        .unwrap();
        StudyRecord {
            schema: 1,
            id: StudyId(1),
            spec,
            study_toml: String::new(),
            seed: 1,
            state: hpo_proto::StudyState::Running,
            end_reason: String::new(),
            created_at_ms: 0,
            ended_at_ms: 0,
        }
    }

    fn trial(n: u32, state: TrialState, value: Option<f64>, lr: f64, act: &str) -> TrialRecord {
        let params: Params = [
            ("lr".to_string(), ParamValue::Float(lr)),
            ("act".to_string(), ParamValue::Categorical(act.into())),
        ]
        .into_iter()
        .collect();
        let mut t = rules::new_trial(StudyId(1), n, params, Placement::default(), 0);
        t.state = state;
        t.value = value;
        t
    }

    #[test]
    fn downsampling_keeps_the_ends_and_the_extremes() {
        let steps: Vec<u32> = (1..=1000).collect();
        let mut values: Vec<f64> = steps.iter().map(|s| f64::from(*s) * 0.001).collect();
        values[500] = 9.0;
        let (s, v) = downsample(&steps, &values, 100);
        assert!(s.len() <= 100, "{}", s.len());
        assert_eq!(s[0], 1);
        assert_eq!(*s.last().unwrap(), 1000);
        assert!(v.contains(&9.0));
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        let (s, _) = downsample(&steps[..50], &values[..50], 100);
        assert_eq!(s.len(), 50);
    }

    #[test]
    fn sorting_puts_missing_values_last_in_both_orders() {
        let rows = [
            trial(0, TrialState::Completed, Some(0.5), 0.01, "relu"),
            trial(1, TrialState::Running, None, 0.001, "tanh"),
            trial(2, TrialState::Completed, Some(0.9), 0.1, "relu"),
        ];
        let mut refs: Vec<&TrialRecord> = rows.iter().collect();
        sort_trials(&mut refs, &SortKey::Value, true);
        let order: Vec<u32> = refs.iter().map(|t| t.id.number).collect();
        assert_eq!(order, vec![2, 0, 1]);
        sort_trials(&mut refs, &SortKey::Value, false);
        let order: Vec<u32> = refs.iter().map(|t| t.id.number).collect();
        assert_eq!(order, vec![0, 2, 1]);
        sort_trials(&mut refs, &SortKey::Param("lr".into()), false);
        let order: Vec<u32> = refs.iter().map(|t| t.id.number).collect();
        assert_eq!(order, vec![1, 0, 2]);
        sort_trials(&mut refs, &SortKey::Param("act".into()), true);
        let order: Vec<u32> = refs.iter().map(|t| t.id.number).collect();
        assert_eq!(order, vec![1, 0, 2]);
    }

    #[test]
    fn sort_keys_name_what_is_wrong() {
        let r = record();
        assert_eq!(
            SortKey::parse("param.lr", &r),
            Ok(SortKey::Param("lr".into()))
        );
        assert!(
            SortKey::parse("param.nope", &r)
                .unwrap_err()
                .contains("`nope`")
        );
        assert!(
            SortKey::parse("colour", &r)
                .unwrap_err()
                .contains("`colour`")
        );
    }

    #[test]
    fn picking_keeps_the_running_and_the_best_then_samples() {
        let mut rows = Vec::new();
        for n in 0..100 {
            rows.push(trial(
                n,
                TrialState::Completed,
                Some(f64::from(n)),
                0.01,
                "relu",
            ));
        }
        rows.push(trial(100, TrialState::Running, None, 0.01, "relu"));
        let always: Vec<&TrialRecord> = rows
            .iter()
            .filter(|t| t.state == TrialState::Running)
            .collect();
        let finished: Vec<&TrialRecord> = rows.iter().filter(|t| t.value.is_some()).collect();
        let picked = pick_trials(Direction::Maximize, always, finished, 11);
        let numbers: Vec<u32> = picked.iter().map(|t| t.id.number).collect();
        assert_eq!(numbers.len(), 11);
        assert!(numbers.contains(&100));
        // The best five (maximize) are all there.
        for n in 95..100 {
            assert!(numbers.contains(&n), "{numbers:?}");
        }
        assert!(numbers.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let r = record();
        let mut t = trial(0, TrialState::Failed, None, 0.01, "relu");
        t.reason = "boom, \"bad\"".into();
        let csv = trials_csv(&r, &[&t]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "number,state,value,last_step,attempt,worker,rung,budget,started_at_ms,ended_at_ms,reason,act,lr"
        );
        assert!(lines[1].starts_with("0,failed,,"));
        assert!(lines[1].contains("\"boom, \"\"bad\"\"\""));
        assert!(lines[1].ends_with(",relu,0.01"));
    }

    #[test]
    fn the_latest_attempt_wins_at_each_step() {
        let mk = |attempt, step, v: f64| MetricPoint {
            attempt,
            step,
            values: [("acc".to_string(), v)].into_iter().collect(),
        };
        let pts = vec![mk(1, 1, 0.1), mk(1, 2, 0.2), mk(2, 2, 0.25), mk(2, 3, 0.3)];
        let m = metrics_json(&pts);
        assert_eq!(m["steps"], json!([1, 2, 3]));
        assert_eq!(m["values"]["acc"], json!([0.1, 0.25, 0.3]));
    }
}
