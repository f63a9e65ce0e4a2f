//! What the shipped binaries link, read from `cargo tree -e normal` of each binary's package (offline
//! and locked, from Cargo.lock: no build, about a second): ONE rustls crypto provider, aws-lc-rs
//! (ring must not come back through kube, rcgen, rustls, x509-parser or anything new), no `rsa` /
//! `num-bigint-dig` (RUSTSEC-2023-0071), and kube without its client-side `cel` feature.
//!
//! The agent is checked for Linux (its simulated-host mode) and for x86_64-pc-windows-gnu, where it
//! ships; the operator for Linux. `cargo tree --offline` needs every package of the lock file
//! downloaded: scripts/test-all.sh runs `cargo fetch --locked` first.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

const LINUX: &str = "x86_64-unknown-linux-gnu";
const WINDOWS: &str = "x86_64-pc-windows-gnu";

/// Packages of the normal (non-dev, non-build) dependency tree of `package` for `target`, each
/// with its enabled features.
fn normal_tree(package: &str, target: &str) -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new(cargo)
        .current_dir(&workspace)
        .args(["tree", "--offline", "--locked", "-e", "normal", "--prefix", "none", "--format", "{p}|{f}"])
        .args(["-p", package, "--target", target])
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree -p {package} --target {target} failed (run `cargo fetch --locked` once if packages are missing):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut tree: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8(output.stdout).expect("UTF-8").lines() {
        let (id, features) = line.split_once('|').expect("{p}|{f}");
        let name = id.split_whitespace().next().expect("package name").to_string();
        let features = features.split(',').filter(|f| !f.is_empty()).map(str::to_string);
        tree.entry(name).or_default().extend(features);
    }
    tree
}

fn shipped_trees() -> Vec<(String, BTreeMap<String, BTreeSet<String>>)> {
    [("ssis-operator", LINUX), ("ssis-agent", LINUX), ("ssis-agent", WINDOWS)]
        .into_iter()
        .map(|(package, target)| (format!("{package} ({target})"), normal_tree(package, target)))
        .collect()
}

#[test]
fn each_binary_links_one_tls_crypto_provider_aws_lc_rs_and_no_ring() {
    for (binary, tree) in shipped_trees() {
        assert!(tree.contains_key("aws-lc-rs"), "{binary}: aws-lc-rs is the provider; the tree has {:?}", tree.keys());
        assert!(
            !tree.contains_key("ring"),
            "{binary} links ring again: `cargo tree -e features -i ring -p ...` says who"
        );
        let rustls = &tree["rustls"];
        assert!(rustls.contains("aws_lc_rs") && !rustls.contains("ring"), "{binary}: rustls features {rustls:?}");
        let rcgen = &tree["rcgen"];
        assert!(rcgen.contains("aws_lc_rs") && !rcgen.contains("ring"), "{binary}: rcgen features {rcgen:?}");
    }
}

#[test]
fn rsa_keys_come_from_the_provider_not_from_the_rsa_crate() {
    for (binary, tree) in shipped_trees() {
        for advisory_crate in ["rsa", "num-bigint-dig"] {
            assert!(!tree.contains_key(advisory_crate), "{binary} links {advisory_crate} (RUSTSEC-2023-0071)");
        }
    }
}

#[test]
fn kube_is_built_without_client_side_cel() {
    for (binary, tree) in shipped_trees() {
        let kube_core = &tree["kube-core"];
        assert!(!kube_core.contains("cel"), "{binary}: kube-core features {kube_core:?}");
    }
    // The agent evaluates no CEL at all; the operator still gets kube-cel through the in-memory API
    // server of its `simulate` command (ssis-sim-apiserver), not through kube.
    for (binary, tree) in shipped_trees().into_iter().filter(|(b, _)| b.starts_with("ssis-agent")) {
        assert!(!tree.contains_key("kube-cel"), "{binary} links kube-cel");
    }
}
