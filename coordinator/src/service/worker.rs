use super::{ChunkStream, bad_request, chunks, status};
use crate::engine::Engine;
use hpo_proto::convert::{self, trial_ref, worker_id};
use hpo_proto::pb::{self, worker_service_server::WorkerService as Api};
use hpo_proto::{CheckpointRef, PROTOCOL_VERSION, StudyId, TrialId};
use tonic::{Request, Response, Status, Streaming};

pub struct WorkerService {
    engine: Engine,
}

impl WorkerService {
    pub fn new(engine: Engine) -> Self {
        WorkerService { engine }
    }
}

#[tonic::async_trait]
impl Api for WorkerService {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let req = req.into_inner();
        if req.protocol_version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "worker speaks protocol version {}, this coordinator speaks {PROTOCOL_VERSION}: run the same hpo release on both",
                req.protocol_version
            )));
        }
        let worker = worker_id(req.worker_id).map_err(bad_request)?;
        let running = self
            .engine
            .register(&worker, &req.hostname, req.slots)
            .map_err(status)?;
        let ttl = self.engine.lease_ttl();
        Ok(Response::new(pb::RegisterResponse {
            lease_ttl_ms: ttl.as_millis() as u64,
            // Three heartbeats per lease: one lost packet does not cost a trial.
            heartbeat_interval_ms: (ttl.as_millis() / 3).max(1) as u64,
            running: running.into_iter().map(Into::into).collect(),
        }))
    }

    async fn acquire_trial(
        &self,
        req: Request<pb::AcquireTrialRequest>,
    ) -> Result<Response<pb::AcquireTrialResponse>, Status> {
        let req = req.into_inner();
        let worker = worker_id(req.worker_id).map_err(bad_request)?;
        let trial = self
            .engine
            .acquire(&worker, &req.slot, req.study_id.map(StudyId))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::AcquireTrialResponse {
            trial: trial.as_ref().map(Into::into),
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let req = req.into_inner();
        let worker = worker_id(req.worker_id).map_err(bad_request)?;
        let known = self.engine.is_known(&worker);
        let trials: Vec<TrialId> = req.trials.into_iter().map(Into::into).collect();
        let stop = self
            .engine
            .heartbeat(&worker, trials)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::HeartbeatResponse {
            stop: stop.into_iter().map(Into::into).collect(),
            known,
        }))
    }

    async fn report_metrics(
        &self,
        req: Request<pb::ReportMetricsRequest>,
    ) -> Result<Response<pb::ReportMetricsResponse>, Status> {
        let req = req.into_inner();
        let worker = worker_id(req.worker_id).map_err(bad_request)?;
        let trial = trial_ref(req.trial).map_err(bad_request)?;
        let values = convert::metric_values(req.values).map_err(bad_request)?;
        if req.attempt == 0 {
            return Err(bad_request(hpo_proto::ConvertError::Missing("attempt")));
        }
        let decision = self
            .engine
            .report(&worker, trial, req.attempt, req.step, values)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ReportMetricsResponse {
            decision: pb::Decision::from(decision) as i32,
            reason: String::new(),
        }))
    }

    async fn finish_trial(
        &self,
        req: Request<pb::FinishTrialRequest>,
    ) -> Result<Response<pb::FinishTrialResponse>, Status> {
        let req = req.into_inner();
        let worker = worker_id(req.worker_id).map_err(bad_request)?;
        let trial = trial_ref(req.trial).map_err(bad_request)?;
        let outcome =
            convert::outcome(req.outcome, req.reason, req.paused_step).map_err(bad_request)?;
        if req.attempt == 0 {
            return Err(bad_request(hpo_proto::ConvertError::Missing("attempt")));
        }
        let state = self
            .engine
            .finish(&worker, trial, req.attempt, outcome)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::FinishTrialResponse {
            state: pb::TrialState::from(state) as i32,
        }))
    }

    async fn upload_checkpoint(
        &self,
        req: Request<Streaming<pb::CheckpointChunk>>,
    ) -> Result<Response<pb::CheckpointInfo>, Status> {
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty checkpoint upload"))?;
        let worker = worker_id(first.worker_id).map_err(bad_request)?;
        let header = match first.kind {
            Some(pb::checkpoint_chunk::Kind::Header(h)) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "a checkpoint upload starts with its header",
                ));
            }
        };
        let checkpoint = CheckpointRef::try_from(header).map_err(bad_request)?;
        // Refuse an oversized upload before receiving it.
        self.engine
            .check_checkpoint_size(checkpoint.trial, checkpoint.size)
            .map_err(status)?;
        let mut bytes = Vec::with_capacity(checkpoint.size as usize);
        while let Some(chunk) = stream.message().await? {
            match chunk.kind {
                Some(pb::checkpoint_chunk::Kind::Data(d)) => {
                    if (bytes.len() + d.len()) as u64 > checkpoint.size {
                        return Err(Status::invalid_argument(format!(
                            "checkpoint of trial {} is longer than the {} bytes its header announced",
                            checkpoint.trial, checkpoint.size
                        )));
                    }
                    bytes.extend_from_slice(&d);
                }
                _ => {
                    return Err(Status::invalid_argument(
                        "a checkpoint upload has one header, then data",
                    ));
                }
            }
        }
        let stored = self
            .engine
            .put_checkpoint(&worker, checkpoint, bytes)
            .await
            .map_err(status)?;
        Ok(Response::new((&stored).into()))
    }

    type DownloadCheckpointStream = ChunkStream;

    async fn download_checkpoint(
        &self,
        req: Request<pb::DownloadCheckpointRequest>,
    ) -> Result<Response<Self::DownloadCheckpointStream>, Status> {
        let req = req.into_inner();
        let worker = worker_id(req.worker_id).map_err(bad_request)?;
        let info = req
            .checkpoint
            .ok_or_else(|| bad_request(hpo_proto::ConvertError::Missing("checkpoint")))?;
        if req.attempt == 0 {
            return Err(bad_request(hpo_proto::ConvertError::Missing("attempt")));
        }
        let checkpoint = CheckpointRef::try_from(info).map_err(bad_request)?;
        let bytes = self
            .engine
            .get_checkpoint(&worker, req.attempt, &checkpoint)
            .await
            .map_err(status)?;
        Ok(Response::new(chunks(&checkpoint, &bytes)))
    }

    async fn append_log(
        &self,
        req: Request<pb::AppendLogRequest>,
    ) -> Result<Response<pb::AppendLogResponse>, Status> {
        let req = req.into_inner();
        let worker = worker_id(req.worker_id).map_err(bad_request)?;
        let trial = trial_ref(req.trial).map_err(bad_request)?;
        if req.attempt == 0 {
            return Err(bad_request(hpo_proto::ConvertError::Missing("attempt")));
        }
        self.engine
            .append_log(&worker, trial, req.attempt, req.offset, &req.text)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::AppendLogResponse {}))
    }
}
