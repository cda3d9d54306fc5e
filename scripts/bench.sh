#!/usr/bin/env bash
# make bench: every benchmark beside a baseline measured in the same run.
# The machines are shared and noisy: read the medians and the ratios.
# BENCH_BYTES sets the size of the sealer's data (default 1 GiB).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

bytes=${BENCH_BYTES:-1073741824}
file="$work/shard.bin"
echo "== sealer: $((bytes >> 20)) MiB of random data, $(nproc) cores"
head -c "$bytes" /dev/urandom > "$file"
cat "$file" > /dev/null # in the page cache for every contender

# Baseline: openssl's SHA-256 of the same bytes (one stream, one core).
ossl=()
for _ in 1 2 3; do
  s=$(date +%s.%N); openssl dgst -sha256 "$file" > /dev/null; e=$(date +%s.%N)
  ossl+=("$(awk -v b="$bytes" -v s="$s" -v e="$e" 'BEGIN {printf "%.1f", b/(e-s)/1e6}')")
done
ossl_mb=$(printf '%s\n' "${ossl[@]}" | median)

VRAMSEAL_BENCH_FILE="$file" go test -run '^$' -bench '^Benchmark(Seal|Verify|DigestReader)$' -benchtime 2x -count 3 ./sealer > "$work/go.txt"
rate() { grep -E "^$1-[0-9]+ " "$work/go.txt" | awk '{for (i=1;i<=NF;i++) if ($i=="MB/s") print $(i-1)}' | median; }

printf '%-44s %10s %8s\n' "what (median of 3)" "MB/s" "× openssl"
row() { printf '%-44s %10.1f %8.2f\n' "$1" "$2" "$(awk -v a="$2" -v b="$ossl_mb" 'BEGIN {print a/b}')"; }
row "openssl dgst -sha256 (baseline)" "$ossl_mb"
row "verify on simulated GPU (device-side leaves)" "$(rate 'BenchmarkVerify/gpu')"
row "verify, read back to host" "$(rate 'BenchmarkVerify/host')"
row "seal from file (sha256 + tree, one pass)" "$(rate 'BenchmarkSeal')"
row "vramseal-agent digest (offline)" "$(rate 'BenchmarkDigestReader')"
echo "targets: verify ≥ 1.8× openssl on 2 cores; seal ≥ 0.8× openssl"

for f in scripts/bench.d/*.sh; do
  [ -x "$f" ] || continue
  echo
  "$f"
done
