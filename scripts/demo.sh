#!/usr/bin/env bash
# The vramseal demo (`make run`): runs bin/vramseal-agent on two simulated
# GPUs with a demo configuration, a seal secret and sample shards in a
# temporary folder, and walks through seal, list, verify, corrupt, verify and
# release with the CLI, showing the audit events each step emits. Then the
# agent keeps serving (landing page and /metrics on DEMO_ADDR) for you to try
# the CLI against, until Ctrl-C: it is stopped with SIGTERM and its audit
# spool checked offline. Builds nothing itself (`make run` builds first).
#
# Environment: BIN (default bin/vramseal-agent); DEMO_ADDR, the web address
# (default 127.0.0.1:9477; 127.0.0.1:0 picks a free port); DEMO_EXIT=1 stops
# the agent right after the story and exits (unattended, well under a minute:
# tests use it); KEEP=1 keeps the folder.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-bin/vramseal-agent}
DEMO_ADDR=${DEMO_ADDR:-127.0.0.1:9477}
DEMO_EXIT=${DEMO_EXIT:-0}
if [[ ! -x $BIN ]]; then
	echo "demo: $BIN is missing: run 'make run' (it builds the agent first)" >&2
	exit 1
fi
SHOW_BIN=$BIN # as the commands to try name it
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

DEMO=$(mktemp -d "${TMPDIR:-/tmp}/vramseal-demo.XXXXXX")
SOCK=$DEMO/run/agent.sock
LOG=$DEMO/agent.log
AGENT_PID=
SHOWN=0

if [[ -t 1 ]]; then
	bold() { printf '\n\033[1m%s\033[0m\n' "$*"; }
else
	bold() { printf '\n== %s\n' "$*"; }
fi

cleanup() {
	if [[ -n $AGENT_PID ]] && kill -0 "$AGENT_PID" 2>/dev/null; then
		kill -TERM "$AGENT_PID" 2>/dev/null || true
		wait "$AGENT_PID" 2>/dev/null || true
	fi
	if [[ ${KEEP:-0} == 1 ]]; then
		echo "demo files kept in $DEMO"
	else
		rm -rf "$DEMO"
	fi
}
trap cleanup EXIT

# events prints the audit events logged since the last call, trimmed.
events() {
	local total
	total=$(wc -l <"$LOG")
	tail -n +"$((SHOWN + 1))" "$LOG" | head -n "$((total - SHOWN))" |
		grep -E 'msg="audit event"|msg="sealing shard"|level=(warning|error)' |
		sed -E -e 's/^time="[^"]*" //' -e 's/ (event_id|worker_id|seal_signature|content_sha256|event_severity|component)=("[^"]*"|[^ ]*)//g' \
			-e 's/^/    /' || true
	SHOWN=$total
}

# cli shows a command, runs it against the demo agent and its events.
cli() {
	local rc=0
	printf '\n  $ vramseal-agent %s\n' "$*"
	"$BIN" "$@" --control.socket "$SOCK" 2>&1 | sed 's/^/    /' || rc=${PIPESTATUS[0]}
	[[ $rc == 0 ]] || printf '    (exit status %d)\n' "$rc"
	sleep 0.2
	events
	return 0
}

bold "1. A demo folder with a seal secret, sample shards and a configuration: $DEMO"
mkdir -p "$DEMO/models/llama"
head -c 48 /dev/urandom >"$DEMO/seal.key"
chmod 600 "$DEMO/seal.key"
for i in 1 2; do
	head -c 24000000 /dev/urandom >"$DEMO/models/llama/model-0000$i-of-00002.safetensors"
done
head -c 80000000 /dev/urandom >"$DEMO/models/extra.safetensors"
cat >"$DEMO/agent.yml" <<YAML
worker_id: demo-node
device: sim                       # two simulated GPUs: never on a real node
sim: {gpus: 2, memory_bytes: 1073741824}
seal_secret_file: $DEMO/seal.key
model_dirs: [$DEMO/models]
verify: {interval: 3s, jitter: 0.1}
audit: {spool_dir: $DEMO/audit}
handoff: {socket: $DEMO/run/handoff.sock}   # engines open sealed shards here (docs/consumers.md)
shards:
  - {id: llama-00001, path: models/llama/model-00001-of-00002.safetensors, gpu: 0, model_ref: "demo/llama@1"}
  - {id: llama-00002, path: models/llama/model-00002-of-00002.safetensors, gpu: 1, model_ref: "demo/llama@1"}
YAML
sed 's/^/    /' "$DEMO/agent.yml"

# Audit records go to the durable spool under $DEMO/audit and, when an OTel
# Collector is given with OTEL_EXPORTER_OTLP_ENDPOINT, are shipped to it.
if [[ -z ${OTEL_EXPORTER_OTLP_ENDPOINT:-}${OTEL_EXPORTER_OTLP_LOGS_ENDPOINT:-} ]]; then
	export OTEL_LOGS_EXPORTER=${OTEL_LOGS_EXPORTER:-none} OTEL_TRACES_EXPORTER=${OTEL_TRACES_EXPORTER:-none}
fi

bold "2. Start the agent; it seals the two declared shards"
echo "    (audit records: durable spool in $DEMO/audit; OTLP export: ${OTEL_EXPORTER_OTLP_ENDPOINT:-off, set OTEL_EXPORTER_OTLP_ENDPOINT to ship them})"
printf '  $ vramseal-agent run --config.file %s --control.socket %s --web.listen-address %s\n' "$DEMO/agent.yml" "$SOCK" "$DEMO_ADDR"
# Its own process group (job control on for this one start), so that Ctrl-C
# at the end reaches only this script, which stops the agent with SIGTERM.
set -m
"$BIN" run --config.file "$DEMO/agent.yml" --control.socket "$SOCK" --web.listen-address "$DEMO_ADDR" >"$LOG" 2>&1 &
AGENT_PID=$!
set +m
ready=0
for _ in $(seq 20); do
	kill -0 "$AGENT_PID" 2>/dev/null || break
	if "$BIN" status --control.socket "$SOCK" --wait 1s >/dev/null 2>&1; then
		ready=1
		break
	fi
done
if [[ $ready != 1 ]]; then
	echo "demo: the agent did not become ready; its log:" >&2
	cat "$LOG" >&2
	if grep -q 'address already in use' "$LOG"; then
		echo "demo: $DEMO_ADDR is taken (another agent?): run with DEMO_ADDR=127.0.0.1:0 for a free port" >&2
	fi
	exit 1
fi
ADDR=$(sed -nE 's/.*msg="Listening on" address="?([^" ]+)"?.*/\1/p' "$LOG" | head -n 1)
events
echo "    web: http://$ADDR/ (status page), /metrics, /healthz, /readyz"
cli status

bold "3. List the sealed shards"
cli list

bold "4. Seal another file through the control API, pinning its published SHA-256"
printf '\n  $ vramseal-agent digest %s   # offline: what a seal records\n' "$DEMO/models/extra.safetensors"
"$BIN" digest "$DEMO/models/extra.safetensors" | sed 's/^/    /'
if command -v sha256sum >/dev/null; then
	echo "    (sha256sum says $(sha256sum "$DEMO/models/extra.safetensors" | cut -c1-64))"
fi
SHA=$("$BIN" digest "$DEMO/models/extra.safetensors" -o json | sed -nE 's/.*"content_sha256": "([0-9a-f]+)".*/\1/p')
cli seal "$DEMO/models/extra.safetensors" --id extra --gpu 1 --sha256 "$SHA" --model-ref demo/extra@1

bold "5. Refusals: a file outside model_dirs, and a file whose SHA-256 is not the pinned one"
cli seal /etc/hostname --id outside
cli seal "$DEMO/models/llama/model-00001-of-00002.safetensors" --id pinned --sha256 "$SHA"

bold "6. Open a shard as an inference engine does: its own memory, no copy, checked against the seal"
printf '\n  $ vramseal-agent open llama-00002 --handoff.socket %s\n' "$DEMO/run/handoff.sock"
"$BIN" open llama-00002 --handoff.socket "$DEMO/run/handoff.sock" 2>&1 | sed 's/^/    /'
events

bold "7. Verify every shard now"
cli verify --all

bold "8. Flip one bit of llama-00001 in simulated VRAM, then verify it"
cli debug corrupt llama-00001 --offset 5000000
cli verify llama-00001

bold "9. The schedule re-verifies on its own (every 3s here) and reports the failure again"
sleep 3.5
events
cli list

bold "10. Release a shard"
cli release extra

bold "11. A few of the series /metrics serves (docs/metrics.md lists them all)"
printf '  $ curl -s http://%s/metrics | grep -E ...\n' "$ADDR"
if exec 3<>"/dev/tcp/${ADDR%:*}/${ADDR##*:}" 2>/dev/null; then
	printf 'GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n' "$ADDR" >&3
	grep -E '^vramseal_(agent_info|sealed_shards|shard_verified|verifications_total\{.*result="(ok|digest_mismatch)"|verification_overdue_shards|policy_compliant)' <&3 | sed 's/^/    /' || true
	exec 3<&-
fi

# Unless DEMO_EXIT=1, the agent keeps serving until Ctrl-C.
rc=
if [[ $DEMO_EXIT != 1 ]]; then
	bold "The agent keeps running on two simulated GPUs: try it (Ctrl-C stops it)"
	cat <<EOF
    status page:  http://$ADDR/
    metrics:      http://$ADDR/metrics   (also /healthz, /readyz)

  In another terminal, from this folder:
    $SHOW_BIN status --control.socket $SOCK
    $SHOW_BIN list --control.socket $SOCK
    $SHOW_BIN verify --all --control.socket $SOCK   # exit 1: llama-00001 stays corrupted
    $SHOW_BIN seal $DEMO/models/extra.safetensors --id extra --gpu 1 --control.socket $SOCK
    $SHOW_BIN open llama-00002 --handoff.socket $DEMO/run/handoff.sock   # as an engine: exit 0 while intact
    $SHOW_BIN debug corrupt llama-00002 --offset 0 --control.socket $SOCK
    $SHOW_BIN audit show --spool.dir $DEMO/audit --severity CRITICAL
    curl -s http://$ADDR/metrics | grep '^vramseal_shard'

  The schedule re-verifies every 3s; the agent logs to $LOG.
  Press Ctrl-C to stop the agent (SIGTERM) and check its audit spool.
EOF
	stopped=0
	trap 'stopped=1' INT TERM
	# wait returns when the agent exits, or early when Ctrl-C is trapped.
	if wait "$AGENT_PID"; then rc=0; else rc=$?; fi
	[[ $stopped == 1 ]] && rc=
	trap - INT TERM
	echo
	# What the agent logged meanwhile stays in its log, not on the screen.
	SHOWN=$(wc -l <"$LOG")
fi

bold "12. Stop the agent (SIGTERM): the schedule stops, every shard is released, exit 0"
if [[ -z $rc ]]; then
	kill -TERM "$AGENT_PID" 2>/dev/null || true
	rc=0
	wait "$AGENT_PID" || rc=$?
else
	echo "    the agent stopped on its own"
fi
AGENT_PID=
events
if [[ $rc != 0 ]]; then
	echo "demo: the agent exited with status $rc; its log:" >&2
	cat "$LOG" >&2
	exit 1
fi
echo "    agent exited with status 0"

bold "13. The audit spool is a hash chain with HMAC checkpoints: check it offline"
printf '\n  $ vramseal-agent audit verify --spool.dir %s --seal.secret-file %s\n' "$DEMO/audit" "$DEMO/seal.key"
"$BIN" audit verify --spool.dir "$DEMO/audit" --seal.secret-file "$DEMO/seal.key" 2>&1 | sed 's/^/    /'
bold "Done. Try the same commands on your own files: see README.md and docs/config.md."
