//! The dashboard: its pages (compiled into the binary) and the JSON API
//! they read, server-sent events for live updates, and Prometheus metrics.
//! The contract is `docs/dashboard.md`.
//!
//! Reads go straight to storage (records are the truth, and a read needs no
//! study task); actions go through the engine like every other write. Each
//! study's trial records are cached briefly (`TrialCache`), so the half-dozen
//! requests a study page makes at once decode a 10,000-trial study once.

mod metrics;
mod views;

use crate::engine::{Engine, EngineError};
use crate::importance;
use crate::storage::{StudyRecord, TrialRecord};
use crate::telemetry::Telemetry;
use axum::extract::{FromRequestParts, MatchedPath, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hpo_proto::{StudyId, StudyState, TrialId, TrialState};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{BroadcastStream, WatchStream};

/// Who may do what without the token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DashboardAuth {
    /// Anyone may read; actions need the token.
    #[default]
    Actions,
    /// Every read needs the token too.
    Read,
}

#[derive(Debug, Clone, Default)]
pub struct HttpConfig {
    /// Enables the actions (cancel, stop); None refuses them.
    pub token: Option<String>,
    pub auth: DashboardAuth,
}

/// How long a running study's trial records are reused: well under the
/// one second in which live pages must show a change.
const RUNNING_CACHE: Duration = Duration::from_millis(250);
/// Ended studies cached at once (they never change).
const CACHED_STUDIES: usize = 8;

#[derive(Clone)]
struct AppState {
    engine: Engine,
    config: Arc<HttpConfig>,
    cache: Arc<TrialCache>,
    /// Turns true when the server shuts down: event streams end then, or a
    /// graceful shutdown would wait on them for ever.
    shutdown: watch::Receiver<bool>,
}

/// Recently read trial records per study.
#[derive(Default)]
struct TrialCache {
    map: Mutex<HashMap<StudyId, CacheEntry>>,
    /// Importances by study, with the number of trials they were computed on.
    importance: Mutex<HashMap<StudyId, (usize, Value)>>,
}

struct CacheEntry {
    at: Instant,
    ended: bool,
    trials: Arc<Vec<TrialRecord>>,
}

impl TrialCache {
    fn get(
        &self,
        engine: &Engine,
        record: &StudyRecord,
    ) -> Result<Arc<Vec<TrialRecord>>, ApiError> {
        let ended = record.state != StudyState::Running;
        {
            let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = map.get(&record.id)
                && ((e.ended && ended) || e.at.elapsed() < RUNNING_CACHE)
            {
                return Ok(e.trials.clone());
            }
        }
        let trials = Arc::new(engine.storage().trials(record.id).map_err(storage_error)?);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= CACHED_STUDIES
            && !map.contains_key(&record.id)
            && let Some(oldest) = map.iter().min_by_key(|(_, e)| e.at).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(
            record.id,
            CacheEntry {
                at: Instant::now(),
                ended,
                trials: trials.clone(),
            },
        );
        Ok(trials)
    }
}

/// An error answer: JSON `{"error": message}` with a 4xx (or 5xx for the
/// coordinator's own failures).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// The one place engine errors become HTTP statuses.
impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = match &e {
            EngineError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            EngineError::NotFound(_) => StatusCode::NOT_FOUND,
            EngineError::FailedPrecondition(_) => StatusCode::CONFLICT,
            EngineError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            EngineError::Storage(crate::storage::StorageError::NotFound(_)) => {
                StatusCode::NOT_FOUND
            }
            EngineError::Storage(crate::storage::StorageError::Conflict(_)) => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

fn storage_error(e: crate::storage::StorageError) -> ApiError {
    ApiError::from(EngineError::from(e))
}

type ApiResult<T = Json<Value>> = Result<T, ApiError>;
type Params = Query<HashMap<String, String>>;

/// The router of the dashboard and its API. Event streams end when
/// `shutdown` turns true.
pub fn router(engine: Engine, config: HttpConfig, shutdown: watch::Receiver<bool>) -> Router {
    let telemetry = engine.telemetry();
    let state = AppState {
        engine,
        config: Arc::new(config),
        cache: Arc::new(TrialCache::default()),
        shutdown,
    };
    Router::new()
        .route("/", get(index))
        .route("/assets/{name}", get(asset))
        .route("/api/config", get(config_json))
        .route("/api/studies", get(studies))
        .route("/api/studies/{id}", get(study))
        .route("/api/studies/{id}/history", get(history))
        .route("/api/studies/{id}/curves", get(curves))
        .route("/api/studies/{id}/params", get(params_rows))
        .route("/api/studies/{id}/importance", get(importance_json))
        .route("/api/studies/{id}/trials", get(trials))
        .route("/api/studies/{id}/trials.csv", get(trials_csv))
        .route("/api/studies/{id}/trials.json", get(trials_export))
        .route("/api/studies/{id}/trials/{number}", get(trial))
        .route("/api/studies/{id}/trials/{number}/log", get(trial_log))
        .route("/api/studies/{id}/cancel", post(cancel))
        .route("/api/studies/{id}/trials/{number}/stop", post(stop_trial))
        .route("/api/workers", get(workers))
        .route("/api/events", get(events))
        .route("/metrics", get(metrics::render))
        .fallback(|| async { ApiError::not_found("no such page or endpoint") })
        .layer(middleware::from_fn_with_state(telemetry, timed))
        .with_state(state)
}

/// Serves the dashboard on `listener` until `shutdown` turns true.
pub async fn serve_http(
    listener: TcpListener,
    engine: Engine,
    config: HttpConfig,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "dashboard listening");
    let mut done = shutdown.clone();
    axum::serve(listener, router(engine, config, shutdown))
        .with_graceful_shutdown(async move {
            let _ = done.wait_for(|v| *v).await;
        })
        .await
}

/// Times every request by its route (not its path, so ids do not make
/// new series).
async fn timed(State(t): State<Arc<Telemetry>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    t.http.get(&route).observe(start.elapsed());
    resp
}

// ----- authentication -----

fn equal_time(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn presented<'a>(headers: &'a HeaderMap, query: &'a HashMap<String, String>) -> Option<&'a str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| query.get("token").map(String::as_str))
}

fn token_ok(state: &AppState, headers: &HeaderMap, query: &HashMap<String, String>) -> bool {
    match (&state.config.token, presented(headers, query)) {
        (Some(want), Some(got)) => equal_time(want, got),
        _ => false,
    }
}

fn check_read(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<(), ApiError> {
    if state.config.auth == DashboardAuth::Read && !token_ok(state, headers, query) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this dashboard needs its token to read (--dashboard-auth read)",
        ));
    }
    Ok(())
}

fn check_action(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<(), ApiError> {
    if state.config.token.is_none() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "actions are disabled: start the coordinator with --dashboard-token (or HPO_DASHBOARD_TOKEN)",
        ));
    }
    if !token_ok(state, headers, query) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this action needs the dashboard token",
        ));
    }
    Ok(())
}

// ----- parsing -----

fn study_id(s: &str) -> Result<StudyId, ApiError> {
    s.parse::<u64>()
        .map(StudyId)
        .map_err(|_| ApiError::bad(format!("study id `{s}` is not a number")))
}

fn trial_number(s: &str) -> Result<u32, ApiError> {
    s.parse::<u32>()
        .map_err(|_| ApiError::bad(format!("trial number `{s}` is not a number")))
}

/// A trial from its route's `{id}` and `{n}`.
fn trial_id(id: &str, number: &str) -> Result<TrialId, ApiError> {
    Ok(TrialId {
        study: study_id(id)?,
        number: trial_number(number)?,
    })
}

/// A numeric query parameter within [lo, hi], or `default` when absent.
fn int_param(
    q: &HashMap<String, String>,
    name: &str,
    default: usize,
    lo: usize,
    hi: usize,
) -> Result<usize, ApiError> {
    match q.get(name) {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(n),
            _ => Err(ApiError::bad(format!(
                "{name}: expected a whole number from {lo} to {hi}, got `{v}`"
            ))),
        },
    }
}

fn states_param(q: &HashMap<String, String>) -> Result<Option<Vec<TrialState>>, ApiError> {
    let Some(v) = q.get("state").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    v.split(',')
        .map(|s| {
            TrialState::parse(s.trim()).ok_or_else(|| {
                ApiError::bad(format!(
                    "state: `{s}` is not one of waiting, running, paused, completed, stopped, failed, cancelled"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn record_of(state: &AppState, id: StudyId) -> Result<StudyRecord, ApiError> {
    state
        .engine
        .storage()
        .study(id)
        .map_err(storage_error)?
        .ok_or_else(|| ApiError::not_found(format!("study {id} not found")))
}

/// The study's record and trials, checking read access.
fn load(
    state: &AppState,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    id: &str,
) -> Result<(StudyRecord, Arc<Vec<TrialRecord>>), ApiError> {
    check_read(state, headers, q)?;
    let record = record_of(state, study_id(id)?)?;
    let trials = state.cache.get(&state.engine, &record)?;
    Ok((record, trials))
}

/// What most study handlers start from: the study named in the path, read
/// access checked, its record and trials, and the query parameters.
struct StudyView {
    record: StudyRecord,
    trials: Arc<Vec<TrialRecord>>,
    query: HashMap<String, String>,
}

impl FromRequestParts<AppState> for StudyView {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Query(query) = Params::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad(e.body_text()))?;
        let Path(path) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad(e.body_text()))?;
        let id = path.get("id").map_or("", String::as_str);
        let (record, trials) = load(state, &parts.headers, &query, id)?;
        Ok(StudyView {
            record,
            trials,
            query,
        })
    }
}

impl StudyView {
    /// The table's rows, filtered and sorted as the query asks.
    fn rows(&self) -> Result<Vec<&TrialRecord>, ApiError> {
        table(&self.record, &self.trials, &self.query)
    }
}

// ----- pages -----

const INDEX_HTML: &str = include_str!("../../assets/index.html");
const APP_JS: &str = include_str!("../../assets/app.js");
const CHARTS_JS: &str = include_str!("../../assets/charts.js");
const STYLE_CSS: &str = include_str!("../../assets/style.css");

async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
        .into_response()
}

async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "charts.js" => (CHARTS_JS, "text/javascript; charset=utf-8"),
        "style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        _ => return ApiError::not_found(format!("no asset `{name}`")).into_response(),
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

// ----- reads -----

async fn config_json(State(state): State<AppState>) -> Json<Value> {
    let auth = match (&state.config.token, state.config.auth) {
        (None, _) => "none",
        (Some(_), DashboardAuth::Actions) => "actions",
        (Some(_), DashboardAuth::Read) => "read",
    };
    Json(json!({ "auth": auth, "version": env!("CARGO_PKG_VERSION") }))
}

async fn studies(State(state): State<AppState>, headers: HeaderMap, Query(q): Params) -> ApiResult {
    check_read(&state, &headers, &q)?;
    let filter = match q.get("state").map(String::as_str) {
        None | Some("") => None,
        Some(s) => Some(StudyState::parse(s).ok_or_else(|| {
            ApiError::bad(format!(
                "state: `{s}` is not one of running, completed, cancelled"
            ))
        })?),
    };
    let storage = state.engine.storage();
    let mut out = Vec::new();
    for record in storage.studies().map_err(storage_error)?.into_iter().rev() {
        if filter.is_some_and(|f| f != record.state) {
            continue;
        }
        let trials = state.cache.get(&state.engine, &record)?;
        let info = crate::engine::summarize(&record, &trials);
        out.push(views::study_json(&info, &record));
    }
    Ok(Json(json!({ "studies": out })))
}

async fn study(v: StudyView) -> ApiResult {
    let StudyView { record, trials, .. } = v;
    let info = crate::engine::summarize(&record, &trials);
    let best = info
        .best
        .as_ref()
        .and_then(|b| trials.get(b.id.number as usize))
        .map(views::trial_row);
    Ok(Json(json!({
        "study": views::study_json(&info, &record),
        "best": best,
        "seed": record.seed,
        "study_toml": record.study_toml,
        "params": views::param_specs_json(&record),
        "resource": views::resource_json(&record, &trials, info.resource_used),
    })))
}

async fn history(v: StudyView) -> ApiResult {
    let StudyView { record, trials, .. } = v;
    Ok(Json(views::history_json(&record, &trials)))
}

async fn curves(State(state): State<AppState>, v: StudyView) -> ApiResult {
    let max = int_param(&v.query, "max", 200, 1, 1000)?;
    let StudyView { record, trials, .. } = v;
    let engine = state.engine.clone();
    // Reading a few hundred trials' metrics is storage work: off the runtime.
    tokio::task::spawn_blocking(move || {
        let live: Vec<&TrialRecord> = trials
            .iter()
            .filter(|t| matches!(t.state, TrialState::Running | TrialState::Paused))
            .collect();
        let finished: Vec<&TrialRecord> = trials
            .iter()
            .filter(|t| {
                !matches!(t.state, TrialState::Running | TrialState::Paused)
                    && t.last_step.is_some()
                    && t.value.is_some_and(f64::is_finite)
            })
            .collect();
        let with_curves = trials.iter().filter(|t| t.last_step.is_some()).count();
        let picked = views::pick_trials(record.spec.objective.direction, live, finished, max);
        let storage = engine.storage();
        let metric = &record.spec.objective.metric;
        let mut out = Vec::with_capacity(picked.len());
        for t in &picked {
            let points = storage.metrics(t.id).map_err(storage_error)?;
            out.push(views::curve_json(t, metric, &points));
        }
        Ok(Json(json!({
            "metric": metric,
            "direction": record.spec.objective.direction.as_str(),
            "total": with_curves,
            "shown": out.len(),
            "curves": out,
        })))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("curves: {e}")))?
}

fn finished_with_value(trials: &[TrialRecord]) -> Vec<&TrialRecord> {
    trials
        .iter()
        .filter(|t| {
            matches!(t.state, TrialState::Completed | TrialState::Stopped)
                && t.value.is_some_and(f64::is_finite)
        })
        .collect()
}

async fn params_rows(v: StudyView) -> ApiResult {
    let max = int_param(&v.query, "max", 2000, 1, 20000)?;
    let StudyView { record, trials, .. } = v;
    let finished = finished_with_value(&trials);
    let total = finished.len();
    let picked = views::pick_trials(record.spec.objective.direction, Vec::new(), finished, max);
    Ok(Json(views::params_rows_json(&record, &picked, total)))
}

async fn importance_json(State(state): State<AppState>, v: StudyView) -> ApiResult {
    let StudyView { record, trials, .. } = v;
    // Completed trials only: a stopped trial's value is from a lower budget.
    let done: Vec<(&hpo_proto::Params, f64)> = trials
        .iter()
        .filter(|t| t.state == TrialState::Completed)
        .filter_map(|t| t.value.filter(|v| v.is_finite()).map(|v| (&t.params, v)))
        .collect();
    {
        let cache = state
            .cache
            .importance
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((n, v)) = cache.get(&record.id)
            && *n == done.len()
        {
            return Ok(Json(v.clone()));
        }
    }
    let space: Vec<(String, hpo_proto::study::ParamSpec)> = record
        .spec
        .params
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut imp = importance::ped_anova(&space, &done, record.spec.objective.direction);
    imp.sort_by(|a, b| b.importance.total_cmp(&a.importance));
    let value = json!({
        "method": "ped-anova",
        "trials": done.len(),
        "min_trials": importance::MIN_TRIALS,
        "importances": imp.iter().map(|i| json!({"param": i.param, "importance": i.importance})).collect::<Vec<_>>(),
    });
    state
        .cache
        .importance
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(record.id, (done.len(), value.clone()));
    Ok(Json(value))
}

/// The table's rows, filtered and sorted as the query asks.
fn table<'a>(
    record: &StudyRecord,
    trials: &'a [TrialRecord],
    q: &HashMap<String, String>,
) -> Result<Vec<&'a TrialRecord>, ApiError> {
    let key = views::SortKey::parse(q.get("sort").map_or("", String::as_str), record)
        .map_err(ApiError::bad)?;
    let desc = match q.get("order").map(String::as_str) {
        None | Some("") | Some("asc") => false,
        Some("desc") => true,
        Some(o) => {
            return Err(ApiError::bad(format!(
                "order: expected asc or desc, got `{o}`"
            )));
        }
    };
    let states = states_param(q)?;
    let mut rows: Vec<&TrialRecord> = trials
        .iter()
        .filter(|t| states.as_ref().is_none_or(|s| s.contains(&t.state)))
        .collect();
    views::sort_trials(&mut rows, &key, desc);
    Ok(rows)
}

async fn trials(v: StudyView) -> ApiResult {
    let per_page = int_param(&v.query, "per_page", 50, 1, 500)?;
    let page = int_param(&v.query, "page", 1, 1, usize::MAX / 1000)?;
    let rows = v.rows()?;
    let start = (page - 1).saturating_mul(per_page).min(rows.len());
    let end = (start + per_page).min(rows.len());
    Ok(Json(json!({
        "total": rows.len(),
        "page": page,
        "per_page": per_page,
        "rows": rows[start..end].iter().map(|t| views::trial_row(t)).collect::<Vec<_>>(),
    })))
}

fn download(name: String, kind: &'static str, body: String) -> Response {
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response()
}

/// A file name made of the study's name, kept to safe characters.
fn file_stem(record: &StudyRecord) -> String {
    let name: String = record
        .spec
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{name}-{}-trials", record.id)
}

async fn trials_csv(v: StudyView) -> ApiResult<Response> {
    let rows = v.rows()?;
    let record = &v.record;
    Ok(download(
        format!("{}.csv", file_stem(record)),
        "text/csv; charset=utf-8",
        views::trials_csv(record, &rows),
    ))
}

async fn trials_export(v: StudyView) -> ApiResult<Response> {
    let rows = v.rows()?;
    let record = &v.record;
    let body = Value::Array(rows.iter().map(|t| views::trial_row(t)).collect()).to_string();
    Ok(download(
        format!("{}.json", file_stem(record)),
        "application/json",
        body,
    ))
}

async fn trial(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Params,
    Path((id, number)): Path<(String, String)>,
) -> ApiResult {
    check_read(&state, &headers, &q)?;
    let tid = trial_id(&id, &number)?;
    let id = tid.study;
    let record = record_of(&state, id)?;
    let storage = state.engine.storage();
    let t = storage
        .trial(tid)
        .map_err(storage_error)?
        .ok_or_else(|| ApiError::not_found(format!("trial {tid} not found")))?;
    let points = storage.metrics(tid).map_err(storage_error)?;
    let log = log_tail(&state.engine, tid)?;
    Ok(Json(json!({
        "trial": views::trial_row(&t),
        "study": {
            "id": record.id.0, "name": record.spec.name,
            "metric": record.spec.objective.metric,
            "direction": record.spec.objective.direction.as_str(),
            "state": record.state.to_string(),
        },
        "events": views::events_json(&t.events),
        "metrics": views::metrics_json(&points),
        "log": log,
    })))
}

/// How much of a log the trial page gets with the trial: the end.
const LOG_TAIL: u64 = 64 << 10;

/// The last `LOG_TAIL` bytes of a trial's log (from a char boundary), or
/// null when it has none.
fn log_tail(engine: &Engine, trial: TrialId) -> Result<Value, ApiError> {
    let end = engine.trial_log(trial, u64::MAX)?;
    if end.total == 0 {
        return Ok(Value::Null);
    }
    let log = engine.trial_log(trial, end.total.saturating_sub(LOG_TAIL))?;
    Ok(views::log_json(&log))
}

async fn trial_log(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Params,
    Path((id, number)): Path<(String, String)>,
) -> ApiResult {
    check_read(&state, &headers, &q)?;
    let trial = trial_id(&id, &number)?;
    let offset = match q.get("offset").map(String::as_str) {
        None | Some("") => 0,
        Some(v) => v.parse::<u64>().map_err(|_| {
            ApiError::bad(format!(
                "offset: expected a byte position (a whole number from 0), got `{v}`"
            ))
        })?,
    };
    let log = state.engine.trial_log(trial, offset)?;
    Ok(Json(views::log_json(&log)))
}

async fn workers(State(state): State<AppState>, headers: HeaderMap, Query(q): Params) -> ApiResult {
    check_read(&state, &headers, &q)?;
    let out: Vec<Value> = state
        .engine
        .workers()
        .iter()
        .map(|w| {
            json!({
                "id": w.id.0, "hostname": w.hostname, "slots": w.slots,
                "connected": w.connected,
                "registered_at_ms": w.registered_at_ms, "last_seen_ms": w.last_seen_ms,
                "running": w.running.iter().map(|r| json!({
                    "slot": r.slot, "study": r.trial.study.0, "trial": r.trial.number,
                    "since_ms": r.since_ms,
                })).collect::<Vec<_>>(),
                "utilisation_1h": w.utilisation,
            })
        })
        .collect();
    Ok(Json(json!({ "workers": out })))
}

// ----- live -----

async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Params,
) -> ApiResult<Response> {
    check_read(&state, &headers, &q)?;
    let study = match q.get("study").filter(|s| !s.is_empty()) {
        Some(s) => Some(study_id(s)?.0),
        None => None,
    };
    let rx = state.engine.subscribe();
    // A lagging subscriber loses events (the page refetches on the next
    // one); the stream ends with the engine's channel.
    let events = BroadcastStream::new(rx).filter_map(move |ev| {
        let ev = ev.ok()?;
        if study.is_some_and(|s| s != ev.study) {
            return None;
        }
        let data = serde_json::to_string(&ev).ok()?;
        Some(Some(SseEvent::default().event(ev.kind.as_str()).data(data)))
    });
    let stop = WatchStream::new(state.shutdown.clone())
        .filter(|down| *down)
        .map(|_| None);
    let stream = events
        .merge(stop)
        .map_while(|e| e.map(Ok::<_, std::convert::Infallible>));
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

// ----- actions -----

async fn cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Params,
    Path(id): Path<String>,
) -> ApiResult {
    check_action(&state, &headers, &q)?;
    let id = study_id(&id)?;
    record_of(&state, id)?;
    state.engine.cancel(id).await?;
    tracing::info!(study = %id, "study cancelled from the dashboard");
    let record = record_of(&state, id)?;
    let trials = state.engine.storage().trials(id).map_err(storage_error)?;
    let info = crate::engine::summarize(&record, &trials);
    Ok(Json(views::study_json(&info, &record)))
}

async fn stop_trial(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Params,
    Path((id, number)): Path<(String, String)>,
) -> ApiResult {
    check_action(&state, &headers, &q)?;
    let trial = trial_id(&id, &number)?;
    record_of(&state, trial.study)?;
    let t = state
        .engine
        .stop_trial(trial, "stopped from the dashboard")
        .await?;
    tracing::info!(study = %trial.study, trial = trial.number, "trial stop requested from the dashboard");
    Ok(Json(views::trial_row(&t)))
}
