//! A typed client for hpo coordinators. Every call returns domain types from
//! `hpo-proto`, never wire messages, and every error says what to check.

mod ask;
mod builder;
mod trial;
mod wait;

pub use ask::{ASK_SLOT, AskTell, AskedTrial, DROPPED_REASON};
pub use builder::StudyBuilder;
/// What a report's answer says to do (also the answer inside a trial).
pub use hpo_proto::Decision;
/// The `toml` crate `StudyBuilder::trainer` takes a table of.
pub use toml;
pub use trial::{Trial, TrialError};

use hpo_proto::convert;
use hpo_proto::pb::study_service_client::StudyServiceClient;
use hpo_proto::pb::worker_service_client::WorkerServiceClient;
use hpo_proto::{
    Assignment, CheckpointRef, ConvertError, MetricValues, Outcome, PROTOCOL_VERSION, StudyId,
    StudyInfo, TrialId, TrialInfo, TrialState, WorkerId, pb,
};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// How long a first connection may take before the coordinator is called
/// unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    #[error("invalid coordinator url `{url}`: {reason} (expected e.g. http://127.0.0.1:50051)")]
    Url { url: String, reason: String },
    #[error(
        "cannot reach the coordinator at {url}: {reason} (is `hpo server` running there? check --coordinator or HPO_COORDINATOR)"
    )]
    Unreachable { url: String, reason: String },
    #[error("{}", .0.message())]
    Status(tonic::Status),
    #[error("malformed answer from the coordinator: {0}")]
    Convert(#[from] ConvertError),
    #[error("{0}")]
    Checkpoint(String),
    /// The coordinator refused to register this client for its protocol
    /// version; `message` is the coordinator's, unchanged.
    #[error("incompatible coordinator: {message} (this hpo-sdk speaks protocol version {sdk})")]
    Incompatible {
        sdk: u32,
        /// The coordinator's version, when its message says it.
        coordinator: Option<u32>,
        message: String,
    },
    /// A study built with `StudyBuilder` is invalid.
    #[error("{0}")]
    Spec(#[from] hpo_proto::SpecError),
    #[error("cannot read {}: {reason}", path.display())]
    File {
        path: std::path::PathBuf,
        reason: String,
    },
    /// An asked trial has no such parameter, or not of that type.
    #[error("parameter `{name}`: {reason}")]
    Param { name: String, reason: String },
}

impl SdkError {
    /// The gRPC code when the coordinator answered with an error.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            SdkError::Status(s) => Some(s.code()),
            _ => None,
        }
    }

    /// True when the call may succeed if tried again later (the coordinator is
    /// restarting or the network blinked).
    pub fn is_transient(&self) -> bool {
        match self {
            SdkError::Unreachable { .. } => true,
            SdkError::Status(s) => matches!(
                s.code(),
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
            ),
            _ => false,
        }
    }
}

impl From<tonic::Status> for SdkError {
    fn from(s: tonic::Status) -> Self {
        // A call the coordinator has no handler for: it is an older release.
        if s.code() == tonic::Code::Unimplemented {
            return SdkError::Incompatible {
                sdk: PROTOCOL_VERSION,
                coordinator: None,
                message: format!(
                    "it does not know this call, so it is older than this hpo-sdk ({})",
                    s.message()
                ),
            };
        }
        SdkError::Status(s)
    }
}

pub type Result<T> = std::result::Result<T, SdkError>;

fn endpoint(url: &str) -> Result<Endpoint> {
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    Endpoint::from_shared(url.clone())
        .map(|e| e.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true))
        .map_err(|e| SdkError::Url {
            url,
            reason: e.to_string(),
        })
}

/// Connects now, failing fast with a clear error when nobody answers.
pub async fn connect(url: &str) -> Result<Channel> {
    let ep = endpoint(url)?;
    ep.connect().await.map_err(|e| SdkError::Unreachable {
        url: url.to_string(),
        reason: root_cause(&e),
    })
}

/// A channel that connects on first use and reconnects after failures, for
/// long-lived peers (workers) that must outlive a coordinator restart.
pub fn connect_lazy(url: &str) -> Result<Channel> {
    Ok(endpoint(url)?.connect_lazy())
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Studies: submit, inspect, cancel.
#[derive(Clone)]
pub struct Client {
    inner: StudyServiceClient<Channel>,
}

impl Client {
    pub async fn connect(url: &str) -> Result<Client> {
        Ok(Client::new(connect(url).await?))
    }

    pub fn new(channel: Channel) -> Client {
        Client {
            inner: StudyServiceClient::new(channel),
        }
    }

    /// Submits a study file's text; `source_name` appears in its errors.
    pub async fn submit(&self, study_toml: &str, source_name: &str) -> Result<StudyId> {
        let r = self
            .inner
            .clone()
            .submit_study(pb::SubmitStudyRequest {
                study_toml: study_toml.to_string(),
                source_name: source_name.to_string(),
            })
            .await?;
        Ok(StudyId(r.into_inner().study_id))
    }

    pub async fn study(&self, id: StudyId) -> Result<StudyInfo> {
        let r = self
            .inner
            .clone()
            .get_study(pb::GetStudyRequest { study_id: id.0 })
            .await?;
        Ok(StudyInfo::try_from(r.into_inner())?)
    }

    pub async fn studies(&self) -> Result<Vec<StudyInfo>> {
        let r = self
            .inner
            .clone()
            .list_studies(pb::ListStudiesRequest {})
            .await?;
        Ok(r.into_inner()
            .studies
            .into_iter()
            .map(StudyInfo::try_from)
            .collect::<std::result::Result<_, _>>()?)
    }

    pub async fn trials(&self, id: StudyId, with_metrics: bool) -> Result<Vec<TrialInfo>> {
        let r = self
            .inner
            .clone()
            .list_trials(pb::ListTrialsRequest {
                study_id: id.0,
                with_metrics,
            })
            .await?;
        Ok(r.into_inner()
            .trials
            .into_iter()
            .map(TrialInfo::try_from)
            .collect::<std::result::Result<_, _>>()?)
    }

    pub async fn cancel(&self, id: StudyId) -> Result<StudyInfo> {
        let r = self
            .inner
            .clone()
            .cancel_study(pb::CancelStudyRequest { study_id: id.0 })
            .await?;
        Ok(StudyInfo::try_from(r.into_inner())?)
    }

    /// The final model of the study's best trial (a study with
    /// `[schedule] keep_best = true`), in its trainer's checkpoint format,
    /// checked against its size and CRC-32.
    /// What is kept of a trial's log (its program's stdout and stderr)
    /// from position `offset` on: 0 for all of it, the last answer's
    /// `total` to read on. `start` is past `offset` when older output was
    /// dropped to keep the log within its bound.
    pub async fn trial_log(&self, trial: TrialId, offset: u64) -> Result<hpo_proto::TrialLog> {
        let r = self
            .inner
            .clone()
            // A log may be kept up to 1 GiB (`max_log_kib`): past the 4 MiB
            // default of one message.
            .max_decoding_message_size(usize::MAX)
            .get_trial_log(pb::GetTrialLogRequest {
                study_id: trial.study.0,
                number: trial.number,
                offset,
            })
            .await?;
        Ok(r.into_inner().into())
    }

    pub async fn best_model(&self, id: StudyId) -> Result<(CheckpointRef, Vec<u8>)> {
        let stream = self
            .inner
            .clone()
            .download_best_model(pb::DownloadBestModelRequest { study_id: id.0 })
            .await?
            .into_inner();
        receive(stream).await
    }
}

/// Reads a checkpoint stream (a header, then data) and checks the data
/// against the header's size and CRC-32.
async fn receive(
    mut stream: tonic::Streaming<pb::CheckpointChunk>,
) -> Result<(CheckpointRef, Vec<u8>)> {
    let mut header = None;
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await? {
        match chunk.kind {
            Some(pb::checkpoint_chunk::Kind::Header(h)) => {
                let c = CheckpointRef::try_from(h)?;
                bytes.reserve(c.size as usize);
                header = Some(c);
            }
            Some(pb::checkpoint_chunk::Kind::Data(d)) => bytes.extend_from_slice(&d),
            None => {}
        }
    }
    let c =
        header.ok_or_else(|| SdkError::Checkpoint("checkpoint stream without a header".into()))?;
    if bytes.len() as u64 != c.size || crc32fast::hash(&bytes) != c.crc32 {
        return Err(SdkError::Checkpoint(format!(
            "checkpoint of trial {} step {} arrived damaged ({} bytes, expected {})",
            c.trial,
            c.step,
            bytes.len(),
            c.size
        )));
    }
    Ok((c, bytes))
}

/// What the coordinator answers a registration.
#[derive(Debug, Clone)]
pub struct Registration {
    pub lease_ttl: Duration,
    pub heartbeat_interval: Duration,
    pub running: Vec<TrialId>,
}

/// What the coordinator answers a heartbeat.
#[derive(Debug, Clone)]
pub struct Beat {
    pub stop: Vec<TrialId>,
    /// False after a coordinator restart: register again.
    pub known: bool,
}

/// The worker side of the protocol.
#[derive(Clone)]
pub struct WorkerClient {
    inner: WorkerServiceClient<Channel>,
    id: WorkerId,
}

impl WorkerClient {
    pub fn new(channel: Channel, id: WorkerId) -> WorkerClient {
        WorkerClient {
            inner: WorkerServiceClient::new(channel),
            id,
        }
    }

    pub fn id(&self) -> &WorkerId {
        &self.id
    }

    pub async fn register(&self, hostname: &str, slots: &[String]) -> Result<Registration> {
        let r = self
            .inner
            .clone()
            .register(pb::RegisterRequest {
                protocol_version: PROTOCOL_VERSION,
                worker_id: self.id.0.clone(),
                hostname: hostname.to_string(),
                slots: slots.to_vec(),
            })
            .await
            .map_err(SdkError::registration)?
            .into_inner();
        Ok(Registration {
            lease_ttl: Duration::from_millis(r.lease_ttl_ms),
            heartbeat_interval: Duration::from_millis(r.heartbeat_interval_ms.max(1)),
            running: r.running.into_iter().map(Into::into).collect(),
        })
    }

    pub async fn acquire(&self, slot: &str) -> Result<Option<Assignment>> {
        let r = self
            .inner
            .clone()
            .acquire_trial(pb::AcquireTrialRequest {
                worker_id: self.id.0.clone(),
                slot: slot.to_string(),
                study_id: None,
            })
            .await?
            .into_inner();
        Ok(r.trial.map(Assignment::try_from).transpose()?)
    }

    pub async fn heartbeat(&self, trials: &[TrialId]) -> Result<Beat> {
        let r = self
            .inner
            .clone()
            .heartbeat(pb::HeartbeatRequest {
                worker_id: self.id.0.clone(),
                trials: trials.iter().map(|t| (*t).into()).collect(),
            })
            .await?
            .into_inner();
        Ok(Beat {
            stop: r.stop.into_iter().map(Into::into).collect(),
            known: r.known,
        })
    }

    pub async fn report(
        &self,
        trial: TrialId,
        attempt: u32,
        step: u32,
        values: &MetricValues,
    ) -> Result<Decision> {
        let r = self
            .inner
            .clone()
            .report_metrics(pb::ReportMetricsRequest {
                worker_id: self.id.0.clone(),
                trial: Some(trial.into()),
                attempt,
                step,
                values: values.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            })
            .await?
            .into_inner();
        Ok(convert::decision(r.decision)?)
    }

    pub async fn finish(
        &self,
        trial: TrialId,
        attempt: u32,
        outcome: &Outcome,
    ) -> Result<TrialState> {
        let (o, reason, paused_step) = convert::outcome_to_pb(outcome);
        let r = self
            .inner
            .clone()
            .finish_trial(pb::FinishTrialRequest {
                worker_id: self.id.0.clone(),
                trial: Some(trial.into()),
                attempt,
                outcome: o as i32,
                reason,
                paused_step,
            })
            .await?
            .into_inner();
        Ok(convert::trial_state(r.state)?)
    }

    /// Uploads the checkpoint of `trial` after `step` of `attempt`, in
    /// chunks, with its size and CRC-32 so the coordinator can check it.
    pub async fn upload_checkpoint(
        &self,
        trial: TrialId,
        attempt: u32,
        step: u32,
        bytes: &[u8],
    ) -> Result<CheckpointRef> {
        let header = CheckpointRef {
            trial,
            attempt,
            step,
            size: bytes.len() as u64,
            crc32: crc32fast::hash(bytes),
        };
        let mut chunks = vec![pb::CheckpointChunk {
            kind: Some(pb::checkpoint_chunk::Kind::Header((&header).into())),
            worker_id: self.id.0.clone(),
        }];
        chunks.extend(bytes.chunks(CHECKPOINT_CHUNK).map(|c| pb::CheckpointChunk {
            kind: Some(pb::checkpoint_chunk::Kind::Data(c.to_vec())),
            worker_id: String::new(),
        }));
        let r = self
            .inner
            .clone()
            .upload_checkpoint(tokio_stream::iter(chunks))
            .await?
            .into_inner();
        Ok(CheckpointRef::try_from(r)?)
    }

    /// Appends `text`, at byte `offset` of `attempt`'s output stream, to
    /// the trial's log. Idempotent: a retried chunk is stored once, and a
    /// chunk past what was delivered before marks the gap. At most 1 MiB
    /// of text per call.
    pub async fn append_log(
        &self,
        trial: TrialId,
        attempt: u32,
        offset: u64,
        text: &str,
    ) -> Result<()> {
        self.inner
            .clone()
            .append_log(pb::AppendLogRequest {
                worker_id: self.id.0.clone(),
                trial: Some(trial.into()),
                attempt,
                offset,
                text: text.to_string(),
            })
            .await?;
        Ok(())
    }

    /// Downloads the checkpoint a resumed trial's assignment names and checks
    /// its size and CRC-32.
    pub async fn download_checkpoint(
        &self,
        attempt: u32,
        checkpoint: &CheckpointRef,
    ) -> Result<Vec<u8>> {
        let stream = self
            .inner
            .clone()
            .download_checkpoint(pb::DownloadCheckpointRequest {
                worker_id: self.id.0.clone(),
                checkpoint: Some(checkpoint.into()),
                attempt,
            })
            .await?
            .into_inner();
        let (got, bytes) = receive(stream).await?;
        if &got != checkpoint {
            return Err(SdkError::Checkpoint(format!(
                "asked for the checkpoint of trial {} step {}, got step {} of trial {}",
                checkpoint.trial, checkpoint.step, got.step, got.trial
            )));
        }
        Ok(bytes)
    }
}

/// Size of the data chunks of a checkpoint upload.
const CHECKPOINT_CHUNK: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_an_older_coordinator_lacks_is_an_incompatible_version() {
        let e = SdkError::from(tonic::Status::unimplemented("unknown method GetTrialLog"));
        assert!(matches!(e, SdkError::Incompatible { .. }));
        let text = e.to_string();
        assert!(
            text.contains("older than this hpo-sdk") && text.contains("GetTrialLog"),
            "{text}"
        );
        assert!(!e.is_transient());
        assert!(
            SdkError::from(tonic::Status::not_found("x")).code() == Some(tonic::Code::NotFound)
        );
    }
}
