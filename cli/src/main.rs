//! The `hpo` command. Each subcommand is a thin layer over the coordinator,
//! worker and SDK crates: parse flags, call, print.

mod bench;
mod bench_samplers;
mod local;
mod output;
mod progress;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use hpo_proto::{StudyId, StudySpec, TrialId};
use hpo_sdk::Client;
use hpo_worker::device::DeviceSpec;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// gRPC serving allocates per call; mimalloc makes the coordinator about 9%
/// faster under load (see the throughput bench, which uses it too).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:50051";

#[derive(Parser)]
#[command(
    name = "hpo",
    version,
    about = "Distributed hyperparameter optimisation: one binary, a study file, real workers",
    long_about = "Distributed hyperparameter optimisation: one binary, a study file, real workers.\n\n\
Quick start:\n  hpo run examples/quickstart.toml\n\n\
Distributed:\n  hpo server --data-dir ./hpo-data\n  hpo worker --coordinator http://HOST:50051\n  hpo submit study.toml --coordinator http://HOST:50051 --wait"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The dashboard's flags, shared by `hpo server` and `hpo run`.
#[derive(clap::Args, Clone)]
struct DashboardArgs {
    /// Where the dashboard (HTTP) listens, or `off`. Default: 0.0.0.0:8080
    /// for `hpo server`, 127.0.0.1:8080 for `hpo run` (any free port if
    /// that one is taken).
    #[arg(long = "http", env = "HPO_HTTP")]
    http: Option<String>,
    /// Token that allows the dashboard's actions (cancel a study, stop a
    /// trial); without one they are refused.
    #[arg(long, env = "HPO_DASHBOARD_TOKEN", hide_env_values = true)]
    dashboard_token: Option<String>,
    /// `actions`: reading is open, actions need the token; `read`: reading
    /// needs it too.
    #[arg(
        long,
        env = "HPO_DASHBOARD_AUTH",
        value_enum,
        default_value = "actions"
    )]
    dashboard_auth: DashboardAuthArg,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DashboardAuthArg {
    Actions,
    Read,
}

impl DashboardArgs {
    /// Binds the dashboard's listener, or None when it is off. `fallback`:
    /// with no address given and the default taken, any free port.
    async fn bind(
        &self,
        default: &str,
        fallback: bool,
    ) -> Result<Option<(tokio::net::TcpListener, hpo_coordinator::http::HttpConfig)>> {
        let addr = self.http.as_deref().unwrap_or(default);
        if addr == "off" {
            return Ok(None);
        }
        if self.dashboard_auth == DashboardAuthArg::Read && self.dashboard_token.is_none() {
            anyhow::bail!("--dashboard-auth read needs --dashboard-token (or HPO_DASHBOARD_TOKEN)");
        }
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) if fallback && self.http.is_none() => {
                let host = addr.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h);
                tracing::debug!(error = %e, "default dashboard port taken; using a free one");
                tokio::net::TcpListener::bind((host, 0)).await?
            }
            Err(e) => {
                return Err(e).with_context(|| format!("--http: cannot listen on {addr}"));
            }
        };
        let config = hpo_coordinator::http::HttpConfig {
            token: self.dashboard_token.clone().filter(|t| !t.is_empty()),
            auth: match self.dashboard_auth {
                DashboardAuthArg::Actions => hpo_coordinator::http::DashboardAuth::Actions,
                DashboardAuthArg::Read => hpo_coordinator::http::DashboardAuth::Read,
            },
        };
        Ok(Some((listener, config)))
    }
}

/// The address to print for a dashboard listening on `addr`.
fn dashboard_url(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("http://127.0.0.1:{}/", addr.port())
    } else {
        format!("http://{addr}/")
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a study in this process: an embedded coordinator plus local worker slots.
    ///
    /// Example: hpo run examples/quickstart.toml --devices cpu:2
    Run {
        /// The study file (TOML).
        study: PathBuf,
        /// Where records are kept; a later `hpo server` on it can read them.
        #[arg(long, env = "HPO_DATA_DIR", default_value = "./hpo-data")]
        data_dir: PathBuf,
        /// Local worker slots: auto, cpu, cpu:N or cuda:0,cuda:1.
        #[arg(long, env = "HPO_DEVICES", default_value = "cpu:2")]
        devices: DeviceSpec,
        /// How many of the best trials to show at the end.
        #[arg(long, default_value_t = 5)]
        top: usize,
        /// Keep serving the dashboard after the study ends, until Ctrl-C.
        #[arg(long)]
        serve: bool,
        #[command(flatten)]
        dashboard: DashboardArgs,
    },
    /// Serve a coordinator: studies, samplers and storage, over gRPC.
    ///
    /// Example: hpo server --listen 0.0.0.0:50051 --data-dir ./hpo-data
    Server {
        #[arg(long, env = "HPO_LISTEN", default_value = "0.0.0.0:50051")]
        listen: SocketAddr,
        #[arg(long, env = "HPO_DATA_DIR", default_value = "./hpo-data")]
        data_dir: PathBuf,
        /// A trial whose worker is silent this long is run again elsewhere.
        #[arg(long, env = "HPO_LEASE_TTL", default_value = "30s", value_parser = humantime_duration)]
        lease_ttl: Duration,
        /// What an acknowledged write survives: `process` (the server dying,
        /// even by kill -9) or `sync` (also power loss; slower).
        #[arg(long, env = "HPO_DURABILITY", value_enum, default_value = "process")]
        durability: DurabilityArg,
        /// Where paused trials' checkpoints are kept (default: DATA_DIR/checkpoints).
        /// May be a shared file system.
        #[arg(long, env = "HPO_CHECKPOINT_DIR")]
        checkpoint_dir: Option<PathBuf>,
        /// Largest checkpoint a worker may upload, in MiB.
        #[arg(long, env = "HPO_MAX_CHECKPOINT_MIB", default_value_t = 1024)]
        max_checkpoint_mib: u64,
        #[command(flatten)]
        dashboard: DashboardArgs,
    },
    /// Run trials for a coordinator, one per device slot.
    ///
    /// Example: hpo worker --coordinator http://10.0.0.5:50051 --devices auto
    Worker {
        #[arg(long, env = "HPO_COORDINATOR", default_value = DEFAULT_COORDINATOR)]
        coordinator: String,
        /// auto (one slot per CUDA device, else one CPU slot), cpu, cpu:N, cuda:0,cuda:1
        #[arg(long, env = "HPO_DEVICES", default_value = "auto")]
        devices: DeviceSpec,
        /// A stable worker id (default: host-pid-random).
        #[arg(long, env = "HPO_WORKER_ID")]
        id: Option<String>,
    },
    /// Submit a study file to a coordinator and print its id.
    ///
    /// Example: hpo submit study.toml --coordinator http://10.0.0.5:50051 --wait
    Submit {
        study: PathBuf,
        #[arg(long, env = "HPO_COORDINATOR", default_value = DEFAULT_COORDINATOR)]
        coordinator: String,
        /// Show progress and return when the study ends.
        #[arg(long)]
        wait: bool,
    },
    /// Show all studies, or one study in detail.
    ///
    /// Example: hpo status 3
    Status {
        study: Option<u64>,
        #[arg(long, env = "HPO_COORDINATOR", default_value = DEFAULT_COORDINATOR)]
        coordinator: String,
    },
    /// List a study's trials.
    ///
    /// Example: hpo trials 3 --format csv > trials.csv
    Trials {
        study: u64,
        #[arg(long, env = "HPO_COORDINATOR", default_value = DEFAULT_COORDINATOR)]
        coordinator: String,
        #[arg(long, value_enum, env = "HPO_FORMAT", default_value = "table")]
        format: Format,
    },
    /// Show a study's best trial and its parameters.
    ///
    /// Example: hpo best 3 --format json
    Best {
        study: u64,
        #[arg(long, env = "HPO_COORDINATOR", default_value = DEFAULT_COORDINATOR)]
        coordinator: String,
        #[arg(long, value_enum, env = "HPO_FORMAT", default_value = "table")]
        format: Format,
    },
    /// Print a trial's log (its program's stdout and stderr, every attempt's
    /// in turn; a long log keeps its end). With --follow, keep printing what
    /// it logs until the trial has ended.
    ///
    /// Example: hpo logs 3/7 --follow
    Logs {
        /// The trial as STUDY/NUMBER (study id, trial number), e.g. 3/7.
        #[arg(value_parser = parse_trial)]
        trial: TrialId,
        /// Keep printing new output (polling every 500 ms) until the trial
        /// is completed, failed, stopped or cancelled.
        #[arg(long, short = 'f')]
        follow: bool,
        #[arg(long, env = "HPO_COORDINATOR", default_value = DEFAULT_COORDINATOR)]
        coordinator: String,
    },
    /// Cancel a study: no new trials, running ones are stopped.
    ///
    /// Example: hpo cancel 3
    Cancel {
        study: u64,
        #[arg(long, env = "HPO_COORDINATOR", default_value = DEFAULT_COORDINATOR)]
        coordinator: String,
    },
    /// Download the final model of a study's best trial (kept when its study
    /// file sets `[schedule] keep_best = true`), in its trainer's checkpoint
    /// format (for mlp: a header, then libtorch tensors).
    ///
    /// Example: hpo model 3 --out best.ckpt
    Model {
        study: u64,
        #[arg(long, env = "HPO_COORDINATOR", default_value = DEFAULT_COORDINATOR)]
        coordinator: String,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
    /// Simulate a study of the `table` trainer on a cluster, in seconds: the
    /// real coordinator logic (sampler, scheduler, pause and resume) on a
    /// simulated clock, each step charged the time its table says.
    ///
    /// Example: hpo bench examples/lcbench.toml --workers 64
    ///
    /// Compare schedulers over several tables and seeds (as docs/benchmarks.md):
    /// hpo bench examples/lcbench.toml --workers 64 --seeds 3
    /// --scheduler none,median,asha --dataset a.csv.gz --dataset b.csv.gz --markdown
    Bench(bench::BenchArgs),
    /// Compare samplers on standard test functions (Branin, Hartmann, ...)
    /// through an embedded coordinator and a real worker: regret after 25,
    /// 50 and 100 evaluations, median and IQR over seeds.
    ///
    /// Example: hpo bench-samplers --functions branin --samplers random,gp --seeds 5
    BenchSamplers(bench_samplers::BenchSamplersArgs),
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum DurabilityArg {
    Process,
    Sync,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("expected a duration such as 30s or 2m, got `{s}` ({e})"))
}

/// An invalid study file: exit status 2, like a usage error.
#[derive(Debug)]
struct InvalidStudy(String);

impl std::fmt::Display for InvalidStudy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidStudy {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = matches!(
        cli.command,
        Command::Run { .. }
            | Command::Submit { .. }
            | Command::Status { .. }
            | Command::Trials { .. }
            | Command::Best { .. }
            | Command::Cancel { .. }
            | Command::Logs { .. }
            | Command::Model { .. }
            | Command::Bench(..)
            | Command::BenchSamplers(..)
    );
    init_tracing(if quiet { "warn" } else { "info" });
    // The simulator runs its own paused-clock runtimes, outside any other.
    let command = match cli.command {
        Command::Bench(args) => {
            return match bench::run(args) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    if e.downcast_ref::<InvalidStudy>().is_some() {
                        ExitCode::from(2)
                    } else {
                        ExitCode::FAILURE
                    }
                }
            };
        }
        other => other,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(command)) {
        Ok(code) => code,
        Err(e) => {
            if e.downcast_ref::<InvalidStudy>().is_some() {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HPO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Reads and validates a study file, so errors come before any connection.
fn read_study(path: &Path) -> Result<(String, String)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| InvalidStudy(format!("{}: cannot read: {e}", path.display())))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let spec = StudySpec::parse(&text, &name).map_err(|e| InvalidStudy(e.to_string()))?;
    check_dataset(&spec, &name)?;
    Ok((text, name))
}

/// The tch trainers' data set, as far as this machine can tell: the spec
/// parses, and a `csv:` file that is here has the columns its options name
/// (only its header is read). A file that is not here may be on the
/// workers: they check it when they load it.
fn check_dataset(spec: &StudySpec, source: &str) -> Result<()> {
    use hpo_worker::data::{DataSpec, check_csv_spec};
    let dataset = &spec.trainer.dataset;
    if !matches!(spec.trainer.kind.as_str(), "mlp" | "cnn" | "resnet") || dataset.is_empty() {
        return Ok(());
    }
    let bad =
        |e: hpo_worker::data::DataError| InvalidStudy(format!("{source}: trainer.dataset: {e}"));
    let parsed = DataSpec::parse(dataset).map_err(bad)?;
    if parsed.csv().is_some_and(|(path, _)| path.exists()) {
        check_csv_spec(dataset).map_err(bad)?;
    }
    Ok(())
}

async fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Run {
            study,
            data_dir,
            devices,
            top,
            serve,
            dashboard,
        } => run_embedded(&study, &data_dir, devices, top, serve, &dashboard).await,
        Command::Bench(_) => anyhow::bail!("hpo bench runs outside the main runtime"),
        Command::BenchSamplers(args) => bench_samplers::run(args).await,
        Command::Server {
            listen,
            data_dir,
            lease_ttl,
            durability,
            checkpoint_dir,
            max_checkpoint_mib,
            dashboard,
        } => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let web = dashboard.bind("0.0.0.0:8080", false).await?;
            if let Some((l, _)) = &web {
                eprintln!("dashboard at {}", dashboard_url(l.local_addr()?));
            }
            let config = hpo_coordinator::Config {
                data_dir: Some(data_dir),
                durability: match durability {
                    DurabilityArg::Process => hpo_coordinator::storage::Durability::Process,
                    DurabilityArg::Sync => hpo_coordinator::storage::Durability::Sync,
                },
                engine: hpo_coordinator::engine::EngineConfig {
                    lease_ttl,
                    checkpoint_dir,
                    max_checkpoint_bytes: max_checkpoint_mib.saturating_mul(1 << 20),
                    ..Default::default()
                },
            };
            hpo_coordinator::run_with_dashboard(listener, web, config, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker {
            coordinator,
            devices,
            id,
        } => {
            let mut config = hpo_worker::WorkerConfig::new(coordinator, devices);
            config.worker_id = id;
            hpo_worker::run(config, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Submit {
            study,
            coordinator,
            wait,
        } => {
            let (text, name) = read_study(&study)?;
            let client = Client::connect(&coordinator).await?;
            let id = client.submit(&text, &name).await.map_err(submit_error)?;
            println!("{id}");
            if wait {
                let info = progress::watch(&client, id).await?;
                output::print_summary(&client, &info, 5).await?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { study, coordinator } => {
            let client = Client::connect(&coordinator).await?;
            match study {
                None => output::print_studies(&client.studies().await?),
                Some(id) => {
                    let info = client.study(StudyId(id)).await?;
                    output::print_status(&info);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Trials {
            study,
            coordinator,
            format,
        } => {
            let client = Client::connect(&coordinator).await?;
            let info = client.study(StudyId(study)).await?;
            let trials = client.trials(StudyId(study), false).await?;
            output::print_trials(&info, &trials, format)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Best {
            study,
            coordinator,
            format,
        } => {
            let client = Client::connect(&coordinator).await?;
            let info = client.study(StudyId(study)).await?;
            output::print_best(&info, format)
        }
        Command::Cancel { study, coordinator } => {
            let client = Client::connect(&coordinator).await?;
            let info = client.cancel(StudyId(study)).await?;
            println!(
                "study {} ({}) is {}",
                info.id,
                info.name,
                describe_state(&info)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Logs {
            trial,
            follow,
            coordinator,
        } => {
            let client = Client::connect(&coordinator).await?;
            print_log(&client, trial, follow).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Model {
            study,
            coordinator,
            out,
        } => {
            let client = Client::connect(&coordinator).await?;
            let (c, bytes) = client.best_model(StudyId(study)).await?;
            std::fs::write(&out, &bytes)
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!(
                "wrote the final model of trial {} (the best of study {study}, after step {}) to {} ({} bytes)",
                c.trial,
                c.step,
                out.display(),
                bytes.len()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `STUDY/NUMBER`, as `hpo logs` takes a trial.
fn parse_trial(s: &str) -> Result<TrialId, String> {
    let bad =
        || format!("expected STUDY/NUMBER (a study id and a trial number, e.g. 3/7), got `{s}`");
    let (study, number) = s.split_once('/').ok_or_else(bad)?;
    Ok(TrialId {
        study: StudyId(study.trim().parse().map_err(|_| bad())?),
        number: number.trim().parse().map_err(|_| bad())?,
    })
}

/// How often `hpo logs --follow` asks for more.
const LOG_POLL: Duration = Duration::from_millis(500);

/// `hpo logs`: the kept log, then (following) what the trial logs next,
/// until it has ended and one more read brings nothing new.
async fn print_log(client: &Client, trial: TrialId, follow: bool) -> Result<()> {
    let mut offset = 0;
    let mut ended = false;
    loop {
        let log = client.trial_log(trial, offset).await?;
        let mut text = String::new();
        // Fell behind the log's bound between two reads (a marker says so
        // when the kept text is read from its start).
        if offset > 0 && log.start > offset && !log.text.starts_with("[hpo: ") {
            text.push_str(&format!(
                "[hpo: {} bytes of output dropped]\n",
                log.start - offset
            ));
        }
        text.push_str(&log.text);
        if !text.is_empty() {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                // `hpo logs 3/7 | head`: the reader has all it wanted.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                r => r.context("writing the log")?,
            }
        }
        offset = log.total;
        if !follow {
            return Ok(());
        }
        if log.text.is_empty() {
            if ended {
                return Ok(());
            }
            // Nothing new: has the trial ended? Then one more read after a
            // pause, for output its worker ships after the finish.
            ended = client
                .trials(trial.study, false)
                .await?
                .iter()
                .find(|t| t.id == trial)
                .with_context(|| format!("trial {trial} not found"))?
                .state
                .is_terminal();
        }
        tokio::time::sleep(LOG_POLL).await;
    }
}

fn describe_state(info: &hpo_proto::StudyInfo) -> String {
    match info.state {
        hpo_proto::StudyState::Running => {
            format!("stopping ({} trial(s) still running)", info.counts.running)
        }
        s => s.to_string(),
    }
}

/// The coordinator's verdict on a study file is a study-file error (exit 2).
fn submit_error(e: hpo_sdk::SdkError) -> anyhow::Error {
    if e.code() == Some(tonic::Code::InvalidArgument) {
        InvalidStudy(e.to_string()).into()
    } else {
        e.into()
    }
}

/// `hpo run`: coordinator, worker and client in one process.
async fn run_embedded(
    study: &Path,
    data_dir: &Path,
    devices: DeviceSpec,
    top: usize,
    serve: bool,
    dashboard: &DashboardArgs,
) -> Result<ExitCode> {
    let (text, name) = read_study(study)?;
    // Before anything is stored: a study submitted with no worker to run it
    // would stay behind in the data dir.
    devices.resolve().map_err(anyhow::Error::msg)?;
    let storage = hpo_coordinator::open_storage(&hpo_coordinator::Config {
        data_dir: Some(data_dir.to_path_buf()),
        ..Default::default()
    })
    .with_context(|| format!("cannot open data dir {}", data_dir.display()))?;
    // Checkpoints next to the records: an interrupted `hpo run` resumes its
    // paused trials where they were.
    let engine = hpo_coordinator::engine::Engine::start(
        storage,
        hpo_coordinator::engine::EngineConfig {
            checkpoint_dir: Some(data_dir.join("checkpoints")),
            ..Default::default()
        },
    )?;
    let web = dashboard.bind("127.0.0.1:8080", true).await?;
    let web_url = match &web {
        Some((l, _)) => Some(dashboard_url(l.local_addr()?)),
        None => None,
    };
    let mut local = local::Local::start(engine, devices, Duration::from_millis(200), web).await?;
    let url = local.url.clone();

    let client = Client::connect(&url).await?;
    let id = client.submit(&text, &name).await.map_err(submit_error)?;
    eprintln!(
        "study {id} ({name}) started; records in {}",
        data_dir.display()
    );
    if let Some(u) = &web_url {
        eprintln!("dashboard at {u}#/study/{id}");
    }

    let outcome = tokio::select! {
        r = progress::watch(&client, id) => Some(r),
        _ = shutdown_signal() => None,
        // The local worker ended before the study did: it could not start
        // (no such device, say). Waiting would never end.
        r = &mut local.worker => {
            let _ = local.stop_server().await;
            r??;
            anyhow::bail!("the local worker stopped before study {id} ended");
        }
    };
    local.stop_worker().await?;
    let summary = match &outcome {
        Some(Ok(info)) => output::print_summary(&client, info, top).await,
        _ => Ok(()),
    };
    if serve
        && outcome.is_some()
        && let Some(u) = &web_url
    {
        eprintln!("the dashboard stays at {u}#/study/{id}; Ctrl-C stops it");
        shutdown_signal().await;
    }
    local.stop_server().await?;
    match outcome {
        None => {
            eprintln!(
                "interrupted: study {id} is kept in {}; `hpo server --data-dir {}` resumes it",
                data_dir.display(),
                data_dir.display()
            );
            Ok(ExitCode::from(130))
        }
        Some(r) => {
            r?;
            summary?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
