#!/usr/bin/env bash
# Scrape cost of /metrics with 8 simulated GPUs x 64 shards (and again with 100 GPU
# processes attributed, pid labels on), beside an empty
# registry's scrape and the status page at / over the same node, in the same run. Arguments go to the benchmark
# (-gpus, -shards, -n, -goal-ms). The table says whether the p99 goal was met.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec go run ./collector/internal/scrapebench "$@"
