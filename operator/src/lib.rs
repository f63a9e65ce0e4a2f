//! The SSIS Scale Out operator.

pub mod catalog;
pub mod certs;
pub mod cli;
pub mod controller;
pub mod metrics;
pub mod plan;
pub mod simulation;
