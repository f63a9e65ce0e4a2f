#!/usr/bin/env bash
# Supply-chain policy of deny.toml: licenses, bans (one crypto provider, duplicate versions) and
# sources, checked offline against Cargo.lock. Installs the pinned cargo-deny from crates.io when
# it is missing (a source build: a few minutes on 2 cores, once per machine).
#
# Usage: scripts/ci/cargo-deny.sh   (from anywhere inside the repository)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
VERSION=0.20.2

log() { echo "cargo-deny: $*" >&2; }

installed() { cargo deny --version 2>/dev/null | grep -qx "cargo-deny $VERSION"; }

if ! installed; then
    log "cargo install --locked cargo-deny@$VERSION"
    started=$SECONDS
    cargo install --locked "cargo-deny@$VERSION"
    log "installed in $((SECONDS - started)) s"
fi
installed || { log "ERROR: cargo deny --version does not report $VERSION after the install"; exit 1; }

# The check reads package metadata and license files from the local registry: fetch what the lock
# names (a no-op when everything is downloaded already), then work offline.
cargo fetch --locked
cargo deny --offline --locked check bans licenses sources
