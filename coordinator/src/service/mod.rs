//! gRPC handlers: convert the wire request to domain values, call the engine,
//! convert the answer back. Errors become status codes in `status` alone.

mod study;
mod worker;

pub use study::StudyService;
pub use worker::WorkerService;

use crate::checkpoints::CheckpointError;
use crate::engine::EngineError;
use crate::storage::StorageError;
use hpo_proto::ConvertError;
use tonic::Status;

/// The one place where errors become gRPC status codes.
pub fn status(e: EngineError) -> Status {
    match e {
        EngineError::InvalidArgument(m) => Status::invalid_argument(m),
        EngineError::NotFound(m) => Status::not_found(m),
        EngineError::FailedPrecondition(m) => Status::failed_precondition(m),
        EngineError::Unavailable => Status::unavailable(e.to_string()),
        EngineError::Internal(m) => Status::internal(m),
        EngineError::Storage(StorageError::NotFound(m)) => {
            Status::not_found(format!("{m} not found"))
        }
        EngineError::Storage(StorageError::Conflict(m)) => Status::failed_precondition(m),
        EngineError::Storage(e @ (StorageError::Backend(_) | StorageError::Corrupt(_))) => {
            tracing::error!(error = %e, "storage error");
            Status::internal(e.to_string())
        }
        EngineError::Checkpoint(e @ CheckpointError::TooLarge { .. }) => {
            Status::resource_exhausted(e.to_string())
        }
        EngineError::Checkpoint(e @ CheckpointError::Corrupt { .. }) => {
            Status::data_loss(e.to_string())
        }
        EngineError::Checkpoint(e @ CheckpointError::NotFound(..)) => {
            Status::not_found(e.to_string())
        }
        EngineError::Checkpoint(e @ CheckpointError::Io(_)) => {
            tracing::error!(error = %e, "checkpoint storage error");
            Status::internal(e.to_string())
        }
    }
}

/// Size of the data chunks of a checkpoint download.
const CHUNK: usize = 1 << 20;

pub type ChunkStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<hpo_proto::pb::CheckpointChunk, Status>> + Send>,
>;

/// A checkpoint as a download stream: its header, then data chunks.
pub fn chunks(c: &hpo_proto::CheckpointRef, bytes: &[u8]) -> ChunkStream {
    use hpo_proto::pb::{CheckpointChunk, checkpoint_chunk::Kind};
    let mut out = vec![Ok(CheckpointChunk {
        kind: Some(Kind::Header(c.into())),
        worker_id: String::new(),
    })];
    out.extend(bytes.chunks(CHUNK).map(|d| {
        Ok(CheckpointChunk {
            kind: Some(Kind::Data(d.to_vec())),
            worker_id: String::new(),
        })
    }));
    Box::pin(tokio_stream::iter(out))
}

pub fn bad_request(e: ConvertError) -> Status {
    Status::invalid_argument(e.to_string())
}
