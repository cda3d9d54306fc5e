#!/usr/bin/env bash
# Audit spool: Emit throughput and latency, and CRITICAL time-to-durable,
# each beside a raw baseline of the same record size measured in the same run
# on the same disk (VRAMSEAL_BENCH_DIR, default: the temporary folder).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
go test -run '^$' -bench '^BenchmarkPipelineEmit$' -benchtime 200000x -count 3 ./audit/otel > "$out"
go test -run '^$' -bench '^Benchmark(Emit|RawAppend)$' -benchtime 200000x -count 3 ./audit/spool >> "$out"
go test -run '^$' -bench '^Benchmark(CriticalDurable|RawAppendFsync)$' -benchtime 2000x -count 3 ./audit/spool >> "$out"

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
# metric BENCH UNIT: the median over the runs of the value before UNIT.
metric() { grep -E "^$1-[0-9]+ " "$out" | awk -v u="$2" '{for (i=1;i<=NF;i++) if ($i==u) print $(i-1)}' | median; }

echo "== audit spool ($(nproc) cores; median of 3)"
printf '%-46s %14s %14s\n' "what" "events/s" "p99 µs"
printf '%-46s %14.0f %14.1f\n' "Pipeline.Emit, non-CRITICAL, in a span" "$(metric BenchmarkPipelineEmit events/s)" "$(metric BenchmarkPipelineEmit p99-emit-µs)"
printf '%-46s %14.0f %14.1f\n' "spool Append, non-CRITICAL" "$(metric BenchmarkEmit events/s)" "$(metric BenchmarkEmit p99-emit-µs)"
printf '%-46s %14.0f %14.1f\n' "baseline: raw write(2) per record" "$(metric BenchmarkRawAppend events/s)" "$(metric BenchmarkRawAppend p99-emit-µs)"
printf '%-46s %14s %14s\n' "" "p50 µs" "p99 µs"
printf '%-46s %14.1f %14.1f\n' "CRITICAL: Emit until fsynced" "$(metric BenchmarkCriticalDurable p50-µs)" "$(metric BenchmarkCriticalDurable p99-µs)"
printf '%-46s %14.1f %14.1f\n' "baseline: raw write(2) + fsync, same size" "$(metric BenchmarkRawAppendFsync p50-µs)" "$(metric BenchmarkRawAppendFsync p99-µs)"
echo "goals: Emit ≥ 50000 events/s with p99 < 100 µs; CRITICAL p99 within 3× the raw fsync p99"
