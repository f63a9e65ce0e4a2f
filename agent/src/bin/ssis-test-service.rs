//! Test helper for agent/tests/windows_services.rs: a service that runs the agent's real service
//! plumbing (`ssis_agent::windows_service::run_as_service`) with a body that only waits for stop.
//! `ssis-test-service service <marker-file>` writes `running` to the marker file once the body
//! runs and `stopped` when the SCM stops it.

#[cfg(windows)]
fn main() -> anyhow::Result<()> {
    fn body(shutdown: std::sync::mpsc::Receiver<()>) -> anyhow::Result<()> {
        let marker = std::env::args_os().nth(2);
        if let Some(m) = &marker {
            std::fs::write(m, "running")?;
        }
        // Returns on stop/shutdown, or when the control handler is gone.
        let _ = shutdown.recv();
        if let Some(m) = &marker {
            std::fs::write(m, "stopped")?;
        }
        Ok(())
    }
    match std::env::args().nth(1).as_deref() {
        Some(ssis_agent::windows_service::SERVICE_COMMAND) => ssis_agent::windows_service::run_as_service(body),
        _ => anyhow::bail!("usage: ssis-test-service service [marker-file] (started by the SCM)"),
    }
}

#[cfg(not(windows))]
fn main() {
    eprintln!("ssis-test-service is a Windows service; it does nothing on this platform");
    std::process::exit(2);
}
