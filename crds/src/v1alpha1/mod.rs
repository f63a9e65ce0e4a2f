//! Version `v1alpha1` of `ssis.sqlops.io`.

pub mod availability_group;
pub mod host_config;
pub mod master_group;
pub mod worker;

pub use availability_group::*;
pub use host_config::*;
pub use master_group::*;
pub use worker::*;
