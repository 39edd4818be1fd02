//! Integration tests: a real coordinator on 127.0.0.1 port 0, driven over gRPC
//! by the SDK's clients acting as workers (the simulated protocol, no trainer).
#![allow(clippy::unwrap_used)]

mod browser;
mod dashboard;
mod errors;
mod external;
mod lifecycle;
mod logs;
mod restart;
mod samplers;
mod schedule;

use hpo_coordinator::engine::EngineConfig;
use hpo_proto::{StudyId, WorkerId};
use hpo_sdk::{Client, WorkerClient};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Server {
    pub url: String,
    /// The dashboard's base URL, when it is served.
    pub http: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), hpo_coordinator::Error>>>,
}

impl Server {
    pub async fn start(data_dir: Option<PathBuf>, lease_ttl: Duration) -> Server {
        Server::start_with(data_dir, lease_ttl, None).await
    }

    /// A coordinator with its dashboard on another port 0.
    pub async fn with_dashboard(config: hpo_coordinator::http::HttpConfig) -> Server {
        Server::start_with(None, Duration::from_secs(30), Some(config)).await
    }

    async fn start_with(
        data_dir: Option<PathBuf>,
        lease_ttl: Duration,
        dashboard: Option<hpo_coordinator::http::HttpConfig>,
    ) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (web, http) = match dashboard {
            Some(c) => {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let url = format!("http://{}", l.local_addr().unwrap());
                (Some((l, c)), Some(url))
            }
            None => (None, None),
        };
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let config = hpo_coordinator::Config {
            data_dir,
            durability: Default::default(),
            engine: EngineConfig {
                lease_ttl,
                tick: Duration::from_millis(50),
                ..EngineConfig::default()
            },
        };
        let task = tokio::spawn(hpo_coordinator::run_with_dashboard(
            listener,
            web,
            config,
            async {
                let _ = stopped.await;
            },
        ));
        Server {
            url,
            http,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn memory() -> Server {
        Server::start(None, Duration::from_secs(30)).await
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.url).await.unwrap()
    }

    pub async fn worker(&self, name: &str) -> WorkerClient {
        let channel = hpo_sdk::connect(&self.url).await.unwrap();
        let w = WorkerClient::new(channel, WorkerId(name.into()));
        w.register("test-host", &["cpu:0".into()]).await.unwrap();
        w
    }

    /// Graceful stop: the server stops serving and flushes its storage.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

/// A study file for the simulated trainer.
pub fn study(
    algorithm: &str,
    max_trials: u32,
    max_parallel: u32,
    extra_search: &str,
    params: &str,
) -> String {
    format!(
        r#"
name = "it"
seed = 11
[objective]
metric = "loss"
direction = "minimize"
[search]
algorithm = "{algorithm}"
max_trials = {max_trials}
max_parallel = {max_parallel}
{extra_search}
[trainer]
kind = "simulated"
epochs = 3
[params]
{params}
"#
    )
}

pub const XY: &str = r#"x = { type = "float", low = 0.0, high = 1.0 }
y = { type = "int", low = 0, high = 9 }"#;

pub fn loss(v: f64) -> hpo_proto::MetricValues {
    [("loss".to_string(), v)].into_iter().collect()
}

/// Polls until the study has ended, or panics after `limit`.
pub async fn wait_ended(client: &Client, id: StudyId, limit: Duration) -> hpo_proto::StudyInfo {
    let start = std::time::Instant::now();
    loop {
        let info = client.study(id).await.unwrap();
        if info.state != hpo_proto::StudyState::Running {
            return info;
        }
        assert!(
            start.elapsed() < limit,
            "study {id} still running after {limit:?}: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a trial through all its steps as a well-behaved worker would.
pub async fn run_trial(w: &WorkerClient, a: &hpo_proto::Assignment) {
    for step in 1..=a.trainer.epochs {
        let x = a.params.get("x").and_then(|v| v.as_f64()).unwrap_or(0.0);
        w.report(a.trial, a.attempt, step, &loss(x / step as f64))
            .await
            .unwrap();
    }
    w.finish(a.trial, a.attempt, &hpo_proto::Outcome::Completed)
        .await
        .unwrap();
}
