#!/usr/bin/env bash
# The whole test suite, as the README documents it: installs what the tests need (Rust components
# and the Windows target, mingw + Wine with the project's prefix, helm + kubectl into .tools/bin),
# then runs every workspace test on Linux and the node agent's tests as Windows executables under
# Wine (the runner is set in .cargo/config.toml). promtool (Debian's prometheus package) checks the
# chart's alert rules.
#
# Usage: ./scripts/test-all.sh   (from anywhere inside the repository)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

bash scripts/ci/install-rust.sh
bash scripts/ci/install-windows.sh
# Wine's background processes would otherwise keep the caller's output pipe open after we exit.
trap 'bash scripts/ci/install-windows.sh stop' EXIT
bash scripts/ci/install-helm.sh
bash scripts/ci/install-promtool.sh
export PATH="$ROOT/.tools/bin:$PATH"

# Every package of Cargo.lock, for every target: tests/tests/binaries_dependency_tree.rs reads the
# Windows agent's tree with `cargo tree --offline`, before anything is built for Windows.
cargo fetch --locked

echo "== cargo test --workspace (Linux)" >&2
cargo test --workspace --locked

echo "== cargo test -p ssis-agent (Windows build under Wine)" >&2
cargo test -p ssis-agent --target x86_64-pc-windows-gnu --locked
