#!/usr/bin/env bash
# The consumer hand-off: a consumer making a shard ready (open on the
# consumer socket, map, read every page) beside reading the same file from
# the page cache, and what list and a /metrics scrape cost with 0, 64 and
# 512 open leases; all in the same run. BENCH_HANDOFF_BYTES sets the
# shard size (default 1 GiB).
set -euo pipefail
cd "$(dirname "$0")/../.."
bytes=${BENCH_HANDOFF_BYTES:-1073741824}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
VRAMSEAL_BENCH_HANDOFF_BYTES=$bytes go test -run '^$' -bench '^Benchmark(ShardReady|Leases)$' -benchtime 5x -count 3 ./internal/handoff > "$out"
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ns() { grep -E "^Benchmark$1-[0-9]+ " "$out" | awk '{print $3}' | median; }
echo "== hand-off: a $((bytes >> 20)) MiB shard ready in a consumer (median of 3 runs of 5)"
printf '%-48s %10s %8s\n' "what" "ms" "× floor"
floor=$(ns 'ShardReady/page-cache-read')
for c in page-cache-read page-cache-readfile consumer-open-map-touch; do
	v=$(ns "ShardReady/$c")
	printf '%-48s %10.2f %8.2f\n' "$c" "$(awk -v v="$v" 'BEGIN {print v/1e6}')" "$(awk -v v="$v" -v f="$floor" 'BEGIN {print v/f}')"
done
echo "== list and /metrics with open leases on one shard (median, µs)"
printf '%-12s %10s %10s\n' "leases" "list" "/metrics"
for n in 0 64 512; do
	printf '%-12s %10.1f %10.1f\n' "$n" "$(awk -v v="$(ns "Leases/list/leases=$n")" 'BEGIN {print v/1e3}')" "$(awk -v v="$(ns "Leases/metrics/leases=$n")" 'BEGIN {print v/1e3}')"
done
