//! The SDK against a real coordinator on 127.0.0.1 port 0: ask and tell,
//! the study builder, waiting for a study.
#![allow(clippy::unwrap_used)]

mod ask;
mod builder;

use hpo_coordinator::engine::EngineConfig;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Server {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), hpo_coordinator::Error>>>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// A coordinator over sled in a temporary directory.
    pub async fn start(lease_ttl: Duration) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let config = hpo_coordinator::Config {
            data_dir: Some(dir.path().to_path_buf()),
            durability: Default::default(),
            engine: EngineConfig {
                lease_ttl,
                tick: Duration::from_millis(50),
                ..EngineConfig::default()
            },
        };
        let task = tokio::spawn(hpo_coordinator::run(listener, config, async {
            let _ = stopped.await;
        }));
        Server {
            url,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    pub async fn client(&self) -> hpo_sdk::Client {
        hpo_sdk::Client::connect(&self.url).await.unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}
