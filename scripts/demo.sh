#!/usr/bin/env bash
# make run: what vramseal does, on the simulated GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
head -c $((24 << 20)) /dev/urandom > "$work/model-00001-of-00001.safetensors"
echo "== vramseal-agent digest (offline): the digests a seal records"
bin/vramseal-agent digest "$work/model-00001-of-00001.safetensors"
echo "   sha256sum says: $(sha256sum "$work/model-00001-of-00001.safetensors" | cut -c1-64)"
echo
echo "== a seal / verify / corrupt / verify / release round on a simulated GPU"
echo "   (sealer/example_test.go; the agent daemon and its CLI come next)"
sed -n '/^func Example/,/^}/p' sealer/example_test.go | grep -E '^\s+// (sealed|verify|released|vramseal)' | sed 's,^\s*// ,   ,'
go test -count=1 -run '^(Example|TestBitFlipFoundAndLocated)$' ./sealer
