//! docker/Dockerfile and docker/Dockerfile.agent cannot be built here (no Docker engine, no registry),
//! so this checks what can be checked statically: multi-stage locked release builds of binaries that
//! exist in the workspace, the base images, a non-root user matching the chart, entrypoints that
//! match what the chart passes, and build-context filters.

#[path = "helm_support.rs"]
mod support;

use serde_json::json;
use support::*;

/// One Dockerfile instruction: keyword (upper case) and its arguments, continuation lines joined.
#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
}

fn parse_dockerfile(relative: &str) -> Vec<Instruction> {
    let text = std::fs::read_to_string(repo_root().join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"));
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(continued) = trimmed.strip_suffix('\\') {
            current.push_str(continued);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, args) = current.split_once(char::is_whitespace).unwrap_or((&current, ""));
        instructions.push(Instruction { keyword: keyword.to_ascii_uppercase(), args: args.trim().to_string() });
        current.clear();
    }
    assert!(current.is_empty(), "{relative} ends inside a continued line");
    instructions
}

/// The instructions of each stage (split at FROM), FROM included.
fn stages(instructions: &[Instruction]) -> Vec<Vec<Instruction>> {
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for instruction in instructions {
        if instruction.keyword == "FROM" {
            stages.push(Vec::new());
        }
        if let Some(stage) = stages.last_mut() {
            stage.push(instruction.clone());
        }
    }
    stages
}

fn find<'a>(stage: &'a [Instruction], keyword: &str) -> Vec<&'a Instruction> {
    stage.iter().filter(|instruction| instruction.keyword == keyword).collect()
}

/// `[[bin]] name = "..."` entries of a workspace member's Cargo.toml.
fn binaries(member: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join(member).join("Cargo.toml")).expect("Cargo.toml");
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin && let Some(value) = line.strip_prefix("name = ") {
            names.push(value.trim_matches('"').to_string());
        }
    }
    names
}

fn workspace_rust_version() -> (u32, u32) {
    let text = std::fs::read_to_string(repo_root().join("Cargo.toml")).expect("Cargo.toml");
    let version = text.lines().find_map(|line| line.trim().strip_prefix("rust-version = ")).expect("rust-version");
    let mut parts = version.trim_matches('"').split('.').map(|part| part.parse::<u32>().expect("number"));
    (parts.next().unwrap(), parts.next().unwrap())
}

fn rust_version_arg(instructions: &[Instruction]) -> (u32, u32) {
    let arg = instructions
        .iter()
        .find(|instruction| instruction.keyword == "ARG" && instruction.args.starts_with("RUST_VERSION="))
        .expect("ARG RUST_VERSION=");
    let value = arg.args.trim_start_matches("RUST_VERSION=");
    let mut parts = value.split('.').map(|part| part.parse::<u32>().expect("number"));
    (parts.next().unwrap(), parts.next().unwrap())
}

#[test]
fn operator_image_is_a_locked_multi_stage_build_on_distroless_as_non_root() {
    let instructions = parse_dockerfile("docker/Dockerfile");
    let stages = stages(&instructions);
    assert_eq!(stages.len(), 2, "build stage + runtime stage");
    let (build, runtime) = (&stages[0], &stages[1]);
    assert!(build[0].args.contains("rust:${RUST_VERSION}") && build[0].args.ends_with("AS build"), "{:?}", build[0]);
    assert!(
        rust_version_arg(&instructions) >= workspace_rust_version(),
        "RUST_VERSION below the workspace rust-version"
    );

    let bins = binaries("operator");
    assert!(bins.contains(&"ssis-operator".to_string()), "{bins:?}");
    let cargo = find(build, "RUN").into_iter().find(|run| run.args.contains("cargo build")).expect("cargo build");
    for flag in ["--release", "--locked", "--package ssis-operator", "--bin ssis-operator"] {
        assert!(cargo.args.contains(flag), "cargo build lacks {flag}: {}", cargo.args);
    }

    assert!(runtime[0].args.starts_with("gcr.io/distroless/"), "runtime base: {}", runtime[0].args);
    assert!(runtime[0].args.ends_with(":nonroot"), "runtime base: {}", runtime[0].args);
    assert!(find(runtime, "RUN").is_empty(), "the distroless stage has no shell to RUN anything");
    let copy = find(runtime, "COPY");
    assert_eq!(copy.len(), 1);
    assert_eq!(copy[0].args, "--from=build /out/ssis-operator /usr/local/bin/ssis-operator");
    assert_eq!(find(runtime, "ENTRYPOINT")[0].args, r#"["/usr/local/bin/ssis-operator"]"#);

    // The image user is the one the chart's restricted pod security context runs as.
    let user = &find(runtime, "USER").last().expect("USER").args;
    let uid: u32 = user.split(':').next().unwrap().parse().expect("numeric UID (runAsNonRoot needs one)");
    assert_ne!(uid, 0);
    let docs = render(&[]);
    let pod = &one(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsUser"], json!(uid));
    // EXPOSE documents the metrics port the chart probes.
    let port = pod["containers"][0]["ports"][0]["containerPort"].clone();
    assert_eq!(json!(find(runtime, "EXPOSE")[0].args.parse::<u16>().expect("port")), port);
}

#[test]
fn agent_image_is_a_cross_built_exe_on_the_host_process_base_image() {
    let instructions = parse_dockerfile("docker/Dockerfile.agent");
    let stages = stages(&instructions);
    assert_eq!(stages.len(), 2, "build stage + runtime stage");
    let (build, runtime) = (&stages[0], &stages[1]);
    // The build stage runs on the build machine (Linux) even when the target platform is windows/amd64.
    assert!(build[0].args.starts_with("--platform=$BUILDPLATFORM "), "{:?}", build[0]);
    assert!(rust_version_arg(&instructions) >= workspace_rust_version());
    let runs: Vec<&str> = find(build, "RUN").iter().map(|run| run.args.as_str()).collect();
    assert!(runs.iter().any(|run| run.contains("gcc-mingw-w64-x86-64")), "MinGW linker installed");
    assert!(runs.iter().any(|run| run.contains("rustup target add x86_64-pc-windows-gnu")));
    let bins = binaries("agent");
    assert!(bins.contains(&"ssis-agent".to_string()), "{bins:?}");
    let cargo = runs.iter().find(|run| run.contains("cargo build")).expect("cargo build");
    for flag in ["--release", "--locked", "--target x86_64-pc-windows-gnu", "--package ssis-agent", "--bin ssis-agent"]
    {
        assert!(cargo.contains(flag), "cargo build lacks {flag}: {cargo}");
    }
    // The linker the build relies on is configured for the target in the workspace.
    let cargo_config = std::fs::read_to_string(repo_root().join(".cargo/config.toml")).expect(".cargo/config.toml");
    assert!(cargo_config.contains("[target.x86_64-pc-windows-gnu]") && cargo_config.contains("x86_64-w64-mingw32-gcc"));

    assert_eq!(runtime[0].args, "mcr.microsoft.com/oss/kubernetes/windows-host-process-containers-base-image:v1.0.0");
    assert!(find(runtime, "RUN").is_empty(), "no RUN: the stage must build without a Windows machine");
    assert!(find(runtime, "USER").is_empty(), "a HostProcess container's user comes from the pod spec");
    assert_eq!(find(runtime, "COPY")[0].args, "--from=build /out/ssis-agent.exe /ssis-agent.exe");
    assert_eq!(find(runtime, "ENTRYPOINT")[0].args, r#"["ssis-agent.exe"]"#);

    // The chart relies on that entrypoint: it passes only args.
    let docs = render(&[]);
    let container = &one(&docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0];
    assert!(container["command"].is_null(), "the DaemonSet must not override the image entrypoint");
    assert_eq!(container["args"][0], json!("run"));
}

#[test]
fn build_contexts_exclude_build_output_tools_and_git() {
    for dockerfile in ["docker/Dockerfile", "docker/Dockerfile.agent"] {
        let ignore_path = repo_root().join(format!("{dockerfile}.dockerignore"));
        let ignore = std::fs::read_to_string(&ignore_path).unwrap_or_else(|e| panic!("{}: {e}", ignore_path.display()));
        let patterns: Vec<&str> =
            ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
        for needed in ["target/", ".tools/", ".git/"] {
            assert!(patterns.contains(&needed), "{} lacks {needed}", ignore_path.display());
        }
        // The build copies the whole workspace, which --locked needs with Cargo.lock.
        let instructions = parse_dockerfile(dockerfile);
        assert!(instructions.iter().any(|i| i.keyword == "COPY" && i.args == ". ."), "{dockerfile}: COPY . .");
        assert!(!patterns.iter().any(|p| *p == "Cargo.lock" || *p == "*.lock"), "Cargo.lock must be in the context");
    }
}
