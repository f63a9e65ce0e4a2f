//! Both binaries, built together as `scripts/dev-cluster-demo.sh` builds them (one cargo invocation,
//! so rustls gets the crypto-provider features of every crate in the build), started against a
//! local HTTPS API server endpoint: each must complete the TLS handshake with its one installed
//! CryptoProvider and fail cleanly on the HTTP error the endpoint answers. Before each binary
//! installed a provider explicitly, `ssis-agent run` panicked here: "Could not automatically
//! determine the process-level CryptoProvider from Rustls crate features".

#[path = "devmode_support.rs"]
mod devmode_support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use devmode_support::{Scratch, isolated};

/// A TLS endpoint on 127.0.0.1 whose certificate chains to its own CA, answering every request
/// with 401 Unauthorized; counts completed handshakes.
struct Endpoint {
    port: u16,
    ca_pem: String,
    handshakes: Arc<AtomicUsize>,
}

fn endpoint() -> Endpoint {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "test CA");
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let mut leaf_params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("leaf params");
    leaf_params.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().expect("ip")));
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).expect("leaf");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone(), ca.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .expect("server config");
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counter = handshakes.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let config = config.clone();
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let Ok(connection) = rustls::ServerConnection::new(config) else { return };
                let mut tls = rustls::StreamOwned::new(connection, &mut stream);
                let mut buffer = [0u8; 4096];
                if tls.read(&mut buffer).unwrap_or(0) == 0 {
                    return;
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let body = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#;
                let response = format!(
                    "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes());
                let _ = tls.flush();
            });
        }
    });
    let ca_pem = pem::encode(&pem::Pem::new("CERTIFICATE", ca.der().to_vec()));
    Endpoint { port, ca_pem, handshakes }
}

fn kubeconfig(scratch: &Scratch, endpoint: &Endpoint) -> std::path::PathBuf {
    let ca = scratch.path.join("ca.pem");
    std::fs::write(&ca, &endpoint.ca_pem).expect("write CA");
    let path = scratch.path.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: https://127.0.0.1:{}\n    \
         certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: not-a-real-token\ncontexts:\n- name: local\n  \
         context: {{cluster: local, user: u}}\ncurrent-context: local\n",
        endpoint.port,
        ca.display()
    );
    std::fs::write(&path, text).expect("write kubeconfig");
    path
}

/// Run until it exits or `limit` passes (then kill it); returns (exited by itself, status, stderr).
fn run_for(mut command: Command, limit: Duration) -> (bool, Option<std::process::ExitStatus>, String) {
    let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start");
    let started = Instant::now();
    let exited = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if started.elapsed() > limit {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    (exited.is_some(), exited, stderr)
}

fn assert_clean(name: &str, stderr: &str, endpoint: &Endpoint) {
    assert!(!stderr.contains("panicked"), "{name} panicked:\n{stderr}");
    assert!(!stderr.contains("CryptoProvider"), "{name}:\n{stderr}");
    assert!(endpoint.handshakes.load(Ordering::SeqCst) >= 1, "{name} never completed a TLS handshake:\n{stderr}");
    assert!(stderr.contains("Unauthorized") || stderr.contains("401"), "{name} should report the 401:\n{stderr}");
}

#[test]
fn the_agent_built_with_the_operator_reaches_an_https_api_server_without_panicking() {
    let endpoint = endpoint();
    let scratch = Scratch::new("agent-tls");
    let root = scratch.path.join("node");
    let provisioned = isolated("ssis-agent", &scratch.path)
        .args(["provision-sim", "--root"])
        .arg(&root)
        .args(["--computer-name", "WIN-1"])
        .output()
        .expect("provision");
    assert!(provisioned.status.success(), "{}", String::from_utf8_lossy(&provisioned.stderr));
    let mut command = isolated("ssis-agent", &scratch.path);
    command
        .env_remove("RUST_BACKTRACE")
        .args(["run", "--node-name", "win-1", "--namespace", "ssis-system", "--host", "simulated", "--root"])
        .arg(&root)
        .arg("--kubeconfig")
        .arg(kubeconfig(&scratch, &endpoint));
    // The agent retries a failing API server with backoff; a few seconds show the first attempts.
    let (_, status, stderr) = run_for(command, Duration::from_secs(5));
    assert_ne!(status.and_then(|s| s.code()), Some(101), "exit code 101 is a Rust panic:\n{stderr}");
    assert_clean("ssis-agent", &stderr, &endpoint);
}

#[test]
fn the_operator_built_with_the_agent_reaches_an_https_api_server_without_panicking() {
    let endpoint = endpoint();
    let scratch = Scratch::new("operator-tls");
    let mut command = isolated("ssis-operator", &scratch.path);
    command.env_remove("RUST_BACKTRACE").env("KUBECONFIG", kubeconfig(&scratch, &endpoint)).args([
        "run",
        "--namespace",
        "ssis-system",
        "--no-leader-election",
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let (exited, status, stderr) = run_for(command, Duration::from_secs(30));
    assert!(exited, "the start-up CRD check fails at once on a 401:\n{stderr}");
    let code = status.and_then(|s| s.code());
    assert!(code.is_some_and(|c| c != 0 && c != 101), "a clean error exit, not {code:?}:\n{stderr}");
    assert_clean("ssis-operator", &stderr, &endpoint);
}
