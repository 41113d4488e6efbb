#!/usr/bin/env bash
# nomad-smoke.sh: a manual check that bin/nomad and the fake GPU plugin
# (scripts/deps.sh builds both) let Nomad's real scheduler place and refuse
# GPU jobs on this machine, and that the jobs/ template's Nomad Variable
# lookup works. It starts a one-node `nomad agent -dev` on loopback with
# 4 x "NVIDIA H100 80GB HBM3" and 2 x "NVIDIA A100-SXM4-80GB", then:
#
#  1. registers a raw_exec job asking 3 instances x 2 H100s: checks that 2
#     allocations run (on distinct GPUs, NVIDIA_VISIBLE_DEVICES set) and that
#     the evaluation reports the third as a placement failure;
#  2. registers a job whose template reads a Nomad Variable the way jobs/
#     does: with the variable the token reaches the task's environment,
#     without it the task still starts.
#
# Everything it starts is stopped on exit. Exits non-zero on any failure.
#
# Environment: NOMAD_SMOKE_PORT (HTTP port, default 4646; RPC and serf use
# the next two), NOMAD_SMOKE_TIMEOUT (seconds per wait, default 60).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NOMAD="$ROOT/bin/nomad"
PORT=${NOMAD_SMOKE_PORT:-4646}
TIMEOUT=${NOMAD_SMOKE_TIMEOUT:-60}
export NOMAD_ADDR="http://127.0.0.1:$PORT"
export NOMAD_CLI_SHOW_HINTS=0 # no "View this job in the Web UI" lines
H100="NVIDIA H100 80GB HBM3"
A100="NVIDIA A100-SXM4-80GB"

say() { printf 'smoke: %s\n' "$*"; }
die() {
	printf 'smoke: FAIL: %s\n' "$*" >&2
	exit 1
}

for tool in curl jq; do
	command -v "$tool" >/dev/null || die "$tool is required"
done
[ -x "$NOMAD" ] || die "$NOMAD missing: run scripts/deps.sh"
[ -x "$ROOT/bin/plugins/thaw-fakegpu" ] || die "bin/plugins/thaw-fakegpu missing: run scripts/deps.sh"
if curl -s -o /dev/null "$NOMAD_ADDR/v1/agent/health"; then
	die "something already listens on 127.0.0.1:$PORT; set NOMAD_SMOKE_PORT"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/thaw-nomad-smoke.XXXXXX")
AGENT_PID=

cleanup() {
	local rc=$? i
	if [ -n "$AGENT_PID" ] && kill -0 "$AGENT_PID" 2>/dev/null; then
		# Stop the jobs first so their tasks are gone before the agent.
		for job in smoke-gpu smoke-var; do
			"$NOMAD" job stop -purge -detach "$job" >/dev/null 2>&1 || true
		done
		for i in $(seq 1 50); do
			[ "$(api /v1/allocations | jq '[.[] | select(.ClientStatus == "running")] | length' 2>/dev/null || echo 0)" = 0 ] && break
			sleep 0.2
		done
		kill -INT "$AGENT_PID" 2>/dev/null || true
		for i in $(seq 1 100); do
			kill -0 "$AGENT_PID" 2>/dev/null || break
			sleep 0.2
		done
		if kill -0 "$AGENT_PID" 2>/dev/null; then
			say "agent did not stop in 20s; killing it"
			kill -KILL "$AGENT_PID" 2>/dev/null || true
		fi
		wait "$AGENT_PID" 2>/dev/null || true
	fi
	# Anything still running from our data dir (executors, tasks) is ours.
	local left p
	left=$(pgrep -f "$TMP" || true)
	for p in /proc/[0-9]*; do
		case "$(readlink "$p/cwd" 2>/dev/null)" in "$TMP"/*) left="$left ${p#/proc/}" ;; esac
	done
	left=$(echo $left)
	if [ -n "$left" ]; then
		say "leftover processes: $left - killing them"
		for pid in $left; do kill -KILL "$pid" 2>/dev/null || true; done
		rc=1
	else
		say "agent stopped, no process left"
	fi
	rm -rf "$TMP" 2>/dev/null || true
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# api GETs a Nomad HTTP API path.
api() { curl -fsS "$NOMAD_ADDR$1"; }

# wait_for runs the jq filter $2 on GET $1 until it prints "true".
wait_for() {
	local path=$1 filter=$2 what=$3 deadline=$((SECONDS + TIMEOUT))
	while [ "$SECONDS" -lt "$deadline" ]; do
		if [ "$(api "$path" 2>/dev/null | jq -r "$filter" 2>/dev/null)" = true ]; then
			return 0
		fi
		sleep 0.5
	done
	die "timed out after ${TIMEOUT}s waiting for $what"
}

cat >"$TMP/agent.hcl" <<EOF
data_dir             = "$TMP/data"
plugin_dir           = "$ROOT/bin/plugins"
disable_update_check = true
ports {
  http = $PORT
  rpc  = $((PORT + 1))
  serf = $((PORT + 2))
}
client {
  options {
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean"
  }
}
plugin "thaw-fakegpu" {
  config {
    gpus = "$H100:4,$A100:2"
  }
}
EOF

say "starting $("$NOMAD" version | head -1) agent -dev on 127.0.0.1:$PORT (log: agent.log in $TMP)"
"$NOMAD" agent -dev -bind 127.0.0.1 -network-interface lo -config "$TMP/agent.hcl" \
	>"$TMP/agent.log" 2>&1 &
AGENT_PID=$!

wait_for /v1/nodes '(length == 1) and (.[0].Status == "ready")' "the node to be ready"
wait_for "/v1/nodes?resources=true" \
	'[.[0].NodeResources.Devices[]? | select(.Vendor == "nvidia" and .Type == "gpu")] | length == 2' \
	"the fake GPUs to be fingerprinted"
say "node ready; devices: $(api "/v1/nodes?resources=true" |
	jq -r '[.[0].NodeResources.Devices[] | "\(.Vendor)/\(.Type) \"\(.Name)\" x\(.Instances | length)"] | join(", ")')"

# ------------------------------------------------ 1: placement failure ----

cat >"$TMP/gpu.nomad.hcl" <<'EOF'
job "smoke-gpu" {
  type = "service"
  group "gpu" {
    count = 3
    update {
      max_parallel = 0
    }
    task "model" {
      driver = "raw_exec"
      config {
        command = "/bin/sh"
        args    = ["-c", "echo NVIDIA_VISIBLE_DEVICES=$NVIDIA_VISIBLE_DEVICES; exec sleep 300"]
      }
      resources {
        cpu    = 50
        memory = 32
        device "nvidia/gpu" {
          count = 2
          constraint {
            attribute = "${device.model}"
            value     = "NVIDIA H100 80GB HBM3"
          }
        }
      }
    }
  }
}
EOF
out=$("$NOMAD" job run -detach "$TMP/gpu.nomad.hcl" 2>&1) || die "nomad job run: $out"
say "registered smoke-gpu: 3 x 2 \"$H100\" on 4 of them"

wait_for /v1/job/smoke-gpu/allocations '[.[] | select(.ClientStatus == "running")] | length == 2' \
	"2 running allocations"
wait_for /v1/job/smoke-gpu/evaluations \
	'any(.[]; .FailedTGAllocs.gpu != null) and any(.[]; .Status == "blocked")' \
	"the placement failure and the blocked evaluation"
sleep 1 # would a third allocation sneak in?
running=$(api /v1/job/smoke-gpu/allocations | jq '[.[] | select(.ClientStatus == "running")] | length')
[ "$running" = 2 ] || die "$running allocations running, want 2"

# Each running allocation holds 2 distinct H100s; together 4 distinct ones.
ids=$(for a in $(api /v1/job/smoke-gpu/allocations | jq -r '.[] | select(.ClientStatus == "running") | .ID'); do
	api "/v1/allocation/$a" | jq -r '.AllocatedResources.Tasks.model.Devices[] | .DeviceIDs[]'
done | sort)
[ "$(echo "$ids" | sort -u | wc -l)" = 4 ] || die "allocated GPU IDs not 4 distinct: $ids"
say "2 allocations running on GPUs: $(echo "$ids" | tr '\n' ' ')"

a=$(api /v1/job/smoke-gpu/allocations | jq -r '[.[] | select(.ClientStatus == "running")][0].ID')
deadline=$((SECONDS + TIMEOUT))
until log=$(curl -fsS "$NOMAD_ADDR/v1/client/fs/logs/$a?task=model&type=stdout&plain=true" 2>/dev/null) &&
	[ -n "$log" ]; do
	[ "$SECONDS" -lt "$deadline" ] || die "no task output"
	sleep 0.5
done
case "$log" in
NVIDIA_VISIBLE_DEVICES=GPU-*,GPU-*) say "task saw: $log" ;;
*) die "task output: $log" ;;
esac

say "scale status: $(api /v1/job/smoke-gpu/scale |
	jq -c '.TaskGroups.gpu | {Desired, Placed, Running, Healthy, Unhealthy}')"
say "what Nomad said (FailedTGAllocs of the evaluation):"
# The registration's evaluation (the first one); it spawned the blocked one.
api /v1/job/smoke-gpu/evaluations | jq '[.[] | select(.FailedTGAllocs.gpu != null)] | sort_by(.CreateIndex)[0] |
	{EvalID: .ID, Status, BlockedEval, QueuedAllocations, FailedTGAllocs: .FailedTGAllocs.gpu |
	{NodesEvaluated, NodesFiltered, NodesExhausted, ClassExhausted, DimensionExhausted,
	 ConstraintFiltered, CoalescedFailures}}'
metrics=$(api /v1/job/smoke-gpu/evaluations | jq -c '[.[] | select(.FailedTGAllocs.gpu != null)][0].FailedTGAllocs.gpu')
[ "$(jq -r '.NodesExhausted' <<<"$metrics")" = 1 ] || die "NodesExhausted != 1: $metrics"
jq -e '.DimensionExhausted | keys | any(startswith("devices"))' <<<"$metrics" >/dev/null ||
	die "no devices dimension exhausted: $metrics"
"$NOMAD" job status smoke-gpu 2>/dev/null | sed -n '/Placement Failure/,/^$/p' | sed 's/^/smoke:   /'
say "OK: placement failure reported"

# --------------------------------------------- 2: Nomad Variable token ----

curl -fsS -X PUT "$NOMAD_ADDR/v1/var/thaw/deployments/smoke-with" \
	-d '{"Items": {"hf_token": "hf_smoke_dummy"}}' >/dev/null
tmpl() {
	# The jobs/ package's template (hfTokenTemplate), for a given path.
	printf '{{ if nomadVarExists "%s" }}{{ with nomadVar "%s" }}HF_TOKEN={{ .hf_token }}{{ end }}{{ end }}\n' "$1" "$1"
}
group() {
	jq -n --arg name "$1" --arg data "$(tmpl "thaw/deployments/$1")" '{
		Name: $name, Count: 1, Update: {MaxParallel: 0},
		Tasks: [{
			Name: "t", Driver: "raw_exec",
			Config: {command: "/bin/sh", args: ["-c", "echo HF_TOKEN has $(printf %s \"$HF_TOKEN\" | wc -c) chars; exec sleep 300"]},
			Templates: [{EmbeddedTmpl: $data, DestPath: "secrets/hf.env", Envvars: true, ChangeMode: "restart"}],
			Resources: {CPU: 50, MemoryMB: 32}
		}]}'
}
jq -n --argjson a "$(group smoke-with)" --argjson b "$(group smoke-none)" \
	'{Job: {ID: "smoke-var", Name: "smoke-var", Type: "service", Datacenters: ["*"], TaskGroups: [$a, $b]}}' |
	curl -fsS -X PUT "$NOMAD_ADDR/v1/jobs" -d @- >/dev/null
wait_for /v1/job/smoke-var/allocations '[.[] | select(.ClientStatus == "running")] | length == 2' \
	"both variable-template allocations to run"
for g in smoke-with smoke-none; do
	a=$(api /v1/job/smoke-var/allocations | jq -r --arg g "$g" '.[] | select(.TaskGroup == $g) | .ID')
	deadline=$((SECONDS + TIMEOUT))
	until log=$(curl -fsS "$NOMAD_ADDR/v1/client/fs/logs/$a?task=t&type=stdout&plain=true" 2>/dev/null) &&
		[ -n "$log" ]; do
		[ "$SECONDS" -lt "$deadline" ] || die "no output from $g"
		sleep 0.5
	done
	say "variable $g: task saw: $log"
done
[ "$log" = "HF_TOKEN has 0 chars" ] || die "without the variable, want an empty token"
a=$(api /v1/job/smoke-var/allocations | jq -r '.[] | select(.TaskGroup == "smoke-with") | .ID')
curl -fsS "$NOMAD_ADDR/v1/client/fs/logs/$a?task=t&type=stdout&plain=true" | grep -qx "HF_TOKEN has 14 chars" ||
	die "with the variable, want the 14-char token in the environment"
if api /v1/job/smoke-var | grep -q hf_smoke_dummy; then
	die "the token shows in the job"
fi
say "OK: token from the Nomad Variable reached the task env, not the job"
say "PASS"
