//! The SSIS Scale Out node agent: makes one Windows node match its `HostConfig`.

pub mod host;
