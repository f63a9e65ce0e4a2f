#!/usr/bin/env bash
# Regenerate everything under deploy/ and the chart's CRD copies from their sources:
#   crds/generated/*.yaml  -> charts/ssis-operator/crds/  and  deploy/crds/   (byte-identical copies)
#   charts/ssis-operator   -> deploy/ssis-operator.yaml   (helm template, default values)
# tests/tests/deploy_manifests.rs and tests/tests/helm_chart.rs fail when these are out of date.
# Needs helm: $HELM, or .tools/bin/helm (scripts/ci/install-helm.sh installs it).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"
helm="${HELM:-${repo_root}/.tools/bin/helm}"
[[ -x "${helm}" ]] || { echo "render.sh: helm not found at ${helm}; run scripts/ci/install-helm.sh" >&2; exit 1; }

for dir in charts/ssis-operator/crds deploy/crds; do
  rm -f "${dir}"/*.yaml
  cp crds/generated/*.yaml "${dir}/"
done

{
  echo "# Rendered by deploy/render.sh: helm template ssis-operator charts/ssis-operator --namespace ssis-operator"
  echo "# (default values; CRDs are in deploy/crds/). Do not edit; change the chart and re-render."
  "${helm}" template ssis-operator charts/ssis-operator --namespace ssis-operator
} > deploy/ssis-operator.yaml
echo "render.sh: deploy/ and charts/ssis-operator/crds/ are up to date" >&2
