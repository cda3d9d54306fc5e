#!/usr/bin/env bash
# The agent's memory, each line beside the idle baseline of the same run:
# anonymous RSS (RssAnon, less the simulated GPU's shard bytes when they
# are anonymous memory of the agent's, not a shared memfd) idle with no shards after 200 scrapes of /metrics,
# its peak while 16 clients verify a 4 MiB shard for MEM_LOAD_SECONDS
# (default 20), and after MEM_IDLE_SECONDS (default 60) idle. Total RSS
# (VmRSS) beside it, for comparison with other exporters.
# Goals: idle ≤ 8 MB, peak ≤ 64 MB, after the idle minute within 2× idle.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${VRAMSEAL_AGENT_BIN:-bin/vramseal-agent}
[ -x "$bin" ] || { echo "40-memory: $bin missing (make build)"; exit 1; }
load_s=${MEM_LOAD_SECONDS:-20}
idle_s=${MEM_IDLE_SECONDS:-60}
shard_bytes=$((4 << 20))

work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/models"
head -c 48 /dev/urandom > "$work/seal.key" && chmod 600 "$work/seal.key"
head -c "$shard_bytes" /dev/urandom > "$work/models/shard.bin"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sock="$work/agent.sock"
cat > "$work/agent.yml" <<EOF
worker_id: bench
device: sim
sim: {gpus: 1, memory_bytes: 67108864}
policy: {min_memory_bytes: 1048576}
seal_secret_file: $work/seal.key
model_dirs: [$work/models]
audit: {spool_dir: $work/spool}
verify: {interval: 1h}
EOF
OTEL_LOGS_EXPORTER=none OTEL_TRACES_EXPORTER=none "$bin" run --config.file "$work/agent.yml" \
  --control.socket "$sock" --web.listen-address "127.0.0.1:$port" --log.level warn > "$work/agent.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/readyz" > /dev/null 2>&1 && break
  sleep 0.1
done

# kB of a /proc/PID/status line.
status_kb() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$pid/status"; }

for _ in $(seq 200); do curl -fs "http://127.0.0.1:$port/metrics" > /dev/null; done
sleep 1
idle_anon=$(status_kb RssAnon)
idle_rss=$(status_kb VmRSS)
idle_shmem=$(status_kb RssShmem)

"$bin" seal "$work/models/shard.bin" --id shard --control.socket "$sock" > /dev/null
# Where the simulated VRAM lives: shared memory (a memfd) or the heap.
shard_kb=$((shard_bytes / 1024)) anon_shard=$shard_bytes where="anonymous memory"
if [ $(($(status_kb RssShmem) - idle_shmem)) -ge $((shard_kb * 9 / 10)) ]; then
  anon_shard=0 where="shared memory, not in RssAnon"
fi
touch "$work/go"
for _ in $(seq 16); do
  ( while [ -e "$work/go" ]; do "$bin" verify shard --control.socket "$sock" > /dev/null || echo fail >> "$work/failures"; done ) &
done
peak_anon=0 peak_rss=0 verifies_before=$(curl -fs "http://127.0.0.1:$port/metrics" | awk '/^vramseal_verifications_total.*result="ok"/ {s += $2} END {print s + 0}')
end=$((SECONDS + load_s))
while [ $SECONDS -lt $end ]; do
  a=$(status_kb RssAnon) r=$(status_kb VmRSS)
  [ "$a" -gt "$peak_anon" ] && peak_anon=$a
  [ "$r" -gt "$peak_rss" ] && peak_rss=$r
  sleep 0.05
done
rm -f "$work/go"
wait $(jobs -p | grep -v "^$pid$") 2>/dev/null || true
verifies=$(curl -fs "http://127.0.0.1:$port/metrics" | awk '/^vramseal_verifications_total.*result="ok"/ {s += $2} END {print s + 0}')
failures=$( { cat "$work/failures" 2>/dev/null || true; } | wc -l)

sleep "$idle_s"
after_anon=$(status_kb RssAnon)
after_rss=$(status_kb VmRSS)

mb() { awk -v k="$1" -v s="${2:-0}" 'BEGIN {printf "%.1f", (k * 1024 - s) / 1e6}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
anon_kb=$((anon_shard / 1024))
echo "== agent memory (simulated GPU, whose $((shard_bytes >> 20)) MiB shard is in $where: RssAnon less it; $(nproc) cores)"
printf '%-52s %12s %8s %15s\n' "what" "RssAnon MB" "× idle" "VmRSS−shard MB"
printf '%-52s %12s %8s %15s\n' "idle, no shards, after 200 scrapes (baseline)" "$(mb "$idle_anon")" "1.00" "$(mb "$idle_rss")"
printf '%-52s %12s %8s %15s\n' "peak, 16 clients verifying a 4 MiB shard, ${load_s}s" "$(mb "$peak_anon" $anon_shard)" "$(ratio $((peak_anon - anon_kb)) "$idle_anon")" "$(mb "$peak_rss" $shard_bytes)"
printf '%-52s %12s %8s %15s\n' "after ${idle_s}s idle" "$(mb "$after_anon" $anon_shard)" "$(ratio $((after_anon - anon_kb)) "$idle_anon")" "$(mb "$after_rss" $shard_bytes)"
echo "($((verifies - verifies_before)) verifications during the load, $failures failed calls)"
echo "goals: idle ≤ 8 MB; peak ≤ 64 MB; after the idle minute within 2× idle"
