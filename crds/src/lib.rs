//! API types of the SSIS Scale Out operator (`ssis.sqlops.io/v1alpha1`).
//!
//! Three user-facing kinds describe the desired deployment:
//! [`SsisdbAvailabilityGroup`], [`ScaleOutMasterGroup`] and [`ScaleOutWorker`].
//! The internal, cluster-scoped [`HostConfig`] is the contract between the operator (which writes its
//! spec) and the node agent on one Windows node (which writes its status).
//!
//! Doc comments on fields become the CRD field descriptions shown by `kubectl explain`.

pub mod common;
pub mod generate;
pub mod v1alpha1;

pub use common::*;
pub use v1alpha1::*;

/// API group of every kind in this crate.
pub const GROUP: &str = "ssis.sqlops.io";
/// The single served and stored version.
pub const VERSION: &str = "v1alpha1";
/// `kubectl get ssis` lists every kind of this operator.
pub const CATEGORY: &str = "ssis";
