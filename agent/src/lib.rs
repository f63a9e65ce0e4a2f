//! The SSIS Scale Out node agent: makes one Windows node match its `HostConfig`.
//!
//! - [`settings`]: pure editors for MasterSettings.config, WorkerSettings.config, MsDtsSrvr.ini.xml.
//! - [`safety`]: the allow-list every HostConfig item passes before anything is touched.
//! - [`engine`]: diff desired vs observed → ordered idempotent steps → executor → status.
//! - [`host`]: the `Host` trait with the Win32 and the simulated implementations.
//! - [`runtime`]: the Kubernetes side (watch HostConfig, read Secrets, write status, drift poll).
//! - [`metrics`]: per-host figures and the `/metrics`, `/healthz`, `/readyz` endpoints.

pub mod certificates;
pub mod engine;
pub mod host;
pub mod metrics;
pub mod runtime;
pub mod safety;
pub mod settings;

/// Running as a real Windows service (Service Control Manager) and installing / removing it.
#[cfg(windows)]
pub mod windows_service;
