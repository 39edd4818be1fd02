//! A coordinator and a worker in this process, talking gRPC over
//! 127.0.0.1:0: what `hpo run` and `hpo bench-samplers` stand on.

use anyhow::Result;
use hpo_coordinator::engine::Engine;
use hpo_worker::device::DeviceSpec;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Local {
    pub url: String,
    server: JoinHandle<Result<(), hpo_coordinator::Error>>,
    stop_server: oneshot::Sender<()>,
    /// Public so a caller can notice the worker ending early.
    pub worker: JoinHandle<Result<(), hpo_worker::WorkerError>>,
    stop_worker: oneshot::Sender<()>,
}

impl Local {
    /// Serves `engine` and starts a worker with `devices` slots against it.
    /// `dashboard`: also serve the dashboard on that listener.
    pub async fn start(
        engine: Engine,
        devices: DeviceSpec,
        max_poll: Duration,
        dashboard: Option<(tokio::net::TcpListener, hpo_coordinator::http::HttpConfig)>,
    ) -> Result<Local> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop_server, server_stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(hpo_coordinator::serve_with_dashboard(
            listener,
            dashboard,
            engine,
            async {
                let _ = server_stopped.await;
            },
        ));
        let (stop_worker, worker_stopped) = oneshot::channel::<()>();
        let mut config = hpo_worker::WorkerConfig::new(url.clone(), devices);
        config.max_poll_interval = max_poll;
        let worker = tokio::spawn(hpo_worker::run(config, async {
            let _ = worker_stopped.await;
        }));
        Ok(Local {
            url,
            server,
            stop_server,
            worker,
            stop_worker,
        })
    }

    /// Stops the worker (its running trials are handed back), then the
    /// coordinator, which flushes its storage.
    pub async fn stop(mut self) -> Result<()> {
        self.stop_worker().await?;
        self.stop_server().await
    }

    /// Stops only the worker; the coordinator keeps serving.
    pub async fn stop_worker(&mut self) -> Result<()> {
        let (tx, _) = oneshot::channel();
        let stop = std::mem::replace(&mut self.stop_worker, tx);
        let _ = stop.send(());
        (&mut self.worker).await??;
        Ok(())
    }

    /// Stops the coordinator after the worker was stopped or has ended.
    pub async fn stop_server(self) -> Result<()> {
        let _ = self.stop_server.send(());
        self.server.await??;
        Ok(())
    }
}
