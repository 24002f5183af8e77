#!/usr/bin/env bash
# A local shoal cluster on loopback: one head and N workers as background
# processes, plus the signals chaos experiments need (kill, freeze,
# preempt) addressed by node name.
#
#   scripts/cluster.sh up 3          # head + w1..w3, waits until all are up
#   scripts/cluster.sh status        # the head's view (shoalctl status)
#   scripts/cluster.sh kill w2       # SIGKILL: a spot node vanishing
#   scripts/cluster.sh down          # SIGTERM all, SIGKILL stragglers
#
# Run with no arguments for the full list. Everything the cluster needs
# lives in one state directory (CLUSTER_DIR): pid files, logs, the shared
# cluster secret and each node's model cache. Only CLUSTER_* variables
# configure this script: shoald rejects SHOAL_* variables it does not know.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHOALD=${SHOALD:-$ROOT/build/shoald}
SHOALCTL=${SHOALCTL:-$ROOT/build/shoalctl}
CLUSTER_DIR=${CLUSTER_DIR:-/tmp/shoal-cluster-${USER:-$(id -un)}}
CLUSTER_HOST=127.0.0.1
# Head ports: the client gateway, the node link, the metrics endpoint.
CLUSTER_PORT=${CLUSTER_PORT:-5555}
CLUSTER_LINK_PORT=${CLUSTER_LINK_PORT:-5556}
CLUSTER_HTTP_PORT=${CLUSTER_HTTP_PORT:-9310}
CLUSTER_MODELS=${CLUSTER_MODELS:-$ROOT/examples/models}
# Extra shoald arguments for every node, word-split, e.g.
# CLUSTER_ARGS="--set cluster.timeout_ms=500 --set log.level=debug".
CLUSTER_ARGS=${CLUSTER_ARGS:-}
# Bounds on waits, in seconds.
CLUSTER_START_TIMEOUT=${CLUSTER_START_TIMEOUT:-20}
CLUSTER_STOP_TIMEOUT=${CLUSTER_STOP_TIMEOUT:-10}

NODES=$CLUSTER_DIR/nodes
STATE=$CLUSTER_DIR/cluster.env

usage() {
  cat <<EOF
usage: scripts/cluster.sh COMMAND [ARGS]

A local shoal cluster on $CLUSTER_HOST: one head (client gateway, router,
cache, coordinator) and workers (executors), each a shoald process.

commands:
  up N [LABELS]    start a head and N workers (w1..wN), wait until all are up;
                   refuses when a cluster is already running. LABELS (e.g.
                   capacity=spot) go to every worker
  down             SIGTERM every node (drain); after ${CLUSTER_STOP_TIMEOUT}s a second
                   SIGTERM (stop now), 5s later SIGKILL; removes the pid files
  status [--json]  the head's status op: every node, its state and replicas
  add [LABELS]     start one more worker (the next free wN), wait until it is up
  start NODE       start a stopped node again with its old name and ports
                   (e.g. the head after 'kill head')
  kill NODE        SIGKILL the node (it vanishes like a lost spot instance)
  freeze NODE      SIGSTOP the node (alive but silent)
  thaw NODE        SIGCONT a frozen node
  preempt NODE     SIGTERM the node (a preemption notice: it drains, exits 0)
  logs NODE [-f]   print (or follow) the node's log
  ps               every node this directory knows: name, pid, running or not
  endpoint         print the head's client endpoint

NODE is the name the status op reports: head, w1, w2, ...

environment:
  CLUSTER_DIR        state directory (now $CLUSTER_DIR)
  CLUSTER_PORT       head client gateway port (now $CLUSTER_PORT)
  CLUSTER_LINK_PORT  head node-link port, cluster.listen (now $CLUSTER_LINK_PORT)
  CLUSTER_HTTP_PORT  head metrics port (now $CLUSTER_HTTP_PORT); workers take
                     the next free ports above it
  CLUSTER_MODELS     model repository (now $CLUSTER_MODELS)
  CLUSTER_ARGS       extra shoald arguments for every node
  SHOALD, SHOALCTL   the binaries (now $SHOALD, $SHOALCTL)

The ports of a running cluster are remembered in CLUSTER_DIR, so only 'up'
reads the CLUSTER_*PORT variables.
EOF
}

die() {
  echo "cluster.sh: $*" >&2
  exit 1
}

# -- state ----------------------------------------------------------------------

# The ports 'up' chose: later commands must use them whatever the
# environment says now.
load_state() {
  [[ -f $STATE ]] || die "no cluster in $CLUSTER_DIR (run: cluster.sh up N)"
  # shellcheck source=/dev/null
  source "$STATE"
  ENDPOINT=tcp://$CLUSTER_HOST:$CLUSTER_PORT
  LINK=tcp://$CLUSTER_HOST:$CLUSTER_LINK_PORT
}

valid_name() {
  [[ $1 =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad node name '$1'"
}

# The pid of NODE when it is running and really is that shoald node. A pid
# file can outlive its process and the pid be reused by anything, so the
# command line must name this node and this state directory before we send
# a signal to it.
node_pid() {
  local name=$1 pid
  [[ -f $NODES/$name.pid ]] || return 1
  pid=$(<"$NODES/$name.pid")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  local cmd
  cmd=$(tr '\0' '\n' </proc/"$pid"/cmdline 2>/dev/null) || return 1
  grep -qxF "node.name=$name" <<<"$cmd" || return 1
  grep -qF "models.cache_dir=$NODES/$name.cache" <<<"$cmd" || return 1
  # A SIGKILLed child of ours that nobody reaped yet is a zombie: gone.
  local st
  st=$(awk '{print $3}' /proc/"$pid"/stat 2>/dev/null) || return 1
  [[ $st != Z ]] || return 1
  echo "$pid"
}

known_nodes() {
  local f
  for f in "$NODES"/*.role; do
    [[ -e $f ]] || continue
    basename "$f" .role
  done
}

running_nodes() {
  local n
  for n in $(known_nodes); do
    if node_pid "$n" >/dev/null; then echo "$n"; fi
  done
}

# -- ports ----------------------------------------------------------------------

# True when something accepts connections on the port.
port_busy() {
  (exec 3<>"/dev/tcp/$CLUSTER_HOST/$1") 2>/dev/null
}

# A port above CLUSTER_HTTP_PORT that nothing listens on, no node of this
# cluster was given (a frozen or stopped node keeps its claim) and no node
# failed to bind before (an outgoing connection's local port looks free to
# port_busy but cannot be bound while that connection lasts).
pick_http_port() {
  local p=$((CLUSTER_HTTP_PORT + 1)) taken
  taken=$(cat "$NODES"/*.http "$NODES"/*.bad_ports 2>/dev/null || true)
  while ((p < 65535)); do
    if ! grep -qx "$p" <<<"$taken" && ! port_busy "$p"; then
      echo "$p"
      return 0
    fi
    p=$((p + 1))
  done
  die "no free port above $CLUSTER_HTTP_PORT"
}

# -- talking to the head -----------------------------------------------------------

ctl() { "$SHOALCTL" --endpoint "$ENDPOINT" "$@"; }

head_answers() { ctl --timeout-ms 300 ping >/dev/null 2>&1; }

# The state the head reports for NODE (up, suspect, draining, down), or
# nothing. shoalctl --json prints one compact object per reply.
node_state() {
  local json
  json=$(ctl --timeout-ms 500 --json status 2>/dev/null) || return 0
  grep -Eo "\"name\": *\"$1\", *\"role\": *\"[a-z]+\", *\"state\": *\"[a-z]+\"" \
    <<<"$json" | sed -E 's/.*"state": *"([a-z]+)"/\1/' | head -1
}

# Waits (bounded) until every named node is reported up by the head.
wait_up() {
  local deadline=$((SECONDS + CLUSTER_START_TIMEOUT)) n pending
  while :; do
    pending=()
    for n in "$@"; do
      if ! node_pid "$n" >/dev/null; then
        if relaunch_on_port_clash "$n"; then
          pending+=("$n")
          continue
        fi
        echo "cluster.sh: $n exited while starting; its log:" >&2
        tail -n 30 "$NODES/$n.log" >&2 || true
        return 1
      fi
      if [[ $n == head ]]; then
        head_answers || pending+=("$n")
      elif [[ $(node_state "$n") != up ]]; then
        pending+=("$n")
      fi
    done
    ((${#pending[@]} == 0)) && return 0
    if ((SECONDS >= deadline)); then
      echo "cluster.sh: not up after ${CLUSTER_START_TIMEOUT}s: ${pending[*]}" >&2
      echo "(logs: cluster.sh logs NODE, in $NODES)" >&2
      return 1
    fi
    sleep 0.1
  done
}

# -- starting nodes ---------------------------------------------------------------

# Starts NODE from what its files say (role, http port, labels) in its own
# session, so that the terminal's ^C and hangup do not reach it.
launch() {
  local name=$1 role http labels args
  role=$(<"$NODES/$name.role")
  http=$(<"$NODES/$name.http")
  labels=$(cat "$NODES/$name.labels" 2>/dev/null || true)
  mkdir -p "$NODES/$name.cache"
  # The secret goes by file: a command line is readable by every user.
  args=(--set "node.name=$name"
    --set "http.listen=$CLUSTER_HOST:$http"
    --set "cluster.secret_file=$CLUSTER_DIR/secret"
    --set "models.root=$CLUSTER_MODELS"
    --set "models.cache_dir=$NODES/$name.cache")
  if [[ $role == head ]]; then
    args=(--role head --set "cluster.listen=$LINK"
      --set "gateway.endpoint=$ENDPOINT" "${args[@]}")
  else
    args=(--role worker --join "$LINK" "${args[@]}")
    [[ -n $labels ]] && args+=(--set "node.labels=$labels")
  fi
  # shellcheck disable=SC2206 # CLUSTER_ARGS is meant to be word-split
  local extra=($CLUSTER_ARGS)
  [[ -x $SHOALD ]] || die "no shoald at $SHOALD (build it, or set SHOALD)"
  echo "--- $(date '+%F %T') starting $name ($role)" >>"$NODES/$name.log"
  setsid "$SHOALD" "${args[@]}" "${extra[@]}" </dev/null \
    >>"$NODES/$name.log" 2>&1 &
  echo $! >"$NODES/$name.pid"
}

# A worker's HTTP port was free when picked but taken before the node bound
# it: the port range above CLUSTER_HTTP_PORT is usually the kernel's
# ephemeral range, where every outgoing connection takes a local port. Such a
# worker gets the next free port and starts again, a few times at most.
relaunch_on_port_clash() {
  local name=$1 tries_file="$NODES/$1.port_retries" tries=0
  [[ $(<"$NODES/$name.role") == worker ]] || return 1
  tail -n 3 "$NODES/$name.log" | grep -q "for HTTP: Address already in use" ||
    return 1
  [[ -e $tries_file ]] && tries=$(<"$tries_file")
  ((tries < 5)) || return 1
  echo $((tries + 1)) >"$tries_file"
  echo "cluster.sh: $name lost its HTTP port to another socket; trying another" >&2
  # pick_http_port skips the ports recorded for nodes and those that failed.
  cat "$NODES/$name.http" >>"$NODES/$name.bad_ports"
  local port
  port=$(pick_http_port)
  echo "$port" >"$NODES/$name.http"
  launch "$name"
}

# Records a new worker (the next unused wN) and starts it; prints its name.
new_worker() {
  local labels=$1 i=1
  while [[ -e $NODES/w$i.role ]]; do i=$((i + 1)); done
  local name=w$i
  echo worker >"$NODES/$name.role"
  pick_http_port >"$NODES/$name.http"
  if [[ -n $labels ]]; then echo "$labels" >"$NODES/$name.labels"; fi
  launch "$name"
  echo "$name"
}

# -- commands -------------------------------------------------------------------------

cmd_up() {
  local n=${1:-}
  local labels=${2:-}
  [[ $n =~ ^[0-9]+$ ]] || die "up: expected a number of workers (cluster.sh up 3)"
  mkdir -p "$CLUSTER_DIR"
  if [[ -d $NODES ]]; then
    local live
    live=$(running_nodes | tr '\n' ' ')
    [[ -z $live ]] || die "a cluster is already running in $CLUSTER_DIR" \
      "(nodes: $live); run 'cluster.sh down' first"
    # Logs and caches of a previous run: gone, so names start at w1 again.
    rm -rf "$NODES"
  fi
  mkdir -p "$NODES"
  port_busy "$CLUSTER_PORT" && die "port $CLUSTER_PORT is taken (set CLUSTER_PORT)"
  port_busy "$CLUSTER_LINK_PORT" &&
    die "port $CLUSTER_LINK_PORT is taken (set CLUSTER_LINK_PORT)"
  port_busy "$CLUSTER_HTTP_PORT" &&
    die "port $CLUSTER_HTTP_PORT is taken (set CLUSTER_HTTP_PORT)"
  # The secret authenticates node-link messages: random per cluster, never
  # printed, readable by us alone.
  (
    umask 077
    od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$CLUSTER_DIR/secret"
  )
  cat >"$STATE" <<EOF
CLUSTER_PORT=$CLUSTER_PORT
CLUSTER_LINK_PORT=$CLUSTER_LINK_PORT
CLUSTER_HTTP_PORT=$CLUSTER_HTTP_PORT
CLUSTER_MODELS='$CLUSTER_MODELS'
EOF
  load_state
  echo head >"$NODES/head.role"
  echo "$CLUSTER_HTTP_PORT" >"$NODES/head.http"
  launch head
  local started=(head) i
  for ((i = 0; i < n; i++)); do started+=("$(new_worker "$labels")"); done
  if ! wait_up "${started[@]}"; then
    echo "cluster.sh: stopping what started" >&2
    cmd_down >&2 || true
    exit 1
  fi
  echo "cluster up: head + $n worker(s); client endpoint $ENDPOINT," \
    "metrics http://$CLUSTER_HOST:$CLUSTER_HTTP_PORT/metrics"
  ctl status
}

# Waits (bounded by $1 seconds) until none of the "name:pid" arguments after
# it runs; prints those still running.
wait_gone() {
  local deadline=$((SECONDS + $1)) n left
  shift
  while :; do
    left=()
    for n in "$@"; do
      node_pid "${n%%:*}" >/dev/null && left+=("$n")
    done
    if ((${#left[@]} == 0)) || ((SECONDS >= deadline)); then
      if ((${#left[@]} > 0)); then printf '%s\n' "${left[@]}"; fi
      return 0
    fi
    sleep 0.1
  done
}

cmd_down() {
  [[ -d $NODES ]] || {
    echo "no cluster in $CLUSTER_DIR"
    return 0
  }
  local n pid pids=() left
  for n in $(running_nodes); do
    pid=$(node_pid "$n") || continue
    kill -TERM "$pid" 2>/dev/null || true
    # A frozen node cannot act on SIGTERM until it runs again.
    kill -CONT "$pid" 2>/dev/null || true
    pids+=("$n:$pid")
  done
  # A draining worker waits (up to runtime.drain_grace_ms) for its replicas
  # to be placed elsewhere, which cannot happen when every node is going:
  # after the bound, a second SIGTERM tells it to stop now.
  mapfile -t left < <(wait_gone "$CLUSTER_STOP_TIMEOUT" "${pids[@]}")
  if ((${#left[@]} > 0)); then
    for n in "${left[@]}"; do
      echo "cluster.sh: ${n%%:*} still draining after ${CLUSTER_STOP_TIMEOUT}s: SIGTERM again (stop now)"
      kill -TERM "${n##*:}" 2>/dev/null || true
    done
    mapfile -t left < <(wait_gone 5 "${left[@]}")
  fi
  for n in "${left[@]}"; do
    echo "cluster.sh: ${n%%:*} still running: SIGKILL"
    kill -KILL "${n##*:}" 2>/dev/null || true
  done
  ((${#left[@]} == 0)) || sleep 0.2
  rm -f "$NODES"/*.pid
  echo "cluster down (logs kept in $NODES)"
}

cmd_status() {
  load_state
  local t=(--timeout-ms "${CLUSTER_CTL_TIMEOUT_MS:-2000}")
  if [[ ${1:-} == --json ]]; then
    ctl "${t[@]}" --json status
  else
    ctl "${t[@]}" status
  fi
}

cmd_add() {
  load_state
  head_answers || die "the head does not answer on $ENDPOINT"
  local name
  name=$(new_worker "${1:-}")
  wait_up "$name" || exit 1
  echo "$name up"
}

cmd_start() {
  load_state
  local name=$1
  [[ -e $NODES/$name.role ]] || die "unknown node '$name' (see: cluster.sh ps)"
  if node_pid "$name" >/dev/null; then die "$name is already running"; fi
  launch "$name"
  if [[ $name != head ]]; then
    head_answers || {
      echo "$name started (the head is not answering, so not waiting)"
      return 0
    }
  fi
  wait_up "$name" || exit 1
  echo "$name up"
}

# kill/freeze/thaw/preempt: one signal to one node by name.
cmd_signal() {
  local sig=$1 name=$2 pid
  valid_name "$name"
  [[ -d $NODES ]] || die "no cluster in $CLUSTER_DIR"
  pid=$(node_pid "$name") || die "$name is not running (see: cluster.sh ps)"
  kill -"$sig" "$pid"
  echo "$name (pid $pid): SIG$sig"
}

cmd_logs() {
  local name=$1
  valid_name "$name"
  [[ -f $NODES/$name.log ]] || die "no log for '$name' in $NODES"
  if [[ ${2:-} == -f ]]; then
    tail -n 50 -f "$NODES/$name.log"
  else
    cat "$NODES/$name.log"
  fi
}

cmd_ps() {
  [[ -d $NODES ]] || die "no cluster in $CLUSTER_DIR"
  local n pid st
  printf '%-8s %-7s %-8s %-6s %s\n' NAME ROLE PID HTTP STATE
  for n in $(known_nodes); do
    if pid=$(node_pid "$n"); then
      st=running
      [[ $(awk '{print $3}' /proc/"$pid"/stat) == T ]] && st=frozen
    else
      pid=-
      st=stopped
    fi
    printf '%-8s %-7s %-8s %-6s %s\n' "$n" "$(<"$NODES/$n.role")" "$pid" \
      "$(<"$NODES/$n.http")" "$st"
  done
}

need_node() { [[ -n ${1:-} ]] || die "$2: which node? (e.g. cluster.sh $2 w1)"; }

case ${1:-} in
up) cmd_up "${2:-}" "${3:-}" ;;
down) cmd_down ;;
status) cmd_status "${2:-}" ;;
add) cmd_add "${2:-}" ;;
start)
  need_node "${2:-}" start
  valid_name "$2"
  cmd_start "$2"
  ;;
kill)
  need_node "${2:-}" kill
  cmd_signal KILL "$2"
  ;;
freeze)
  need_node "${2:-}" freeze
  cmd_signal STOP "$2"
  ;;
thaw)
  need_node "${2:-}" thaw
  cmd_signal CONT "$2"
  ;;
preempt)
  need_node "${2:-}" preempt
  cmd_signal TERM "$2"
  ;;
logs)
  need_node "${2:-}" logs
  cmd_logs "$2" "${3:-}"
  ;;
ps) cmd_ps ;;
endpoint)
  load_state
  echo "$ENDPOINT"
  ;;
"" | -h | --help | help) usage ;;
*)
  usage >&2
  exit 2
  ;;
esac
