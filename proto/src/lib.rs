//! hpo's wire contract and the domain types every crate shares.
//!
//! `pb` is the generated gRPC code; nothing outside a service edge should use
//! it. `convert` turns wire messages into domain types once, with an error that
//! names the missing or invalid field.

pub mod command;
pub mod convert;
pub mod domain;
pub mod study;
pub mod trainers;

/// Generated from `proto/hpo/v1/hpo.proto`.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("hpo.v1");
}

/// Bumped on any wire change a peer of the previous version would misread.
/// Workers announce it at registration and the coordinator refuses others.
pub const PROTOCOL_VERSION: u32 = 3;

pub use convert::ConvertError;
pub use domain::*;
pub use study::{SpecError, StudySpec};
