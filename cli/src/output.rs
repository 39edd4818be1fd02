//! Tables, CSV and JSON for studies and trials.

use crate::Format;
use crate::progress::best_text;
use anyhow::Result;
use hpo_proto::{ParamValue, StudyInfo, TrialInfo, TrialState};
use hpo_sdk::Client;
use std::collections::BTreeSet;
use std::process::ExitCode;

fn table(headers: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(headers);
    out.push('\n');
    for r in rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv(headers: &[String], rows: &[Vec<String>]) -> String {
    let mut out = headers
        .iter()
        .map(|h| csv_cell(h))
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    for r in rows {
        out.push_str(&r.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

/// Parameters as people read them: 4 significant digits, exponent notation
/// for very small or large floats (JSON output keeps full precision).
fn param_text(v: &ParamValue) -> String {
    match v {
        ParamValue::Float(f) if *f == 0.0 => "0".into(),
        ParamValue::Float(f) if f.abs() >= 1e-3 && f.abs() < 1e4 => {
            let digits = (3 - f.abs().log10().floor() as i32).max(0) as usize;
            let s = format!("{f:.digits$}");
            if s.contains('.') {
                s.trim_end_matches('0').trim_end_matches('.').to_string()
            } else {
                s
            }
        }
        ParamValue::Float(f) => {
            let s = format!("{f:.3e}");
            match s.split_once('e') {
                Some((m, e)) if m.contains('.') => {
                    format!("{}e{e}", m.trim_end_matches('0').trim_end_matches('.'))
                }
                _ => s,
            }
        }
        other => other.to_string(),
    }
}

fn value_text(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.6}")).unwrap_or_default()
}

fn param_json(v: &ParamValue) -> serde_json::Value {
    match v {
        ParamValue::Float(f) => serde_json::json!(f),
        ParamValue::Int(i) => serde_json::json!(i),
        ParamValue::Categorical(s) => serde_json::json!(s),
    }
}

fn trial_json(t: &TrialInfo) -> serde_json::Value {
    serde_json::json!({
        "study": t.id.study.0,
        "number": t.id.number,
        "state": t.state.as_str(),
        "value": t.value,
        "last_step": t.last_step,
        "attempt": t.attempt,
        "worker": t.worker.as_ref().map(|w| w.0.clone()),
        "reason": t.reason,
        "started_at_ms": t.started_at_ms,
        "ended_at_ms": t.ended_at_ms,
        "bracket": t.bracket,
        "rung": t.rung,
        "budget": t.budget,
        "params": t.params.iter().map(|(k, v)| (k.clone(), param_json(v))).collect::<serde_json::Map<_, _>>(),
    })
}

fn duration_text(t: &TrialInfo) -> String {
    if t.started_at_ms == 0 || t.ended_at_ms < t.started_at_ms {
        return String::new();
    }
    format!("{:.1}s", (t.ended_at_ms - t.started_at_ms) as f64 / 1000.0)
}

fn trial_rows(info: &StudyInfo, trials: &[&TrialInfo]) -> (Vec<String>, Vec<Vec<String>>) {
    let names: BTreeSet<&String> = trials.iter().flat_map(|t| t.params.keys()).collect();
    let scheduled = info.scheduler != "none";
    let mut headers: Vec<String> = ["trial", "state", info.metric.as_str(), "steps", "time"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if scheduled {
        headers.extend(["bracket".to_string(), "rung".to_string()]);
    }
    headers.extend(names.iter().map(|n| n.to_string()));
    let rows = trials
        .iter()
        .map(|t| {
            let mut r = vec![
                t.id.number.to_string(),
                t.state.to_string(),
                value_text(t.value),
                t.last_step.map(|s| s.to_string()).unwrap_or_default(),
                duration_text(t),
            ];
            if scheduled {
                r.extend([t.bracket.to_string(), t.rung.to_string()]);
            }
            r.extend(
                names
                    .iter()
                    .map(|n| t.params.get(*n).map(param_text).unwrap_or_default()),
            );
            r
        })
        .collect();
    (headers, rows)
}

pub fn print_trials(info: &StudyInfo, trials: &[TrialInfo], format: Format) -> Result<()> {
    match format {
        Format::Json => {
            let all: Vec<_> = trials.iter().map(trial_json).collect();
            println!("{}", serde_json::to_string_pretty(&all)?);
        }
        Format::Csv | Format::Table => {
            let refs: Vec<&TrialInfo> = trials.iter().collect();
            let (mut headers, mut rows) = trial_rows(info, &refs);
            headers.push("reason".into());
            for (r, t) in rows.iter_mut().zip(trials) {
                r.push(t.reason.clone());
            }
            if format == Format::Csv {
                print!("{}", csv(&headers, &rows));
            } else {
                print!("{}", table(&headers, &rows));
            }
        }
    }
    Ok(())
}

pub fn print_best(info: &StudyInfo, format: Format) -> Result<ExitCode> {
    let Some(best) = &info.best else {
        eprintln!("study {} has no completed trial yet", info.id);
        return Ok(ExitCode::FAILURE);
    };
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&trial_json(best))?),
        Format::Csv => {
            let (h, r) = trial_rows(info, &[best]);
            print!("{}", csv(&h, &r));
        }
        Format::Table => {
            println!(
                "best trial {} of study {} ({}): {} = {}",
                best.id.number,
                info.id,
                info.name,
                info.metric,
                value_text(best.value)
            );
            for (k, v) in &best.params {
                println!("  {k} = {}", param_text(v));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn print_studies(studies: &[StudyInfo]) {
    if studies.is_empty() {
        println!("no studies");
        return;
    }
    let headers: Vec<String> = ["id", "name", "state", "trials", "running", "best"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let rows: Vec<Vec<String>> = studies
        .iter()
        .map(|s| {
            vec![
                s.id.to_string(),
                s.name.clone(),
                s.state.to_string(),
                format!("{}/{}", s.counts.finished(), s.max_trials),
                s.counts.running.to_string(),
                best_text(s),
            ]
        })
        .collect();
    print!("{}", table(&headers, &rows));
}

pub fn print_status(s: &StudyInfo) {
    println!("study {} ({})", s.id, s.name);
    let state = if s.end_reason.is_empty() {
        s.state.to_string()
    } else {
        format!("{} ({})", s.state, s.end_reason)
    };
    println!("  state      {state}");
    println!("  objective  {} {}", s.direction.as_str(), s.metric);
    let c = &s.counts;
    println!(
        "  trials     {}/{} done: {} completed, {} failed, {} stopped, {} cancelled; {} running, {} paused, {} waiting",
        c.finished(),
        s.max_trials,
        c.completed,
        c.failed,
        c.stopped,
        c.cancelled,
        c.running,
        c.paused,
        c.waiting
    );
    if s.scheduler != "none" {
        println!(
            "  scheduler  {}, {} resource units trained (epochs, or data-fraction levels)",
            s.scheduler, s.resource_used
        );
    }
    println!("  {}", best_text(s));
}

/// The end of `hpo run` and `hpo submit --wait`: the top trials and the best
/// parameters.
pub async fn print_summary(client: &Client, info: &StudyInfo, top: usize) -> Result<()> {
    let trials = client.trials(info.id, false).await?;
    let mut done: Vec<&TrialInfo> = trials
        .iter()
        .filter(|t| t.state == TrialState::Completed && t.value.is_some())
        .collect();
    done.sort_by(|a, b| {
        let (a, b) = (a.value.unwrap_or(f64::NAN), b.value.unwrap_or(f64::NAN));
        let ord = a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal);
        if info.direction == hpo_proto::Direction::Maximize {
            ord.reverse()
        } else {
            ord
        }
    });
    done.truncate(top);
    println!();
    print_status(info);
    if !done.is_empty() {
        println!();
        println!("top {} trials:", done.len());
        let (h, r) = trial_rows(info, &done);
        print!("{}", table(&h, &r));
        println!();
        print_best(info, Format::Table)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_shown_with_four_significant_digits() {
        let f = |v| param_text(&ParamValue::Float(v));
        assert_eq!(f(0.491299865834266), "0.4913");
        assert_eq!(f(0.001), "0.001");
        assert_eq!(f(1e-4), "1e-4");
        assert_eq!(f(1.25e-5), "1.25e-5");
        assert_eq!(f(123.456), "123.5");
        assert_eq!(f(0.0), "0");
        assert_eq!(param_text(&ParamValue::Int(512)), "512");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
    }
}
