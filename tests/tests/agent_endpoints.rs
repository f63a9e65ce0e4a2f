//! The real `ssis-agent run` binary, its stderr a pipe (as under a service manager or a container
//! runtime): every log line is JSON without ANSI escape codes, and its metrics endpoint answers
//! /metrics, /healthz and /readyz while the API server it is pointed at fails every request.

#[path = "devmode_support.rs"]
mod devmode_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use devmode_support::{Scratch, isolated};

/// An "API server" that accepts connections and closes them at once: every request fails.
fn refusing_api_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    port
}

fn get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics endpoint");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let code = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status code");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

#[test]
fn the_agent_logs_json_to_a_pipe_and_serves_metrics_and_health() {
    let scratch = Scratch::new("agent-endpoints");
    let root = scratch.path.join("node");
    let provisioned = isolated("ssis-agent", &scratch.path)
        .args(["provision-sim", "--root"])
        .arg(&root)
        .args(["--computer-name", "WIN-1"])
        .output()
        .expect("provision");
    assert!(provisioned.status.success(), "{}", String::from_utf8_lossy(&provisioned.stderr));
    let kubeconfig = scratch.path.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: http://127.0.0.1:{}\n\
             users:\n- name: u\n  user: {{}}\ncontexts:\n- name: local\n  context: {{cluster: local, user: u}}\n\
             current-context: local\n",
            refusing_api_server()
        ),
    )
    .expect("write kubeconfig");

    let mut child = isolated("ssis-agent", &scratch.path)
        .env("RUST_LOG", "info")
        .args(["run", "--node-name", "win-1", "--namespace", "ssis-system", "--host", "simulated", "--root"])
        .arg(&root)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ssis-agent");
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let mut port = None;
    let mut transient_failures = false;
    while Instant::now() < deadline && !(port.is_some() && transient_failures) {
        while let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
            seen.push(line.clone());
            let json: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line:?}"));
            if json["fields"]["message"] == "serving /metrics /healthz /readyz" {
                let addr = json["fields"]["addr"].as_str().expect("addr field");
                port = addr.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok());
            }
        }
        if let Some(port) = port {
            let (code, body) = get(port, "/metrics");
            assert_eq!(code, 200, "{body}");
            transient_failures = body
                .lines()
                .any(|l| l.starts_with(r#"ssis_agent_failures_total{category="transient"} "#) && !l.ends_with(" 0"));
        }
    }
    let port = port.unwrap_or_else(|| panic!("the agent never logged its metrics address:\n{}", seen.join("\n")));
    assert!(transient_failures, "the failing API server never showed as transient failures");
    // Started less than the liveness bound ago: live, but not ready before a completed pass.
    assert_eq!(get(port, "/healthz").0, 200);
    assert_eq!(get(port, "/readyz").0, 503);
    // Without its HostConfig (the watch fails) the agent runs no pass at all.
    let (_, metrics) = get(port, "/metrics");
    assert!(!metrics.contains(r#"ssis_agent_passes_total{result="ok"}"#), "{metrics}");
    let _ = child.kill();
    let _ = child.wait();
    while let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
        seen.push(line);
    }
    assert!(!seen.is_empty());
    for line in &seen {
        assert!(!line.contains('\u{1b}'), "ANSI escape in a log line: {line:?}");
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
    }
}
