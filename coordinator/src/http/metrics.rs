//! `/metrics` in Prometheus' text format, written by hand: a dozen series
//! do not need a metrics library, and the format is a few lines.

use super::{AppState, Params, check_read, storage_error};
use crate::telemetry::{BUCKETS, HistogramSnapshot};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use hpo_proto::{TrialCounts, TrialState};
use std::fmt::Write;
use std::sync::atomic::Ordering;

pub(super) async fn render(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, super::ApiError> {
    check_read(&state, &headers, &q)?;
    let storage = state.engine.storage();
    let mut counts = TrialCounts::default();
    let mut studies_running = 0;
    for record in storage.studies().map_err(storage_error)? {
        if record.state == hpo_proto::StudyState::Running {
            studies_running += 1;
        }
        for t in state.cache.get(&state.engine, &record)?.iter() {
            counts.add(t.state);
        }
    }
    let t = state.engine.telemetry();
    let workers = state.engine.workers();
    let connected: Vec<_> = workers.iter().filter(|w| w.connected).collect();
    let slots: usize = connected.iter().map(|w| w.slots.len()).sum();
    let busy: usize = connected.iter().map(|w| w.running.len()).sum();

    let mut out = String::new();
    header_line(&mut out, "hpo_trials", "gauge", "Trials by state.");
    for s in TrialState::ALL {
        let n = match s {
            TrialState::Waiting => counts.waiting,
            TrialState::Running => counts.running,
            TrialState::Paused => counts.paused,
            TrialState::Completed => counts.completed,
            TrialState::Failed => counts.failed,
            TrialState::Stopped => counts.stopped,
            TrialState::Cancelled => counts.cancelled,
        };
        let _ = writeln!(out, "hpo_trials{{state=\"{}\"}} {n}", s.as_str());
    }
    header_line(&mut out, "hpo_studies_running", "gauge", "Studies running.");
    let _ = writeln!(out, "hpo_studies_running {studies_running}");
    counter(
        &mut out,
        "hpo_reports_total",
        "Metric reports accepted.",
        t.reports.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "hpo_trials_started_total",
        "Trials (and resumed segments) handed to workers.",
        t.trials_started.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "hpo_lease_expiries_total",
        "Leases that ran out (a worker went silent).",
        t.lease_expiries.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "hpo_log_bytes_total",
        "Trial log text received from workers, in bytes (retries included).",
        t.log_bytes.load(Ordering::Relaxed),
    );
    header_line(
        &mut out,
        "hpo_workers_connected",
        "gauge",
        "Workers heard from within the lease time.",
    );
    let _ = writeln!(out, "hpo_workers_connected {}", connected.len());
    header_line(
        &mut out,
        "hpo_slots",
        "gauge",
        "Slots of connected workers.",
    );
    let _ = writeln!(out, "hpo_slots {slots}");
    header_line(
        &mut out,
        "hpo_slots_busy",
        "gauge",
        "Slots running a trial.",
    );
    let _ = writeln!(out, "hpo_slots_busy {busy}");
    histograms(
        &mut out,
        "hpo_grpc_request_duration_seconds",
        "Worker and client calls, by method.",
        "method",
        &t.grpc.snapshot(),
    );
    histograms(
        &mut out,
        "hpo_http_request_duration_seconds",
        "Dashboard and API requests, by route.",
        "route",
        &t.http.snapshot(),
    );
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}

fn header_line(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header_line(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn histograms(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    series: &[(String, HistogramSnapshot)],
) {
    header_line(out, name, "histogram", help);
    for (key, h) in series {
        let key = escape(key);
        for (le, n) in BUCKETS.iter().zip(&h.buckets) {
            let _ = writeln!(out, "{name}_bucket{{{label}=\"{key}\",le=\"{le}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{label}=\"{key}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "{name}_sum{{{label}=\"{key}\"}} {}", h.sum_seconds);
        let _ = writeln!(out, "{name}_count{{{label}=\"{key}\"}} {}", h.count);
    }
}
