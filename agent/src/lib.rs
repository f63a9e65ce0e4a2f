//! The SSIS Scale Out node agent: makes one Windows node match its `HostConfig`.

pub mod host;

/// Running as a real Windows service (Service Control Manager) and installing / removing it.
#[cfg(windows)]
pub mod windows_service;
