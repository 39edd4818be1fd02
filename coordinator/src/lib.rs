//! hpo's coordinator: owns studies, samples configurations, leases trials to
//! workers, decides continue/stop on every report, and stores everything.
//!
//! `run` serves the gRPC services on a listener the caller bound (port 0 in
//! tests) until `shutdown` resolves.

pub mod checkpoints;
pub mod engine;
pub mod http;
pub mod importance;
pub mod sampler;
pub mod scheduler;
pub mod service;
pub mod space;
pub mod storage;
pub mod telemetry;

use engine::{Engine, EngineConfig};
use hpo_proto::pb::study_service_server::StudyServiceServer;
use hpo_proto::pb::worker_service_server::WorkerServiceServer;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use storage::{Durability, MemoryStorage, SledStorage, Storage};
use tokio::net::TcpListener;

#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Where sled keeps the records; None keeps them in memory (tests).
    pub data_dir: Option<PathBuf>,
    /// What an acknowledged write survives (sled only).
    pub durability: Durability,
    pub engine: EngineConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    #[error("grpc server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Opens the configured storage.
pub fn open_storage(config: &Config) -> Result<Arc<dyn Storage>, Error> {
    Ok(match &config.data_dir {
        Some(dir) => Arc::new(SledStorage::open(dir, config.durability)?),
        None => Arc::new(MemoryStorage::new()),
    })
}

/// Serves the coordinator on `listener` until `shutdown` resolves, then stops
/// the study tasks and flushes storage.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    run_with_dashboard(listener, None, config, shutdown).await
}

/// Serves an already started engine (the embedded `hpo run` keeps a handle).
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    serve_with_dashboard(listener, None, engine, shutdown).await
}

/// `run` plus the dashboard on its own listener.
pub async fn run_with_dashboard(
    listener: TcpListener,
    dashboard: Option<(TcpListener, http::HttpConfig)>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let mut engine_config = config.engine.clone();
    if engine_config.checkpoint_dir.is_none()
        && let Some(dir) = &config.data_dir
    {
        engine_config.checkpoint_dir = Some(dir.join("checkpoints"));
    }
    let engine = Engine::start(open_storage(&config)?, engine_config)?;
    serve_with_dashboard(listener, dashboard, engine, shutdown).await
}

/// Serves gRPC on `listener` and, when given, the dashboard on its own
/// listener, until `shutdown` resolves; then stops the study tasks and
/// flushes storage.
pub async fn serve_with_dashboard(
    listener: TcpListener,
    dashboard: Option<(TcpListener, http::HttpConfig)>,
    engine: Engine,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let addr = listener.local_addr()?;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<StudyServiceServer<service::StudyService>>()
        .await;
    health_reporter
        .set_serving::<WorkerServiceServer<service::WorkerService>>()
        .await;
    tracing::info!(%addr, "coordinator listening");
    // One shutdown for both servers: the caller's future flips a watch that
    // each of them (and every open event stream) waits on.
    let (down_tx, down_rx) = tokio::sync::watch::channel(false);
    let relay = tokio::spawn(async move {
        shutdown.await;
        let _ = down_tx.send(true);
    });
    // tonic's own tcp_nodelay applies only to listeners it binds itself; for a
    // listener handed in, Nagle must be turned off here or small replies can
    // wait tens of milliseconds on a busy machine.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut grpc_down = down_rx.clone();
    let grpc = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(StudyServiceServer::new(service::StudyService::new(
            engine.clone(),
        )))
        .add_service(WorkerServiceServer::new(service::WorkerService::new(
            engine.clone(),
        )))
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = grpc_down.wait_for(|v| *v).await;
        });
    let web = async {
        match dashboard {
            Some((l, config)) => http::serve_http(l, engine.clone(), config, down_rx).await,
            None => Ok(()),
        }
    };
    let (grpc, web) = tokio::join!(grpc, web);
    relay.abort();
    engine.shutdown().await;
    tracing::info!("coordinator stopped");
    grpc?;
    web?;
    Ok(())
}
