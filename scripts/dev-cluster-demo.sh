#!/usr/bin/env bash
# DEVELOPMENT/DEMO ONLY. Runs the real ssis-operator and ssis-agent binaries against the cluster in
# $KUBECONFIG, with simulated Windows hosts (one agent per node, sharing a world directory) and a
# simulated SQL Server (a JSON file), then applies examples/ and waits until every resource is Ready.
# Everything it starts is stopped by PID on exit, Ctrl-C or SIGTERM; the cluster objects it created
# are deleted unless --keep. See docs/dev-mode.md.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: KUBECONFIG=~/.kube/kind-dev scripts/dev-cluster-demo.sh [options]

DEVELOPMENT/DEMO ONLY: the real operator and agents, simulated Windows hosts and SQL Server.

Options:
  --check, --dry-run        Validate prerequisites and print the plan; contact no cluster, start nothing.
  --keep                    Leave the cluster objects it created (Nodes, namespaces, Secrets,
                            resources, HostConfigs); processes are stopped anyway.
  --hold                    After the summary keep the operator and agents running until Ctrl-C.
  --no-build                Use the binaries already in the target directory.
  --timeout DURATION        How long to wait for Ready (kubectl duration, default 300s).
  --operator-namespace NS   Namespace of the operator's Secrets (default ssis-operator).
  --metrics-addr ADDR       Operator /metrics and /healthz address (default 127.0.0.1:18080).
  --workdir DIR             Where the world, the SQL state and the logs go (default: a new temp dir).
  -h, --help                This text.

Environment:
  KUBECONFIG                Required: the cluster to use (never falls back to ~/.kube/config).
  KUBECTL                   kubectl binary (default: kubectl on PATH).
  SSIS_OPERATOR_BIN, SSIS_AGENT_BIN
                            Use these binaries instead of building them.
  SSIS_DEMO_API_TIMEOUT     Seconds allowed for each short API call (default 10).
EOF
}

die() {
  echo "dev-cluster-demo: error: $*" >&2
  exit 1
}

say() {
  echo "dev-cluster-demo: $*" >&2
}

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
examples_dir="$repo_root/examples"
nodes_file="$repo_root/scripts/dev/windows-nodes.txt"
# The examples' Namespace and Secrets go first; every other top-level file is a resource to wait on.
setup_manifests=("$examples_dir/00-namespace.yaml" "$examples_dir/10-secrets.yaml")
# Marks the Node objects this script creates, so they can be found after a crash.
demo_label="ssis.sqlops.io/dev-demo"
field_manager="ssis-dev-demo"

mode=run
keep=false
hold=false
build=true
wait_timeout=300s
operator_namespace=ssis-operator
metrics_addr=127.0.0.1:18080
workdir=""
api_timeout=${SSIS_DEMO_API_TIMEOUT:-10}
kubectl_bin=${KUBECTL:-kubectl}

while (($# > 0)); do
  case "$1" in
    --check | --dry-run) mode=check ;;
    --keep) keep=true ;;
    --hold) hold=true ;;
    --no-build) build=false ;;
    --timeout) wait_timeout=${2:?--timeout needs a value}; shift ;;
    --operator-namespace) operator_namespace=${2:?--operator-namespace needs a value}; shift ;;
    --metrics-addr) metrics_addr=${2:?--metrics-addr needs a value}; shift ;;
    --workdir) workdir=${2:?--workdir needs a value}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
  shift
done
[[ "$api_timeout" =~ ^[1-9][0-9]*$ ]] || die "SSIS_DEMO_API_TIMEOUT must be a whole number of seconds"
# Empty arrays under `set -u` and mapfile need bash 4.4 (macOS: brew install bash).
((BASH_VERSINFO[0] > 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] >= 4))) || die "bash 4.4 or newer is needed"

# ---- the example deployment --------------------------------------------------------------------

example_namespace=$(sed -n 's/^  name: *//p' "$examples_dir/00-namespace.yaml" | head -n 1)
resource_manifests=()
for file in "$examples_dir"/*.yaml; do
  case "$file" in
    "${setup_manifests[0]}" | "${setup_manifests[1]}") ;;
    *) resource_manifests+=("$file") ;;
  esac
done

node_names=()
node_features=()
node_versions=()
node_labels=()
while read -r name features version labels _; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  node_names+=("$name")
  node_features+=("$features")
  node_versions+=("$version")
  node_labels+=("$labels")
done <"$nodes_file"

target_dir=${CARGO_TARGET_DIR:-$repo_root/target}
operator_bin=${SSIS_OPERATOR_BIN:-$target_dir/debug/ssis-operator}
agent_bin=${SSIS_AGENT_BIN:-$target_dir/debug/ssis-agent}
if [[ -n "${SSIS_OPERATOR_BIN:-}" && -n "${SSIS_AGENT_BIN:-}" ]]; then
  build=false
fi

upper() {
  tr '[:lower:]' '[:upper:]' <<<"$1"
}

# ---- --check: prerequisites and the plan, no cluster -------------------------------------------

show() {
  echo "  $*"
}

if [[ "$mode" == check ]]; then
  problems=0
  need() {
    if command -v "$1" >/dev/null 2>&1; then
      echo "ok      $1 ($(command -v "$1"))"
    else
      echo "MISSING $1: $2"
      problems=$((problems + 1))
    fi
  }
  echo "== prerequisites"
  need "$kubectl_bin" "install kubectl or set KUBECTL"
  if [[ "$build" == true ]]; then
    need cargo "install Rust (scripts/ci/install-rust.sh) or pass --no-build with built binaries"
  else
    for bin in "$operator_bin" "$agent_bin"; do
      if [[ -x "$bin" ]]; then echo "ok      $bin"; else echo "MISSING $bin (build it or drop --no-build)"; problems=$((problems + 1)); fi
    done
  fi
  for optional in jq timeout; do
    if command -v "$optional" >/dev/null 2>&1; then echo "ok      $optional"; else echo "note    $optional not found (optional)"; fi
  done
  for file in "${setup_manifests[@]}" "${resource_manifests[@]}" "$nodes_file"; do
    if [[ -f "$file" ]]; then echo "ok      ${file#"$repo_root"/}"; else echo "MISSING $file"; problems=$((problems + 1)); fi
  done
  ((${#node_names[@]} > 0)) || { echo "MISSING Windows nodes in $nodes_file"; problems=$((problems + 1)); }
  if [[ -z "${KUBECONFIG:-}" ]]; then
    echo "note    KUBECONFIG is not set: a real run stops here (it never falls back to ~/.kube/config)"
  else
    echo "ok      KUBECONFIG=$KUBECONFIG (not contacted in --check mode)"
  fi
  # Printed literally: a real run chooses the work directory.
  # shellcheck disable=SC2016
  workdir_text='$WORKDIR'
  world="$workdir_text/world"
  echo
  echo "== plan (nothing below is run in --check mode)"
  echo "1. check the API server answers within ${api_timeout}s and the permissions:"
  show "$kubectl_bin" --request-timeout="${api_timeout}s" get --raw /readyz
  if [[ "$build" == true ]]; then
    echo "2. build the binaries:"
    show cargo build -p ssis-operator -p ssis-agent --bins
  else
    echo "2. use the binaries $operator_bin and $agent_bin"
  fi
  echo "3. install the CRDs with server-side apply:"
  echo "  $operator_bin crd | $kubectl_bin apply --server-side --field-manager=$field_manager -f -"
  echo "4. namespaces $example_namespace (examples/00-namespace.yaml) and $operator_namespace, the examples' Secrets"
  echo "5. Node objects (labelled kubernetes.io/os=windows and $demo_label=true) for the Windows nodes the cluster lacks:"
  for i in "${!node_names[@]}"; do
    echo "  ${node_names[i]}  features=${node_features[i]} sqlVersion=${node_versions[i]} labels=${node_labels[i]}"
  done
  echo "6. one simulated Windows host per node:"
  for i in "${!node_names[@]}"; do
    show "$agent_bin" provision-sim --root "$world/hosts/${node_names[i]}" --computer-name "$(upper "${node_names[i]}")" \
      --sql-version "${node_versions[i]}" --features "${node_features[i]}"
  done
  echo "7. in the background, logs under $workdir_text/logs:"
  show "$operator_bin" run --namespace "$operator_namespace" --watch-namespace "$example_namespace" --no-leader-election \
    --metrics-addr "$metrics_addr" --catalog simulated --sim-state "$workdir_text/sql-world.json" --sim-world "$world" --resync 15s
  for node in "${node_names[@]}"; do
    show "$agent_bin" run --node-name "$node" --namespace "$operator_namespace" --host simulated \
      --root "$world/hosts/$node" --world "$world" --drift-interval 2s
  done
  echo "8. apply the resources and wait:"
  for file in "${resource_manifests[@]}"; do echo "  ${file#"$repo_root"/}"; done
  show "$kubectl_bin" wait --for=condition=Ready -n "$example_namespace" '<each resource>' --timeout="$wait_timeout"
  echo "9. summary: kubectl get ssis -A, each node's HostConfig status, the simulated worker_agents"
  if [[ "$keep" == true ]]; then
    echo "10. on exit: stop every started process by PID; leave the cluster objects (--keep)"
  else
    echo "10. on exit: stop every started process by PID; delete the resources, HostConfigs, Nodes and namespaces it created"
  fi
  if ((problems > 0)); then
    die "$problems prerequisite(s) missing"
  fi
  exit 0
fi

# ---- a real run ----------------------------------------------------------------------------------

started_pids=()
started_names=()
helper_pids=()
created_nodes=()
created_namespaces=()
applied_resources=()
cleaning=false

kube() {
  "$kubectl_bin" --request-timeout="${api_timeout}s" "$@"
}

# A short API call that cannot hang: kubectl's request timeout, and `timeout` around it for the
# parts (DNS, TLS handshake) the request timeout may not cover.
kube_bounded() {
  if command -v timeout >/dev/null 2>&1; then
    timeout --kill-after=2 "$((api_timeout + 5))" "$kubectl_bin" --request-timeout="${api_timeout}s" "$@"
  else
    kube "$@"
  fi
}

# Runs a long command in the background and waits for it: `wait` returns at once on a signal, so
# Ctrl-C is handled now rather than when the command ends.
run_interruptible() {
  "$@" &
  local pid=$!
  helper_pids+=("$pid")
  local status=0
  wait "$pid" || status=$?
  return "$status"
}

is_running() {
  kill -0 "$1" 2>/dev/null
}

stop_process() {
  local pid=$1 name=$2
  is_running "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  local tries=0
  while is_running "$pid" && ((tries < 50)); do
    sleep 0.2
    tries=$((tries + 1))
  done
  if is_running "$pid"; then
    say "$name (pid $pid) ignored SIGTERM for 10 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  say "stopped $name (pid $pid)"
}

operator_running() {
  ((${#started_pids[@]} > 0)) && is_running "${started_pids[0]}"
}

delete_created_objects() {
  if ((${#applied_resources[@]} > 0)); then
    say "deleting the example resources (the operator runs their finalizers)"
    kube delete -n "$example_namespace" --ignore-not-found --wait=false "${applied_resources[@]}" >/dev/null || true
    # Finalizers need the operator; when it is gone there is nothing to wait for.
    if ! operator_running || ! "$kubectl_bin" wait --for=delete -n "$example_namespace" --timeout=60s "${applied_resources[@]}" >/dev/null 2>&1; then
      say "finalizers did not finish; removing them (dev-mode objects only)"
      for resource in "${applied_resources[@]}"; do
        kube patch -n "$example_namespace" "$resource" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
      done
    fi
  fi
  if ((${#created_nodes[@]} > 0)); then
    say "deleting the HostConfigs and Node objects of: ${created_nodes[*]}"
    kube delete hostconfigs.ssis.sqlops.io --ignore-not-found --wait=false "${created_nodes[@]}" >/dev/null || true
    kube delete nodes --ignore-not-found --wait=false "${created_nodes[@]}" >/dev/null || true
  fi
  for namespace in "${created_namespaces[@]}"; do
    say "deleting namespace $namespace"
    kube delete namespace "$namespace" --ignore-not-found --wait=false >/dev/null || true
  done
}

cleanup() {
  local status=$?
  # Runs once; a second Ctrl-C must not leave processes behind half-way through.
  [[ "$cleaning" == true ]] && return
  cleaning=true
  trap '' INT TERM
  set +e
  for pid in "${helper_pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  if [[ "$keep" == false ]]; then
    delete_created_objects
  elif ((${#created_nodes[@]} + ${#applied_resources[@]} > 0)); then
    say "--keep: leaving the cluster objects; Nodes it created carry the label $demo_label=true"
  fi
  local i
  for i in "${!started_pids[@]}"; do
    stop_process "${started_pids[i]}" "${started_names[i]}"
  done
  if [[ -n "$workdir" ]]; then
    say "logs, simulated hosts and SQL state kept in $workdir"
  fi
  exit "$status"
}
# A non-interactive shell starts its background jobs (`./script &` from another script, nohup,
# some CI runners) with SIGINT ignored, and bash cannot trap or reset a signal ignored at entry:
# the INT trap below would be a silent no-op. Say so instead of letting a Ctrl-C/SIGINT go nowhere.
if [[ "$(trap -p INT)" == "trap -- '' SIGINT" ]]; then
  say "SIGINT is ignored in this process (started as a background job): stop the run with SIGTERM (kill $$)"
fi
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

# 1. The cluster: set explicitly, reachable, and we may do what the demo needs.
[[ -n "${KUBECONFIG:-}" ]] ||
  die "KUBECONFIG is not set. Point it at a development cluster (e.g. kind: KUBECONFIG=\$(mktemp) kind create cluster --kubeconfig \"\$KUBECONFIG\"); dev mode never falls back to ~/.kube/config. Use --check to validate without a cluster."
IFS=: read -r -a kubeconfig_files <<<"$KUBECONFIG"
for file in "${kubeconfig_files[@]}"; do
  [[ -z "$file" || -f "$file" ]] || die "KUBECONFIG names $file, which does not exist"
done
command -v "$kubectl_bin" >/dev/null 2>&1 || die "kubectl not found (install it or set KUBECTL)"
if ! readyz=$(kube_bounded get --raw /readyz 2>&1); then
  die "the Kubernetes API server in KUBECONFIG=$KUBECONFIG is not reachable or not ready within ${api_timeout}s: $(tail -n 1 <<<"$readyz"). Is the cluster running?"
fi
say "API server ready ($(kube_bounded config current-context 2>/dev/null || echo 'current context'))"
for permission in "create customresourcedefinitions.apiextensions.k8s.io" "create nodes" "create namespaces"; do
  # shellcheck disable=SC2086 # the verb and the resource are two words on purpose
  answer=$(kube_bounded auth can-i $permission 2>/dev/null || true)
  [[ "$answer" == yes* ]] || die "the KUBECONFIG user may not $permission; dev mode needs a cluster you administer (kind, k3d, minikube)"
done

# 2. The binaries.
if [[ "$build" == true ]]; then
  command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust or pass --no-build"
  say "building ssis-operator and ssis-agent"
  (cd "$repo_root" && cargo build -p ssis-operator -p ssis-agent --bins)
fi
for bin in "$operator_bin" "$agent_bin"; do
  [[ -x "$bin" ]] || die "$bin is missing; build it (cargo build -p ssis-operator -p ssis-agent) or set SSIS_OPERATOR_BIN / SSIS_AGENT_BIN"
done
operator_help=$("$operator_bin" run --help)
grep -q -- '--sim-world' <<<"$operator_help" ||
  die "$operator_bin has no --sim-world flag (the dev-mode hand-off); rebuild it from this repository"

if [[ -z "$workdir" ]]; then
  workdir=$(mktemp -d "${TMPDIR:-/tmp}/ssis-dev-demo.XXXXXX")
fi
world="$workdir/world"
logs="$workdir/logs"
sim_state="$workdir/sql-world.json"
mkdir -p "$world/hosts" "$logs"
say "work directory $workdir"

# 3. CRDs (server-side apply: they are large and CEL-heavy).
say "installing the CRDs"
"$operator_bin" crd >"$workdir/crds.yaml"
crd_names=$(kube apply --server-side --field-manager="$field_manager" -f "$workdir/crds.yaml" -o name)
mapfile -t crds <<<"$crd_names"
run_interruptible "$kubectl_bin" wait --for=condition=Established --timeout=60s "${crds[@]}" >/dev/null

# 4. Namespaces and the examples' Secrets.
for namespace in "$example_namespace" "$operator_namespace"; do
  if ! kube get namespace "$namespace" -o name >/dev/null 2>&1; then
    created_namespaces+=("$namespace")
  fi
done
kube apply -f "${setup_manifests[0]}" >/dev/null
if ! kube get namespace "$operator_namespace" -o name >/dev/null 2>&1; then
  kube create namespace "$operator_namespace" >/dev/null
fi
kube apply -f "${setup_manifests[1]}" >/dev/null
say "namespaces $example_namespace and $operator_namespace ready, example Secrets applied"

# 5. Node objects for the Windows nodes the cluster lacks. Without a kubelet they stay NotReady,
# which the operator does not mind: it needs their names and labels.
for i in "${!node_names[@]}"; do
  node=${node_names[i]}
  if kube get node "$node" -o name >/dev/null 2>&1; then
    os=$(kube get node "$node" -o jsonpath='{.metadata.labels.kubernetes\.io/os}' 2>/dev/null || true)
    say "using the existing Node $node (kubernetes.io/os=$os); make sure no real ssis-agent serves it"
    continue
  fi
  {
    printf 'apiVersion: v1\nkind: Node\nmetadata:\n  name: %s\n  labels:\n' "$node"
    printf '    kubernetes.io/os: windows\n    kubernetes.io/hostname: %s\n    %s: "true"\n' "$node" "$demo_label"
    if [[ "${node_labels[i]}" != - ]]; then
      IFS=, read -r -a pairs <<<"${node_labels[i]}"
      for pair in "${pairs[@]}"; do
        printf '    %s: "%s"\n' "${pair%%=*}" "${pair#*=}"
      done
    fi
  } >"$workdir/node-$node.yaml"
  kube apply -f "$workdir/node-$node.yaml" >/dev/null
  created_nodes+=("$node")
done
say "Node objects created: ${created_nodes[*]:-none}"

# 6. One simulated Windows host per node, as SQL Server setup leaves it.
for i in "${!node_names[@]}"; do
  node=${node_names[i]}
  "$agent_bin" provision-sim --root "$world/hosts/$node" --computer-name "$(upper "$node")" \
    --sql-version "${node_versions[i]}" --features "${node_features[i]}" >"$logs/provision-$node.txt"
done
say "provisioned ${#node_names[@]} simulated Windows hosts in $world"

# 7. The operator and one agent per node, in the background. As background jobs of this script
# they ignore SIGINT (no `trap - INT` on purpose): a Ctrl-C reaches the whole process group, and the
# operator must outlive it to run the finalizers during clean-up; cleanup stops everyone with SIGTERM.
start() {
  local name=$1
  shift
  "$@" >"$logs/$name.log" 2>&1 &
  started_pids+=("$!")
  started_names+=("$name")
  say "started $name (pid $!), log $logs/$name.log"
}
start operator "$operator_bin" run --namespace "$operator_namespace" --watch-namespace "$example_namespace" \
  --no-leader-election --metrics-addr "$metrics_addr" --catalog simulated --sim-state "$sim_state" \
  --sim-world "$world" --resync 15s
for node in "${node_names[@]}"; do
  start "agent-$node" "$agent_bin" run --node-name "$node" --namespace "$operator_namespace" --host simulated \
    --root "$world/hosts/$node" --world "$world" --drift-interval 2s
done

check_processes() {
  local i
  for i in "${!started_pids[@]}"; do
    if ! is_running "${started_pids[i]}"; then
      echo "---- last lines of $logs/${started_names[i]}.log" >&2
      tail -n 20 "$logs/${started_names[i]}.log" >&2 || true
      die "${started_names[i]} (pid ${started_pids[i]}) exited early; see $logs/${started_names[i]}.log"
    fi
  done
}

# 8. The resources; wait for Ready while watching that nothing we started has died.
resource_args=()
for file in "${resource_manifests[@]}"; do resource_args+=(-f "$file"); done
applied_names=$(kube apply "${resource_args[@]}" -o name)
mapfile -t applied_resources <<<"$applied_names"
say "applied: ${applied_resources[*]}"
say "waiting up to $wait_timeout for Ready"
"$kubectl_bin" wait --for=condition=Ready -n "$example_namespace" --timeout="$wait_timeout" "${applied_resources[@]}" &
wait_pid=$!
helper_pids+=("$wait_pid")
while is_running "$wait_pid"; do
  check_processes
  sleep 1 &
  wait "$!" || true
done
wait_status=0
wait "$wait_pid" || wait_status=$?
check_processes

# 9. Summary.
echo
echo "== kubectl get ssis -A"
kube get ssis -A || true
echo
echo "== HostConfig status per node"
kube get hostconfigs.ssis.sqlops.io "${node_names[@]}" \
  -o custom-columns='NODE:.metadata.name,READY:.status.conditions[?(@.type=="Ready")].status,REASON:.status.conditions[?(@.type=="Ready")].reason,GENERATION:.metadata.generation,OBSERVED:.status.observedGeneration,HEARTBEAT:.status.agent.lastHeartbeatTime' ||
  true
echo
echo "== simulated SQL world: catalog.worker_agents ($sim_state)"
if [[ ! -f "$sim_state" ]]; then
  echo "(not saved yet: the operator has not seen an SsisdbAvailabilityGroup)"
elif command -v jq >/dev/null 2>&1; then
  jq '.worlds | map_values(.ssisdb.worker_agents)' "$sim_state" || true
else
  cat "$sim_state"
fi
echo
if ((wait_status != 0)); then
  die "not every resource became Ready within $wait_timeout; logs in $logs"
fi
say "every resource is Ready"

if [[ "$hold" == true ]]; then
  say "--hold: operator and agents keep running; Ctrl-C stops them and cleans up"
  while true; do
    check_processes
    sleep 1 &
    wait "$!" || true
  done
fi
