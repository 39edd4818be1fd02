//! hpo's worker: registers with a coordinator, runs one trial per slot on a
//! thread of its own, heartbeats its leases and reports metrics per epoch.

pub mod data;
pub mod device;
pub mod functions;
pub mod logs;
pub mod metrics;
pub mod runtime;
pub mod table;
pub mod trainer;

pub use runtime::{WorkerConfig, WorkerError, run};
