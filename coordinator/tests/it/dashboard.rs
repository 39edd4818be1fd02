//! The dashboard's HTTP API against a real coordinator: every endpoint,
//! bad input answered 4xx with a JSON message, the token rules, live events
//! and `/metrics`.

use crate::{Server, XY, loss, study};
use hpo_coordinator::http::{DashboardAuth, HttpConfig};
use hpo_proto::{Outcome, StudyId};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

const TOKEN: &str = "s3cret";

fn config(auth: DashboardAuth) -> HttpConfig {
    HttpConfig {
        token: Some(TOKEN.into()),
        auth,
    }
}

async fn get(base: &str, path: &str) -> (StatusCode, Value) {
    let r = reqwest::get(format!("{base}{path}")).await.unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, json)
}

async fn post(base: &str, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().post(format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A 4xx answer with a JSON message that contains `needle`.
fn refused(answer: &(StatusCode, Value), status: StatusCode, needle: &str) {
    assert_eq!(answer.0, status, "{:?}", answer.1);
    let msg = answer.1["error"].as_str().unwrap_or_default();
    assert!(msg.contains(needle), "`{msg}` does not mention `{needle}`");
}

/// A study of 5 trials so far (of 6): 4 completed with values, 1 running
/// (reported two steps).
async fn populated(server: &Server) -> StudyId {
    let client = server.client().await;
    let id = client
        .submit(&study("random", 6, 6, "", XY), "dash.toml")
        .await
        .unwrap();
    let w = server.worker("dash-worker").await;
    for _ in 0..4 {
        let a = w.acquire("cpu:0").await.unwrap().unwrap();
        crate::run_trial(&w, &a).await;
    }
    let a = w.acquire("cuda:1").await.unwrap().unwrap();
    w.report(a.trial, a.attempt, 1, &loss(0.9)).await.unwrap();
    w.report(a.trial, a.attempt, 2, &loss(0.8)).await.unwrap();
    id
}

#[tokio::test]
async fn every_read_endpoint_answers_with_the_study_data() {
    let server = Server::with_dashboard(config(DashboardAuth::Actions)).await;
    let base = server.http.clone().unwrap();
    let id = populated(&server).await;

    let (s, v) = get(&base, "/api/config").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["auth"], "actions");

    let (s, v) = get(&base, "/api/studies").await;
    assert_eq!(s, StatusCode::OK);
    let st = &v["studies"][0];
    assert_eq!(st["id"], id.0);
    assert_eq!(st["state"], "running");
    assert_eq!(st["counts"]["completed"], 4);
    assert_eq!(st["counts"]["running"], 1);
    assert_eq!(st["sampler"], "random");
    assert!(st["best_value"].is_number());
    let (_, v) = get(&base, "/api/studies?state=completed").await;
    assert_eq!(v["studies"].as_array().unwrap().len(), 0);

    let (s, v) = get(&base, &format!("/api/studies/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["params"].as_array().unwrap().len(), 2);
    assert!(v["best"]["number"].is_number());
    assert_eq!(v["resource"]["unit"], "epochs");
    assert_eq!(v["seed"], 11);

    let (_, v) = get(&base, &format!("/api/studies/{id}/history")).await;
    assert_eq!(v["trial"].as_array().unwrap().len(), 4);
    assert_eq!(v["direction"], "minimize");

    let (_, v) = get(&base, &format!("/api/studies/{id}/curves")).await;
    assert_eq!(v["shown"], 5);
    let running = v["curves"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["state"] == "running")
        .unwrap();
    assert_eq!(running["steps"], serde_json::json!([1, 2]));
    assert_eq!(running["values"], serde_json::json!([0.9, 0.8]));
    let (_, v) = get(&base, &format!("/api/studies/{id}/curves?max=2")).await;
    assert_eq!(v["shown"], 2);

    let (_, v) = get(&base, &format!("/api/studies/{id}/params")).await;
    assert_eq!(v["trial"].as_array().unwrap().len(), 4);
    assert_eq!(v["columns"]["x"].as_array().unwrap().len(), 4);

    let (s, v) = get(&base, &format!("/api/studies/{id}/importance")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["method"], "ped-anova");
    assert_eq!(v["importances"].as_array().unwrap().len(), 2);

    // The table: sorted, filtered, paginated on the server.
    let (_, v) = get(
        &base,
        &format!("/api/studies/{id}/trials?sort=value&order=desc&per_page=2&page=2"),
    )
    .await;
    assert_eq!(v["total"], 5);
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let (_, all) = get(
        &base,
        &format!("/api/studies/{id}/trials?sort=value&order=desc"),
    )
    .await;
    let values: Vec<Option<f64>> = all["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_f64())
        .collect();
    let finite: Vec<f64> = values.iter().flatten().copied().collect();
    assert!(finite.windows(2).all(|w| w[0] >= w[1]), "{values:?}");
    assert_eq!(values[4], None, "trials without a value come last");
    assert_eq!(rows[0]["number"], all["rows"][2]["number"]);
    let (_, v) = get(
        &base,
        &format!("/api/studies/{id}/trials?state=running,waiting"),
    )
    .await;
    assert_eq!(v["total"], 1);
    let (_, v) = get(&base, &format!("/api/studies/{id}/trials?sort=param.y")).await;
    assert_eq!(v["rows"].as_array().unwrap().len(), 5);

    let r = reqwest::get(format!(
        "{base}/api/studies/{id}/trials.csv?state=completed"
    ))
    .await
    .unwrap();
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains(".csv")
    );
    let csv = r.text().await.unwrap();
    assert_eq!(csv.lines().count(), 5);
    assert!(csv.starts_with("number,state,value,"));
    assert!(csv.lines().next().unwrap().ends_with(",x,y"));
    let (_, v) = get(&base, &format!("/api/studies/{id}/trials.json")).await;
    assert_eq!(v.as_array().unwrap().len(), 5);

    // A trial: events (with the slot it ran on), metrics per step.
    let running_number = running["trial"].as_u64().unwrap();
    let (s, v) = get(&base, &format!("/api/studies/{id}/trials/{running_number}")).await;
    assert_eq!(s, StatusCode::OK);
    let kinds: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["created", "started"]);
    assert_eq!(v["events"][1]["slot"], "cuda:1");
    assert_eq!(v["events"][1]["worker"], "dash-worker");
    assert_eq!(v["metrics"]["steps"], serde_json::json!([1, 2]));
    assert_eq!(
        v["metrics"]["values"]["loss"],
        serde_json::json!([0.9, 0.8])
    );
    let (_, v) = get(&base, &format!("/api/studies/{id}/trials/0")).await;
    let kinds: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["created", "started", "completed"]);

    // Workers: the slot that runs a trial now.
    let (_, v) = get(&base, "/api/workers").await;
    let w = &v["workers"][0];
    assert_eq!(w["id"], "dash-worker");
    assert_eq!(w["connected"], true);
    assert_eq!(w["running"][0]["slot"], "cuda:1");
    assert_eq!(w["running"][0]["trial"], running_number);
    assert!(w["utilisation_1h"].as_f64().unwrap() > 0.0);

    // Pages and assets.
    let r = reqwest::get(format!("{base}/")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    for a in ["app.js", "charts.js", "style.css"] {
        let r = reqwest::get(format!("{base}/assets/{a}")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{a}");
    }

    // Prometheus.
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("hpo_reports_total 14"), "{text}");
    assert!(text.contains("hpo_trials{state=\"completed\"} 4"));
    assert!(text.contains("hpo_workers_connected 1"));
    assert!(text.contains("hpo_slots_busy 1"));
    assert!(text.contains("hpo_http_request_duration_seconds_count{route=\"/api/studies/{id}\"}"));
    assert!(text.contains("hpo_grpc_request_duration_seconds_count{method=\"report\"} 14"));
    server.stop().await;
}

#[tokio::test]
async fn bad_input_is_a_4xx_with_a_message() {
    let server = Server::with_dashboard(config(DashboardAuth::Actions)).await;
    let base = server.http.clone().unwrap();
    let id = populated(&server).await;
    let cases = [
        (
            "/api/studies/abc",
            StatusCode::BAD_REQUEST,
            "`abc` is not a number",
        ),
        (
            "/api/studies/999",
            StatusCode::NOT_FOUND,
            "study 999 not found",
        ),
        (
            "/api/studies/999/trials",
            StatusCode::NOT_FOUND,
            "not found",
        ),
        (
            "/api/studies?state=sleeping",
            StatusCode::BAD_REQUEST,
            "`sleeping`",
        ),
        ("/api/nothing", StatusCode::NOT_FOUND, "no such page"),
        ("/assets/secret.txt", StatusCode::NOT_FOUND, "secret.txt"),
    ];
    for (path, status, needle) in cases {
        refused(&get(&base, path).await, status, needle);
    }
    let per_study = [
        ("trials?page=0", "page"),
        ("trials?per_page=100000", "per_page"),
        ("trials?per_page=ten", "`ten`"),
        ("trials?sort=colour", "`colour`"),
        ("trials?sort=param.z", "`z`"),
        ("trials?order=up", "`up`"),
        ("trials?state=done", "`done`"),
        ("curves?max=0", "max"),
        ("params?max=-1", "max"),
        ("trials/x", "`x`"),
        ("trials.csv?sort=colour", "`colour`"),
    ];
    for (path, needle) in per_study {
        refused(
            &get(&base, &format!("/api/studies/{id}/{path}")).await,
            StatusCode::BAD_REQUEST,
            needle,
        );
    }
    refused(
        &get(&base, &format!("/api/studies/{id}/trials/77")).await,
        StatusCode::NOT_FOUND,
        "not found",
    );
    server.stop().await;
}

#[tokio::test]
async fn actions_need_the_token_and_work_with_it() {
    let server = Server::with_dashboard(config(DashboardAuth::Actions)).await;
    let base = server.http.clone().unwrap();
    let id = populated(&server).await;
    let client = server.client().await;

    refused(
        &post(&base, &format!("/api/studies/{id}/cancel"), None).await,
        StatusCode::UNAUTHORIZED,
        "token",
    );
    refused(
        &post(&base, &format!("/api/studies/{id}/cancel"), Some("guess")).await,
        StatusCode::UNAUTHORIZED,
        "token",
    );
    assert_eq!(
        client.study(id).await.unwrap().state,
        hpo_proto::StudyState::Running
    );

    refused(
        &post(
            &base,
            &format!("/api/studies/{id}/trials/5/stop"),
            Some(TOKEN),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not found",
    );
    refused(
        &post(
            &base,
            &format!("/api/studies/{id}/trials/0/stop"),
            Some(TOKEN),
        )
        .await,
        StatusCode::CONFLICT,
        "already ended",
    );

    // The running trial (4) is told to stop at its next report.
    let (s, _) = post(
        &base,
        &format!("/api/studies/{id}/trials/4/stop"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let w = server.worker("dash-worker").await;
    let t = hpo_proto::TrialId {
        study: id,
        number: 4,
    };
    let d = w.report(t, 1, 3, &loss(0.7)).await.unwrap();
    assert_eq!(d, hpo_proto::Decision::Stop);
    let (_, v) = get(&base, &format!("/api/studies/{id}/trials/4")).await;
    assert_eq!(v["trial"]["state"], "stopped");
    assert_eq!(v["trial"]["value"], 0.7);
    assert!(
        v["trial"]["reason"]
            .as_str()
            .unwrap()
            .contains("stopped from the dashboard at step 3")
    );
    let _ = w.finish(t, 1, &Outcome::Completed).await;

    let (s, v) = post(&base, &format!("/api/studies/{id}/cancel"), Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_ne!(v["state"], "running");
    refused(
        &post(&base, &format!("/api/studies/{id}/cancel"), Some(TOKEN)).await,
        StatusCode::CONFLICT,
        "already ended",
    );
    refused(
        &post(&base, "/api/studies/999/cancel", Some(TOKEN)).await,
        StatusCode::NOT_FOUND,
        "not found",
    );
    server.stop().await;
}

#[tokio::test]
async fn without_a_token_actions_are_off_and_read_auth_guards_reads() {
    let open = Server::with_dashboard(HttpConfig::default()).await;
    let base = open.http.clone().unwrap();
    let id = populated(&open).await;
    let (_, v) = get(&base, "/api/config").await;
    assert_eq!(v["auth"], "none");
    refused(
        &post(&base, &format!("/api/studies/{id}/cancel"), Some("any")).await,
        StatusCode::FORBIDDEN,
        "--dashboard-token",
    );
    open.stop().await;

    let guarded = Server::with_dashboard(config(DashboardAuth::Read)).await;
    let base = guarded.http.clone().unwrap();
    let id = populated(&guarded).await;
    for path in [
        "/api/studies".to_string(),
        format!("/api/studies/{id}/trials"),
        "/api/workers".into(),
        "/metrics".into(),
        "/api/events".into(),
    ] {
        refused(&get(&base, &path).await, StatusCode::UNAUTHORIZED, "token");
    }
    let (s, _) = get(&base, "/api/config").await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the page must learn that it needs a token"
    );
    let (s, _) = get(&base, "/").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = get(&base, &format!("/api/studies?token={TOKEN}")).await;
    assert_eq!(s, StatusCode::OK);
    let r = reqwest::Client::new()
        .get(format!("{base}/api/studies/{id}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    guarded.stop().await;
}

#[tokio::test]
async fn reports_arrive_as_server_sent_events() {
    let server = Server::with_dashboard(config(DashboardAuth::Actions)).await;
    let base = server.http.clone().unwrap();
    let id = populated(&server).await;
    let mut stream = reqwest::get(format!("{base}/api/events?study={id}"))
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let w = server.worker("dash-worker").await;
    let t = hpo_proto::TrialId {
        study: id,
        number: 4,
    };
    w.report(t, 1, 3, &loss(0.5)).await.unwrap();
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = stream.chunk().await.unwrap() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("event: report") && seen.contains("\"step\":3") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "{seen}");
    assert!(seen.contains(&format!("\"study\":{}", id.0)));
    assert!(seen.contains("\"value\":0.5"));
    // The server stops although the stream is still open.
    tokio::time::timeout(Duration::from_secs(10), server.stop())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_paused_trial_stopped_from_the_dashboard_keeps_its_value_and_story() {
    let server = Server::with_dashboard(config(DashboardAuth::Actions)).await;
    let base = server.http.clone().unwrap();
    let client = server.client().await;
    let text = r#"
name = "asha"
seed = 5
[objective]
metric = "loss"
direction = "minimize"
[search]
algorithm = "random"
max_trials = 20
max_parallel = 4
[trainer]
kind = "simulated"
epochs = 9
[schedule]
algorithm = "asha"
min_resource = 1
reduction_factor = 3
[params]
x = { type = "float", low = 0.0, high = 1.0 }
"#;
    let id = client.submit(text, "asha.toml").await.unwrap();
    let w = server.worker("pauser").await;
    let a = w.acquire("cpu:3").await.unwrap().unwrap();
    assert_eq!(
        w.report(a.trial, a.attempt, 1, &loss(0.4)).await.unwrap(),
        hpo_proto::Decision::Pause
    );
    w.upload_checkpoint(a.trial, a.attempt, 1, b"state")
        .await
        .unwrap();
    w.finish(a.trial, a.attempt, &Outcome::Paused { step: 1 })
        .await
        .unwrap();
    let n = a.trial.number;
    let (_, v) = get(&base, &format!("/api/studies/{id}/trials/{n}")).await;
    assert_eq!(v["trial"]["state"], "paused");
    let (s, v) = post(
        &base,
        &format!("/api/studies/{id}/trials/{n}/stop"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "stopped");
    assert_eq!(v["value"], 0.4);
    let (_, v) = get(&base, &format!("/api/studies/{id}/trials/{n}")).await;
    let events: Vec<(String, Value)> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap().to_string(), e.clone()))
        .collect();
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, vec!["created", "started", "paused", "stopped"]);
    assert_eq!(events[1].1["slot"], "cpu:3");
    assert_eq!(events[2].1["step"], 1);
    assert_eq!(events[2].1["budget"], 1);
    assert_eq!(events[3].1["reason"], "stopped from the dashboard");
    server.stop().await;
}

#[tokio::test]
async fn a_trials_log_is_served_with_the_trial_and_from_any_offset() {
    let server = Server::with_dashboard(config(DashboardAuth::Actions)).await;
    let base = server.http.clone().unwrap();
    let id = populated(&server).await;
    let mut stream = reqwest::get(format!("{base}/api/events?study={id}"))
        .await
        .unwrap();
    let w = server.worker("dash-worker").await;
    let t = hpo_proto::TrialId {
        study: id,
        number: 4,
    };
    // A trial that logged nothing: null with the trial, empty on its own.
    let (s, v) = get(&base, &format!("/api/studies/{id}/trials/4")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["log"].is_null(), "{v}");
    let (s, v) = get(&base, &format!("/api/studies/{id}/trials/4/log")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v,
        serde_json::json!({"text": "", "start": 0, "total": 0, "dropped": 0})
    );

    w.append_log(t, 1, 0, "épоch 1\nepoch 2\n").await.unwrap();
    let (_, v) = get(&base, &format!("/api/studies/{id}/trials/4")).await;
    assert_eq!(v["log"]["text"], "épоch 1\nepoch 2\n");
    assert_eq!(v["log"]["start"], 0);
    let total = v["log"]["total"].as_u64().unwrap();
    assert_eq!(total, "épоch 1\nepoch 2\n".len() as u64);
    let (_, v) = get(&base, &format!("/api/studies/{id}/trials/4/log?offset=1")).await;
    // Inside `é`: from the next char.
    assert_eq!(v["start"], 2);
    let (_, v) = get(
        &base,
        &format!("/api/studies/{id}/trials/4/log?offset={total}"),
    )
    .await;
    assert_eq!(v["text"], "");
    assert_eq!(v["total"], total);

    // The page hears of new output and reads on from its total.
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = stream.chunk().await.unwrap() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("event: log") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "{seen}");
    assert!(seen.contains("\"trial\":4"), "{seen}");

    // The trial JSON carries the log's last 64 KiB.
    let mut at = total;
    let line = format!("{}\n", "x".repeat(99));
    for _ in 0..10 {
        let chunk = line.repeat(100);
        w.append_log(t, 1, at, &chunk).await.unwrap();
        at += chunk.len() as u64;
    }
    let (_, v) = get(&base, &format!("/api/studies/{id}/trials/4")).await;
    let log = &v["log"];
    assert_eq!(log["total"], at);
    assert_eq!(log["text"].as_str().unwrap().len(), 64 << 10);
    assert_eq!(log["start"], at - (64 << 10));
    assert_eq!(log["dropped"], 0);

    let bad = [
        ("trials/4/log?offset=abc", StatusCode::BAD_REQUEST, "offset"),
        ("trials/4/log?offset=-1", StatusCode::BAD_REQUEST, "`-1`"),
        ("trials/x/log", StatusCode::BAD_REQUEST, "`x`"),
        ("trials/77/log", StatusCode::NOT_FOUND, "not found"),
    ];
    for (path, status, needle) in bad {
        refused(
            &get(&base, &format!("/api/studies/{id}/{path}")).await,
            status,
            needle,
        );
    }
    refused(
        &get(&base, "/api/studies/999/trials/0/log").await,
        StatusCode::NOT_FOUND,
        "study 999 not found",
    );
    let r = reqwest::get(format!("{base}/metrics")).await.unwrap();
    let text = r.text().await.unwrap();
    assert!(
        text.contains(&format!("hpo_log_bytes_total {at}")),
        "{text}"
    );
    server.stop().await;
}
