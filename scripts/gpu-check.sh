#!/usr/bin/env bash
# gpu-check: run vramseal's GPU checks on a machine with an NVIDIA GPU and
# driver. It needs no Go toolchain and builds nothing: the binaries come
# from `make gpu-check-build` (run where Go is) in .gpu-check/.
#
#   scripts/gpu-check.sh            (or: make gpu-check)
#
# Environment:
#   GPU_CHECK_BIN    folder of the prebuilt binaries (default .gpu-check)
#   GPU_CHECK_BYTES  bytes of shards to seal (default 8 GiB)
#   GPU_CHECK_DATA   folder for the shard files (default $TMPDIR or /tmp)
#   GPU_CHECK_LEAF   leaf size of the GPU path (default 16384)
#   GPU_CHECK_GPU    CUDA ordinal to measure (default 0)
#
# Exit status 0 when every test passes and every target is met.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${GPU_CHECK_BIN:-$root/.gpu-check}
bytes=${GPU_CHECK_BYTES:-$((8 << 30))}
data=${GPU_CHECK_DATA:-${TMPDIR:-/tmp}}
leaf=${GPU_CHECK_LEAF:-16384}
gpu=${GPU_CHECK_GPU:-0}

if [[ ! -x $bin/cuda.test || ! -x $bin/gpucheck ]]; then
	echo "gpu-check: no binaries in $bin: run 'make gpu-check-build' on a machine with Go, then copy the tree (with $bin) here" >&2
	exit 2
fi
# Tests that find no GPU fail here instead of skipping.
export VRAMSEAL_REQUIRE_GPU=1
export CUDA_DEVICE_ORDER=${CUDA_DEVICE_ORDER:-PCI_BUS_ID}

if command -v nvidia-smi >/dev/null 2>&1; then
	nvidia-smi --query-gpu=index,name,uuid,driver_version,memory.total,ecc.mode.current,mig.mode.current,pcie.link.gen.current,pcie.link.width.current --format=csv 2>&1 || true
fi

declare -a results
status=0

# run_tests NAME DIR ARGS...: run a prebuilt test binary from its package
# folder (tests read testdata/ relative to it).
run_tests() {
	local name=$1 dir=$2
	shift 2
	echo
	echo "== $name tests ($dir)"
	if (cd "$root/$dir" && "$bin/$name.test" -test.count=1 -test.timeout=10m -test.v "$@") 2>&1 |
		grep -v -E '^=== (RUN|PAUSE|CONT|NAME)'; then
		results+=("$name tests: PASS")
	else
		results+=("$name tests: FAIL")
		status=1
	fi
}

# The fake-driver tests compile testdata/fakecuda.c and need gcc; the
# real-GPU tests (TestGPU*) need only the driver.
if command -v gcc >/dev/null 2>&1; then
	run_tests cuda sealer/cuda
	run_tests policy policy
else
	echo "gpu-check: no gcc here: running only the tests that use the real GPU"
	run_tests cuda sealer/cuda -test.run '^TestGPU'
	run_tests policy policy -test.run '^TestGPU|^TestStartup|^TestExit|^TestNonDevice'
fi
# The same GPU tests built with cgo, as the agent binary is.
if [[ -x $bin/cuda-cgo.test ]]; then
	run_tests cuda-cgo sealer/cuda -test.run '^TestGPU'
fi
for t in "$bin"/*.test; do
	name=$(basename "$t" .test)
	case $name in cuda | cuda-cgo | policy) continue ;; esac
	# Other packages (the NVML collector) record their folder beside the binary.
	dir=$(cat "$bin/$name.dir" 2>/dev/null || echo .)
	run_tests "$name" "$dir"
done

echo
echo "== throughput over $((bytes >> 20)) MiB of sealed shards (GPU $gpu)"
if "$bin/gpucheck" -bytes "$bytes" -leaf-size "$leaf" -dir "$data" -gpu "$gpu"; then
	results+=("throughput targets: PASS")
else
	results+=("throughput targets: FAIL")
	status=1
fi

echo
echo "== summary"
printf '  %s\n' "${results[@]}"
if ((status == 0)); then echo "gpu-check: PASS"; else echo "gpu-check: FAIL"; fi
exit $status
