#!/usr/bin/env bash
# cluster.sh (`make cluster`): thaw's production topology on one machine, on
# loopback, in the foreground:
#
#   Redis                  127.0.0.1:$CLUSTER_REDIS_PORT (default 6390)
#   nomad agent -dev       127.0.0.1:$CLUSTER_NOMAD_PORT (default 4646, RPC
#                          and serf on the next two), with the fake GPU plugin
#                          advertising $CLUSTER_GPUS (default 4 x "NVIDIA H100
#                          80GB HBM3", 2 x "NVIDIA A100-SXM4-80GB")
#   two thaw server replicas --engine sim, --store nomad:
#                          replica 1 on $CLUSTER_ADDR (default 127.0.0.1:8080),
#                          xDS on 127.0.0.1:$CLUSTER_XDS_PORT (default 18000),
#                          metrics on 127.0.0.1:$CLUSTER_METRICS_PORT (9464);
#                          replica 2 on $CLUSTER_ADDR2 (default 127.0.0.1:8081),
#                          xDS on 127.0.0.1:$CLUSTER_XDS_PORT2 (default 18001),
#                          metrics on 127.0.0.1:$CLUSTER_METRICS_PORT2 (9465).
#                          One leads (Nomad's Variables lock) and runs the
#                          fleet: deployments become Nomad jobs running
#                          `thaw sim` on raw_exec, asking for the fake GPUs.
#                          Both serve the deploy API, /authz and Envoy's
#                          configuration (xDS), from the deployments in
#                          Nomad Variables and the endpoints in Redis
#   two thaw activators    127.0.0.1:$CLUSTER_ACTIVATOR_PORTS (default 8091,8092)
#   Envoy                  $CLUSTER_EDGE (default 127.0.0.1:10000), admin on
#                          127.0.0.1:$CLUSTER_ENVOY_ADMIN_PORT (default 9901):
#                          the deploy API and inference through Envoy's port,
#                          balanced over both replicas, xDS from either
#
# Each replica is announced as "cluster: replica N pid P api http://ADDR xds
# ADDR" and its log lines are prefixed "[replica N] ". Its command line is in
# $CLUSTER_DIR/replica-N.cmd, one argument per line, to restart it as it was.
# When a replica dies the script says so and goes on (the test bed for
# failover); it stops when Nomad, Redis, Envoy or both replicas are gone.
#
# User dev's token is $THAW_DEV_TOKEN, generated and printed when unset; the
# users file is $CLUSTER_DIR/thaw/users (default .cluster/thaw/users), which
# both replicas and the activators read. Each replica keeps its usage ledger
# in $CLUSTER_DIR/replica-N. Deployments live in Nomad Variables: Nomad and
# Redis start empty each time. Ctrl-C stops everything: thaw, then every
# thaw job (purged, so no allocation outlives the agent), the agent, Redis;
# any process left in the agent's data dir is killed and reported.
#
# Needs bin/thaw (make build; THAW_BIN overrides it) and what `make deps`
# installs. Extra arguments go to both thaw server replicas (e.g.
# --idle-timeout 1m).
set -euo pipefail

SCRIPT=cluster
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NOMAD="$ROOT/bin/nomad"
THAW=${THAW_BIN:-$ROOT/bin/thaw}
REDIS="$ROOT/bin/redis-server"
PLUGIN="$ROOT/bin/plugins/thaw-fakegpu"
REDIS_PORT=${CLUSTER_REDIS_PORT:-6390}
NOMAD_PORT=${CLUSTER_NOMAD_PORT:-4646}
ADDRS=("${CLUSTER_ADDR:-127.0.0.1:8080}" "${CLUSTER_ADDR2:-127.0.0.1:8081}")
XDS_PORTS=("${CLUSTER_XDS_PORT:-18000}" "${CLUSTER_XDS_PORT2:-18001}")
METRICS_PORTS=("${CLUSTER_METRICS_PORT:-9464}" "${CLUSTER_METRICS_PORT2:-9465}")
GPUS=${CLUSTER_GPUS:-NVIDIA H100 80GB HBM3:4,NVIDIA A100-SXM4-80GB:2}
STATE=${CLUSTER_DIR:-$ROOT/.cluster}
ENVOY="$ROOT/bin/envoy"
EDGE=${CLUSTER_EDGE:-127.0.0.1:10000}
ENVOY_ADMIN_PORT=${CLUSTER_ENVOY_ADMIN_PORT:-9901}
IFS=, read -ra ACT_PORTS <<<"${CLUSTER_ACTIVATOR_PORTS:-8091,8092}"
export NOMAD_ADDR="http://127.0.0.1:$NOMAD_PORT"
export NOMAD_CLI_SHOW_HINTS=0

say() { printf 'cluster: %s\n' "$*"; }
# Until cleanup's trap takes over: a failure says where (a CI run once saw
# this script exit 1 before printing anything).
trap 'say "failed (status $?) at line $LINENO: $BASH_COMMAND" >&2' ERR
trap 'rc=$?; [ "$rc" -eq 0 ] || say "exiting with status $rc before the cluster started" >&2' EXIT
say "starting (state: ${CLUSTER_DIR:-$ROOT/.cluster})"

for f in "$NOMAD" "$PLUGIN" "$REDIS" "$ENVOY"; do
	[ -x "$f" ] || die "$f missing: run make deps"
done
[ -x "$THAW" ] || die "$THAW missing: run make build"
command -v curl >/dev/null || die "curl is required"
busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$REDIS_PORT" "$NOMAD_PORT" "$((NOMAD_PORT + 1))" "$((NOMAD_PORT + 2))" "${ADDRS[0]##*:}" "${ADDRS[1]##*:}" \
	"${XDS_PORTS[@]}" "${METRICS_PORTS[@]}" "${EDGE##*:}" "$ENVOY_ADMIN_PORT" "${ACT_PORTS[@]}"; do
	busy "$p" && die "port $p on 127.0.0.1 is in use (see the CLUSTER_* variables)"
done

mkdir -p "$STATE/thaw" "$STATE/replica-1" "$STATE/replica-2"
STATE=$(cd "$STATE" && pwd) # absolute: the replica-N.cmd files are run from anywhere
TMP=$(mktemp -d "${TMPDIR:-/tmp}/thaw-cluster.XXXXXX")
REDIS_PID= AGENT_PID= ENVOY_PID=
REPLICA_PIDS=("" "") # "" once a replica has exited
ACT_PIDS=()

# stop_pid sends $2 to pid $1 and waits up to $3 seconds, then SIGKILLs it.
stop_pid() {
	local pid=$1 sig=$2 secs=$3 i
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
	kill "-$sig" "$pid" 2>/dev/null || true
	for ((i = 0; i < secs * 5; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.2
	done
	if kill -0 "$pid" 2>/dev/null; then
		say "pid $pid did not stop in ${secs}s; killing it"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

# stop_replicas stops both replicas at once: one after the other, the
# second would take the lock from the first and start leading, only to stop.
stop_replicas() {
	local p
	for p in "${REPLICA_PIDS[@]}"; do
		if [ -n "$p" ]; then kill -TERM "$p" 2>/dev/null || true; fi
	done
	for p in "${REPLICA_PIDS[@]}"; do stop_pid "$p" TERM 40; done
	REPLICA_PIDS=("" "")
}

cleanup() {
	local rc=$? i jobs left p
	trap - INT TERM EXIT
	say "stopping..."
	stop_pid "$ENVOY_PID" TERM 10
	for p in "${ACT_PIDS[@]}"; do stop_pid "$p" TERM 20; done
	stop_replicas
	if [ -n "$AGENT_PID" ] && kill -0 "$AGENT_PID" 2>/dev/null; then
		# thaw server leaves allocations running for its next start; here
		# nothing may outlive the agent, so purge thaw's jobs first.
		jobs=$(curl -fsS "$NOMAD_ADDR/v1/jobs?prefix=thaw-" 2>/dev/null | grep -o '"ID":"thaw-[^"]*"' | cut -d'"' -f4 || true)
		for j in $jobs; do
			"$NOMAD" job stop -purge -detach "$j" >/dev/null 2>&1 || true
		done
		for ((i = 0; i < 100; i++)); do
			curl -fsS "$NOMAD_ADDR/v1/allocations" 2>/dev/null | grep -q '"ClientStatus":"\(running\|pending\)"' || break
			sleep 0.2
		done
		stop_pid "$AGENT_PID" INT 30
	fi
	stop_pid "$REDIS_PID" TERM 10
	left=
	for p in /proc/[0-9]*; do
		case "$(readlink "$p/cwd" 2>/dev/null)" in "$TMP" | "$TMP"/*) ;; *) continue ;; esac
		# Nomad 1.10's agent does not stop its device plugins on exit.
		if [ "$(readlink "$p/exe" 2>/dev/null)" = "$PLUGIN" ]; then
			kill -KILL "${p#/proc/}" 2>/dev/null || true
			continue
		fi
		left="$left ${p#/proc/}"
	done
	if [ -n "$left" ]; then
		say "processes left in $TMP:$left - killing them"
		for p in $left; do kill -KILL "$p" 2>/dev/null || true; done
		rc=1
	fi
	# Nomad leaves the secrets/private tmpfs of recently stopped
	# allocations mounted; unmount them so the directory can go.
	{ grep -o " $TMP/[^ ]*" /proc/mounts 2>/dev/null || true; } | sort -r | while read -r m; do
		umount -l "$m" 2>/dev/null || sudo -n umount -l "$m" 2>/dev/null || true
	done
	if ! rm -rf "$TMP" 2>/dev/null; then
		say "could not remove $TMP (mounts left by Nomad?)"
		rc=1
	fi
	say "stopped; nothing left running"
	exit "$rc"
}
trap - ERR
trap cleanup EXIT
trap 'exit 130' INT TERM

TOKEN=${THAW_DEV_TOKEN:-}
generated=
if [ -z "$TOKEN" ]; then
	TOKEN="thaw_$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
	generated=1
fi
printf 'dev sha256:%s\n' "$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)" >"$STATE/thaw/users"
chmod 600 "$STATE/thaw/users"

mkdir -p "$TMP/redis"
# Redis and the agent get their own sessions: Ctrl-C reaches this script
# (and thaw), which then stops them in order.
(cd "$TMP" && exec setsid "$REDIS" --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
	--dir "$TMP/redis" >"$TMP/redis.log" 2>&1) &
REDIS_PID=$!

cat >"$TMP/agent.hcl" <<HCL
data_dir             = "$TMP/nomad"
plugin_dir           = "$ROOT/bin/plugins"
disable_update_check = true
ports {
  http = $NOMAD_PORT
  rpc  = $((NOMAD_PORT + 1))
  serf = $((NOMAD_PORT + 2))
}
client {
  options {
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean"
  }
}
plugin "thaw-fakegpu" {
  config {
    gpus = "$GPUS"
  }
}
HCL
# Started in $TMP: everything it starts (plugins, executors, tasks)
# inherits that working directory, which is how cleanup finds leftovers.
(cd "$TMP" && exec setsid "$NOMAD" agent -dev -bind 127.0.0.1 -network-interface lo \
	-config "$TMP/agent.hcl" >"$TMP/nomad.log" 2>&1) &
AGENT_PID=$!
say "nomad agent -dev on $NOMAD_ADDR (log: $TMP/nomad.log), GPUs: $GPUS"

ngpus=0
IFS=, read -ra specs <<<"$GPUS"
for s in "${specs[@]}"; do ngpus=$((ngpus + ${s##*:})); done
for ((i = 0; ; i++)); do
	kill -0 "$AGENT_PID" 2>/dev/null || die "nomad agent exited: $(tail -5 "$TMP/nomad.log")"
	nodes=$(curl -fsS "$NOMAD_ADDR/v1/nodes?resources=true" 2>/dev/null || true)
	if grep -q '"Status":"ready"' <<<"$nodes" &&
		[ "$(grep -o '"ID":"GPU-[^"]*"' <<<"$nodes" | sort -u | wc -l)" -ge "$ngpus" ]; then
		break
	fi
	[ "$i" -lt 300 ] || die "nomad node with $ngpus fake GPUs not ready in 60s (log: $TMP/nomad.log)"
	sleep 0.2
done
say "nomad node ready with $ngpus fake GPUs"
busy "$REDIS_PORT" || die "redis did not start: $(tail -5 "$TMP/redis.log")"

activators= replicas=
for p in "${ACT_PORTS[@]}"; do activators="${activators:+$activators,}127.0.0.1:$p"; done
for a in "${ADDRS[@]}"; do replicas="${replicas:+$replicas,}$a"; done

# start_replica N starts thaw server replica N (1 or 2) with its log lines
# prefixed, after writing its command line to $STATE/replica-N.cmd.
start_replica() {
	local n=$1 i=$(($1 - 1))
	local cmd=("$THAW" server --engine sim --store nomad --addr "${ADDRS[$i]}" --nomad-addr "$NOMAD_ADDR"
		--redis-addr "127.0.0.1:$REDIS_PORT" --data-dir "$STATE/replica-$n" --users-file "$STATE/thaw/users"
		--metrics-addr "127.0.0.1:${METRICS_PORTS[$i]}" --adopt-grace 10s
		--xds-addr "127.0.0.1:${XDS_PORTS[$i]}" --edge-addr "$EDGE" --envoy-admin "http://127.0.0.1:$ENVOY_ADMIN_PORT"
		--replicas "$replicas" --activators "$activators" "${EXTRA[@]}")
	printf '%s\n' "${cmd[@]}" >"$STATE/replica-$n.cmd"
	"${cmd[@]}" > >(sed -u "s/^/[replica $n] /") 2>&1 &
	REPLICA_PIDS[i]=$!
}
EXTRA=("$@")
start_replica 1
start_replica 2
for n in 1 2; do
	for ((i = 0; ; i++)); do
		kill -0 "${REPLICA_PIDS[n - 1]}" 2>/dev/null || die "thaw server replica $n exited"
		curl -fsS "http://${ADDRS[n - 1]}/healthz" >/dev/null 2>&1 && break
		[ "$i" -lt 150 ] || die "thaw server replica $n not healthy in 30s"
		sleep 0.2
	done
	say "replica $n pid ${REPLICA_PIDS[n - 1]} api http://${ADDRS[n - 1]} xds 127.0.0.1:${XDS_PORTS[n - 1]}"
done
for p in "${ACT_PORTS[@]}"; do
	# Each activator's metrics listener: its port + 100 (8191, 8192 by default).
	"$THAW" activator --addr "127.0.0.1:$p" --metrics-addr "127.0.0.1:$((p + 100))" --redis-addr "127.0.0.1:$REDIS_PORT" \
		--users-file "$STATE/thaw/users" >"$TMP/activator-$p.log" 2>&1 &
	ACT_PIDS+=($!)
done
"$THAW" envoy-bootstrap --xds-addr "127.0.0.1:${XDS_PORTS[0]},127.0.0.1:${XDS_PORTS[1]}" --admin "127.0.0.1:$ENVOY_ADMIN_PORT" >"$TMP/envoy.json"
(cd "$TMP" && exec "$ENVOY" -c "$TMP/envoy.json" --disable-hot-restart --log-level warn >"$TMP/envoy.log" 2>&1) &
ENVOY_PID=$!
for ((i = 0; ; i++)); do
	kill -0 "$ENVOY_PID" 2>/dev/null || die "envoy exited: $(tail -5 "$TMP/envoy.log")"
	ok=1
	for p in "${ACT_PORTS[@]}"; do curl -fsS "http://127.0.0.1:$p/healthz" >/dev/null 2>&1 || ok=; done
	[ -n "$ok" ] && curl -fsS "http://$EDGE/healthz" >/dev/null 2>&1 && break
	[ "$i" -lt 150 ] || die "envoy edge or activators not ready in 30s (logs in $TMP)"
	sleep 0.2
done
say "envoy edge on http://$EDGE (admin 127.0.0.1:$ENVOY_ADMIN_PORT), activators on ${ACT_PORTS[*]}"
if [ -n "$generated" ]; then
	say "token of user dev (new; set THAW_DEV_TOKEN to choose it): $TOKEN"
else
	say "token of user dev: \$THAW_DEV_TOKEN"
fi
say "ready: export THAW_ADDR=http://$EDGE THAW_TOKEN=$TOKEN   (thaw server itself: http://${ADDRS[0]})"
say "Nomad UI: $NOMAD_ADDR/ui   Ctrl-C stops everything"

# Watch: a replica's death is news, not the end; anything else's is.
while :; do
	watch=("$AGENT_PID" "$REDIS_PID" "$ENVOY_PID")
	for p in "${REPLICA_PIDS[@]}"; do
		if [ -n "$p" ]; then watch+=("$p"); fi
	done
	st=0 gone=
	wait -n -p gone "${watch[@]}" || st=$?
	case "$gone" in
	"$AGENT_PID") AGENT_PID= && die "nomad agent exited with status $st (log: $TMP/nomad.log)" ;;
	"$REDIS_PID") REDIS_PID= && die "redis exited with status $st (log: $TMP/redis.log)" ;;
	"$ENVOY_PID") ENVOY_PID= && die "envoy exited with status $st (log: $TMP/envoy.log)" ;;
	"") continue ;; # a signal's trap runs; nothing exited
	esac
	for i in 0 1; do
		[ "${REPLICA_PIDS[i]}" = "$gone" ] || continue
		REPLICA_PIDS[i]=
		say "replica $((i + 1)) (pid $gone) exited with status $st; the cluster goes on"
	done
	[ -n "${REPLICA_PIDS[0]}${REPLICA_PIDS[1]}" ] || die "both thaw server replicas exited"
done
