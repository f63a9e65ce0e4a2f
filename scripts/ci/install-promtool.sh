#!/usr/bin/env bash
# Install the real promtool used by the alert-rule tests (tests/tests/prometheus_rules.rs) into
# <repo>/.tools/bin. It comes from Debian's `prometheus` package: the .deb is downloaded with
# `apt-get download` and only usr/bin/promtool is extracted, so no Prometheus service is installed
# or started and no dependency is pulled in (promtool is a static Go binary).
#
# Idempotent: when .tools/bin/promtool reports the expected version, nothing is fetched.
# Requirements: bash, apt-get, dpkg-deb (Debian 12; `apt-get update` runs once when the package is
# not known yet).
# Usage: scripts/ci/install-promtool.sh          FORCE=1 scripts/ci/install-promtool.sh
set -euo pipefail

# Pinned: the version the rule tests were written and run against (Debian 12 "bookworm").
DEB_PACKAGE="prometheus"
EXPECTED_VERSION_PREFIX="2.42."

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin_dir="${repo_root}/.tools/bin"
promtool_bin="${bin_dir}/promtool"

log() { printf 'install-promtool: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

promtool_version() { "${promtool_bin}" --version 2>&1 | sed -n 's/^promtool, version \([^ ]*\).*/\1/p' | head -n1; }

if [[ "${FORCE:-0}" != "1" && -x "${promtool_bin}" && "$(promtool_version)" == ${EXPECTED_VERSION_PREFIX}* ]]; then
  log "already installed: promtool $(promtool_version) in ${bin_dir}"
  exit 0
fi

command -v apt-get >/dev/null || die "apt-get is required (Debian); or set PROMTOOL to a promtool binary"
command -v dpkg-deb >/dev/null || die "dpkg-deb is required"

work_dir="$(mktemp -d)"
trap 'rm -rf "${work_dir}"' EXIT

download() { (cd "${work_dir}" && apt-get download -q "${DEB_PACKAGE}" >/dev/null 2>&1); }
if ! download; then
  log "package ${DEB_PACKAGE} not in the local package lists; running apt-get update"
  apt-get update -qq >/dev/null
  download || die "apt-get download ${DEB_PACKAGE} failed"
fi
deb="$(find "${work_dir}" -maxdepth 1 -name "${DEB_PACKAGE}_*.deb" | head -n1)"
[[ -n "${deb}" ]] || die "apt-get download produced no ${DEB_PACKAGE} .deb"
dpkg-deb -x "${deb}" "${work_dir}/root"
[[ -x "${work_dir}/root/usr/bin/promtool" ]] || die "${deb} carries no usr/bin/promtool"

mkdir -p "${bin_dir}"
# Through a temporary name and a rename, so a concurrent reader never sees a half-written file.
install -m 0755 "${work_dir}/root/usr/bin/promtool" "${bin_dir}/.promtool.new"
mv -f "${bin_dir}/.promtool.new" "${promtool_bin}"

version="$(promtool_version)" || true
[[ "${version}" == ${EXPECTED_VERSION_PREFIX}* ]] || die "expected promtool ${EXPECTED_VERSION_PREFIX}x, got '${version}'"
log "installed promtool ${version} into ${bin_dir} (tests find it there, or set PROMTOOL)"
