use super::{ChunkStream, chunks, status};
use crate::engine::Engine;
use hpo_proto::pb::{self, study_service_server::StudyService as Api};
use hpo_proto::{StudyId, TrialId};
use tonic::{Request, Response, Status};

pub struct StudyService {
    engine: Engine,
}

impl StudyService {
    pub fn new(engine: Engine) -> Self {
        StudyService { engine }
    }
}

#[tonic::async_trait]
impl Api for StudyService {
    async fn submit_study(
        &self,
        req: Request<pb::SubmitStudyRequest>,
    ) -> Result<Response<pb::SubmitStudyResponse>, Status> {
        let req = req.into_inner();
        let id = self
            .engine
            .submit(&req.study_toml, &req.source_name)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::SubmitStudyResponse { study_id: id.0 }))
    }

    async fn get_study(
        &self,
        req: Request<pb::GetStudyRequest>,
    ) -> Result<Response<pb::StudySummary>, Status> {
        let info = self
            .engine
            .study_info(StudyId(req.into_inner().study_id))
            .map_err(status)?;
        Ok(Response::new((&info).into()))
    }

    async fn list_studies(
        &self,
        _req: Request<pb::ListStudiesRequest>,
    ) -> Result<Response<pb::ListStudiesResponse>, Status> {
        let studies = self.engine.list_studies().map_err(status)?;
        Ok(Response::new(pb::ListStudiesResponse {
            studies: studies.iter().map(Into::into).collect(),
        }))
    }

    async fn list_trials(
        &self,
        req: Request<pb::ListTrialsRequest>,
    ) -> Result<Response<pb::ListTrialsResponse>, Status> {
        let req = req.into_inner();
        let trials = self
            .engine
            .list_trials(StudyId(req.study_id), req.with_metrics)
            .map_err(status)?;
        Ok(Response::new(pb::ListTrialsResponse {
            trials: trials.iter().map(Into::into).collect(),
        }))
    }

    async fn cancel_study(
        &self,
        req: Request<pb::CancelStudyRequest>,
    ) -> Result<Response<pb::StudySummary>, Status> {
        let info = self
            .engine
            .cancel(StudyId(req.into_inner().study_id))
            .await
            .map_err(status)?;
        Ok(Response::new((&info).into()))
    }

    type DownloadBestModelStream = ChunkStream;

    async fn download_best_model(
        &self,
        req: Request<pb::DownloadBestModelRequest>,
    ) -> Result<Response<Self::DownloadBestModelStream>, Status> {
        let id = StudyId(req.into_inner().study_id);
        let (c, bytes) = self.engine.best_model(id).await.map_err(status)?;
        Ok(Response::new(chunks(&c, &bytes)))
    }

    async fn get_trial_log(
        &self,
        req: Request<pb::GetTrialLogRequest>,
    ) -> Result<Response<pb::TrialLog>, Status> {
        let req = req.into_inner();
        let trial = TrialId {
            study: StudyId(req.study_id),
            number: req.number,
        };
        let log = self.engine.trial_log(trial, req.offset).map_err(status)?;
        Ok(Response::new(log.into()))
    }
}
