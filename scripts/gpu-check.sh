#!/usr/bin/env bash
# gpu-check: run vramseal's GPU checks on a machine with an NVIDIA GPU and
# driver, in one short run. It needs no Go toolchain and builds nothing: the
# binaries come from `make gpu-check-build` (run where Go is) in .gpu-check/.
#
#   scripts/gpu-check.sh            (or: make gpu-check)
#
# In order: the driver, CUDA and GPU facts (nvidia-smi when present) and the
# loaded libcuda's readelf flags; the committed PTX assembled by this
# machine's ptxas when it has one; the GPU tests, twice in one process; the
# leaf kernel's test under compute-sanitizer memcheck when present; the
# hand-off and attach checks (gpucheck -handoff, which runs itself as the
# second process); then the throughput table. Every step is bounded by `timeout`. The table and the
# PASS/FAIL lines are also written to GPU_CHECK_REPORT.
#
# Environment:
#   GPU_CHECK_BIN      folder of the prebuilt binaries (default .gpu-check)
#   GPU_CHECK_LIBRARY  the driver library (default: searched for as the agent
#                      does); the file found is passed to every binary run
#   GPU_CHECK_BYTES    bytes of shards to seal (default 8 GiB, in 4 shards)
#   GPU_CHECK_DATA     folder for the shard files (default $TMPDIR or /tmp)
#   GPU_CHECK_LEAF     leaf size of the GPU path (default 16384)
#   GPU_CHECK_GPU      CUDA ordinal to measure (default 0)
#   GPU_CHECK_REPORT   report file (default $GPU_CHECK_BIN/report.txt)
#   GPU_CHECK_STEP_TIMEOUT  seconds each step may take (default 240)
#
# Exit status 0 when every step passes and every target is met.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${GPU_CHECK_BIN:-$root/.gpu-check}
bytes=${GPU_CHECK_BYTES:-$((8 << 30))}
data=${GPU_CHECK_DATA:-${TMPDIR:-/tmp}}
leaf=${GPU_CHECK_LEAF:-16384}
gpu=${GPU_CHECK_GPU:-0}
step_timeout=${GPU_CHECK_STEP_TIMEOUT:-240}
# A test binary stops itself a little before its step's timeout.
test_timeout=$((step_timeout > 10 ? step_timeout - 5 : step_timeout))

if [[ ! -f $bin/cuda.test || ! -f $bin/gpucheck ]]; then
	echo "gpu-check: no binaries in $bin: run 'make gpu-check-build' on a machine with Go, then copy the tree (with $bin) here" >&2
	exit 2
fi
# A copy of the tree may have lost the execute bits; where the folder is
# read-only, the binaries run from a copy.
if ! chmod +x "$bin"/*.test "$bin/gpucheck" 2>/dev/null; then
	copy=$(mktemp -d)
	cp "$bin"/* "$copy"/ && chmod +x "$copy"/*.test "$copy/gpucheck" || exit 2
	echo "gpu-check: $bin is read-only: running the binaries from $copy"
	bin=$copy
fi
report=${GPU_CHECK_REPORT:-$bin/report.txt}

# Tests that find no GPU fail here instead of skipping.
export VRAMSEAL_REQUIRE_GPU=1
export CUDA_DEVICE_ORDER=${CUDA_DEVICE_ORDER:-PCI_BUS_ID}

declare -a results
status=0

# bounded SECONDS CMD...: run CMD, killed when it outlives SECONDS.
bounded() {
	local s=$1
	shift
	timeout --kill-after=10 "$s" "$@"
	local rc=$?
	if ((rc == 124 || rc == 137)); then echo "gpu-check: timed out after ${s}s: $*"; fi
	return $rc
}

# record NAME RC: note a step's result.
record() {
	if (($2 == 0)); then
		results+=("PASS: $1")
	else
		results+=("FAIL: $1 (exit status $2)")
		status=1
	fi
}

echo "== driver, CUDA and GPU"
if command -v nvidia-smi >/dev/null 2>&1; then
	bounded 30 nvidia-smi --query-gpu=index,name,uuid,driver_version,memory.total,ecc.mode.current,mig.mode.current,pcie.link.gen.current,pcie.link.width.current --format=csv
	bounded 30 nvidia-smi | head -4
else
	echo "no nvidia-smi here"
fi
facts=$(bounded 60 "$bin/gpucheck" -facts -gpu "$gpu" ${GPU_CHECK_LIBRARY:+-library "$GPU_CHECK_LIBRARY"} 2>&1)
rc=$?
echo "$facts"
record "driver loads and GPU $gpu answers" $rc
lib=$(sed -n 's/^library: //p' <<<"$facts")
lib=${lib:-${GPU_CHECK_LIBRARY:-}}
# Every binary below loads this same file.
export VRAMSEAL_CUDA_LIBRARY=$lib
libargs=()
if [[ -n $lib ]]; then libargs=(-library "$lib"); fi
if [[ -n $lib && -f $lib ]] && command -v readelf >/dev/null 2>&1; then
	echo "readelf of $lib:"
	bounded 30 readelf -h -d "$lib" | grep -E 'Class|Machine|SONAME|NEEDED|FLAGS|RUNPATH|RPATH' | sed 's/^/  /'
else
	echo "readelf of the driver library: skipped (no readelf or no library file)"
fi

# run_tests NAME DIR ARGS...: run a prebuilt test binary from its package
# folder (tests read testdata/ relative to it).
run_tests() {
	local name=$1 dir=$2
	shift 2
	echo
	echo "== $name tests ($dir) $*"
	(cd "$root/$dir" && bounded "$step_timeout" "$bin/$name.test" -test.timeout="${test_timeout}s" -test.v "$@") 2>&1 |
		grep -v -E '^=== (RUN|PAUSE|CONT|NAME)'
	record "$name tests $*" "${PIPESTATUS[0]}"
}

# The committed PTX assembled by this machine's NVIDIA assembler.
ptxas=$(command -v ptxas || ls /usr/local/cuda/bin/ptxas 2>/dev/null || true)
if [[ -n $ptxas ]]; then
	VRAMSEAL_PTXAS=$ptxas VRAMSEAL_REQUIRE_TOOLS=1 run_tests cuda sealer/cuda -test.count=1 -test.run '^TestPTXAS'
else
	echo
	echo "== ptxas: none on this machine (make test assembles the PTX with CUDA 11.8's)"
fi

# The whole test binary twice in one process: the real-GPU tests, then the
# fake-driver tests (which compile testdata/fakecuda.c and need gcc), then
# all again, so nothing the first pass left behind (a driver unloaded, a
# context released) breaks the second.
if command -v gcc >/dev/null 2>&1; then
	run_tests cuda sealer/cuda -test.count=2
	run_tests policy policy -test.count=1
else
	echo "gpu-check: no gcc here: running only the tests that use the real GPU"
	run_tests cuda sealer/cuda -test.count=2 -test.run '^TestGPU'
	run_tests policy policy -test.count=1 -test.run '^TestGPU|^TestStartup|^TestExit|^TestNonDevice'
fi
# The same GPU tests built with cgo, as the agent binary is.
if [[ -f $bin/cuda-cgo.test ]]; then
	run_tests cuda-cgo sealer/cuda -test.count=2 -test.run '^TestGPU'
fi
for t in "$bin"/*.test; do
	name=$(basename "$t" .test)
	case $name in cuda | cuda-cgo | policy) continue ;; esac
	# Other packages (the NVML collector) record their folder beside the binary.
	dir=$(cat "$bin/$name.dir" 2>/dev/null || echo .)
	run_tests "$name" "$dir" -test.count=1
done

# The leaf kernel under compute-sanitizer: no out-of-bounds or misaligned
# access on this GPU (-test.short: the shards up to 1 MiB, as memcheck
# slows the kernel a hundredfold).
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
if [[ -n $sanitizer ]]; then
	echo
	echo "== compute-sanitizer memcheck: the leaf kernel test"
	(cd "$root/sealer/cuda" && bounded "$step_timeout" "$sanitizer" --tool memcheck --error-exitcode 3 \
		"$bin/cuda.test" -test.count=1 -test.short -test.run '^TestGPULeafDigestsMatchCPU$' -test.v) 2>&1 | grep -v -E '^=== RUN' | tail -20
	record "compute-sanitizer memcheck of the leaf kernel" "${PIPESTATUS[0]}"
else
	echo
	echo "== compute-sanitizer: none on this machine"
fi

# Hand-off and attach, with this same gpucheck as the second process:
# export, import, bytes equal, which access flag took effect, a write
# through the imported mapping in a throwaway process, attach of the
# second process's allocation, a change there detected.
echo
echo "== hand-off and attach (GPU $gpu): a second process imports, writes, attaches"
handoff_out=$(mktemp)
bounded "$step_timeout" "$bin/gpucheck" -handoff -gpu "$gpu" -dir "$data" "${libargs[@]}" 2>&1 | tee "$handoff_out"
record "hand-off and attach checks" "${PIPESTATUS[0]}"

echo
echo "== throughput over $((bytes >> 20)) MiB of sealed shards (GPU $gpu)"
table=$(mktemp)
trap 'rm -f "$table" "$handoff_out"' EXIT
bounded "$step_timeout" "$bin/gpucheck" -bytes "$bytes" -leaf-size "$leaf" -dir "$data" -gpu "$gpu" -report "$table" "${libargs[@]}"
record "throughput targets" $?

{
	echo "vramseal gpu-check, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(hostname)"
	grep -E '^(library|driver|GPU|limitation):' <<<"$facts"
	echo
	cat "$table" 2>/dev/null
	echo
	echo "hand-off and attach:"
	sed 's/^/  /' "$handoff_out" 2>/dev/null
	echo
	printf '%s\n' "${results[@]}"
	if ((status == 0)); then echo "gpu-check: PASS"; else echo "gpu-check: FAIL"; fi
} >"$report.tmp" && mv "$report.tmp" "$report"

echo
echo "== summary (also in $report)"
printf '  %s\n' "${results[@]}"
if ((status == 0)); then echo "gpu-check: PASS"; else echo "gpu-check: FAIL"; fi
exit $status
