#!/usr/bin/env bash
# Makes the Rust toolchain ready for the project's checks: rustfmt and clippy components and the
# x86_64-pc-windows-gnu standard library (the node agent is built for Windows and tested under Wine).
# Idempotent: installs only what is missing, then verifies everything and fails loudly otherwise.
#
# Usage: scripts/ci/install-rust.sh   (from anywhere; needs rustup on PATH)
set -euo pipefail

WINDOWS_TARGET=x86_64-pc-windows-gnu
COMPONENTS=(rustfmt clippy)

log() { printf 'install-rust: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v rustup >/dev/null || die "rustup is not on PATH; install the Rust toolchain with rustup first"
command -v cargo >/dev/null || die "cargo is not on PATH"

installed_components=$(rustup component list --installed)
for component in "${COMPONENTS[@]}"; do
    if ! grep -q "^${component}" <<<"$installed_components"; then
        log "rustup component add $component"
        rustup component add "$component"
    fi
done

if ! rustup target list --installed | grep -qx "$WINDOWS_TARGET"; then
    log "rustup target add $WINDOWS_TARGET"
    rustup target add "$WINDOWS_TARGET"
fi

# Verify: the tools run and the target's standard library is present.
cargo fmt --version >/dev/null 2>&1 || die "rustfmt is not usable (cargo fmt --version failed)"
cargo clippy --version >/dev/null 2>&1 || die "clippy is not usable (cargo clippy --version failed)"
rustup target list --installed | grep -qx "$WINDOWS_TARGET" \
    || die "rust target $WINDOWS_TARGET is not installed (rustup target add $WINDOWS_TARGET failed)"

log "ready: $(rustc --version), $(cargo fmt --version), $(cargo clippy --version), target $WINDOWS_TARGET"
