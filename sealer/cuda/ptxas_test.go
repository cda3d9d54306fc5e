package cuda

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vramseal/vramseal/internal/testenv"
)

// ptxasTargets are the architectures the committed PTX is assembled for:
// Ampere (the PTX's own target) and Hopper.
var ptxasTargets = []string{"sm_80", "sm_90"}

// ptxasReport is what `ptxas -v` says about the leaf kernel.
type ptxasReport struct {
	Registers, Stack, SpillStores, SpillLoads int
}

var (
	ptxasRegisters = regexp.MustCompile(`Used (\d+) registers`)
	ptxasFrame     = regexp.MustCompile(`(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads`)
)

// parsePtxas reads the register, stack and spill figures of `ptxas -v`.
func parsePtxas(out string) (ptxasReport, error) {
	reg := ptxasRegisters.FindStringSubmatch(out)
	frame := ptxasFrame.FindStringSubmatch(out)
	if reg == nil || frame == nil {
		return ptxasReport{}, fmt.Errorf("no register or stack figures in ptxas -v output:\n%s", out)
	}
	n := func(s string) int { v, _ := strconv.Atoi(s); return v }
	return ptxasReport{Registers: n(reg[1]), Stack: n(frame[1]), SpillStores: n(frame[2]), SpillLoads: n(frame[3])}, nil
}

// assemble runs ptxas -v on ptx for arch and returns its combined output.
func assemble(t *testing.T, ptxas, ptx, arch string) (string, error) {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "leaves.ptx")
	if err := os.WriteFile(src, []byte(ptx), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, ptxas, "-v", "-arch="+arch, "-o", filepath.Join(dir, "leaves.cubin"), src).CombinedOutput()
	return string(out), err
}

// TestPTXASAssemblesLeafKernel assembles the embedded leaf kernel with
// NVIDIA's ptxas (VRAMSEAL_PTXAS, which `make test` fetches; on a GPU
// machine `make gpu-check` passes the one installed there) for sm_80 and
// sm_90 and fails on any error, warning, spill or stack use. It logs the
// register count (`make ptxas-check` shows it).
func TestPTXASAssemblesLeafKernel(t *testing.T) {
	ptxas := testenv.Tool(t, "VRAMSEAL_PTXAS")
	for _, arch := range ptxasTargets {
		out, err := assemble(t, ptxas, leafPTX, arch)
		if err != nil {
			t.Fatalf("ptxas -arch=%s refused the committed PTX: %v\n%s", arch, err, out)
		}
		if strings.Contains(strings.ToLower(out), "warning") {
			t.Errorf("ptxas -arch=%s warns:\n%s", arch, out)
		}
		r, err := parsePtxas(out)
		if err != nil {
			t.Fatal(err)
		}
		if r.Stack != 0 || r.SpillStores != 0 || r.SpillLoads != 0 {
			t.Errorf("ptxas -arch=%s: %d bytes stack, %d bytes spill stores, %d bytes spill loads: want none\n%s",
				arch, r.Stack, r.SpillStores, r.SpillLoads, out)
		}
		t.Logf("ptxas %s: %s: %d registers, %d bytes stack, %d bytes spilled", ptxasVersion(ptxas), arch,
			r.Registers, r.Stack, r.SpillStores+r.SpillLoads)
	}
}

// TestPTXASRefusesBrokenPTX proves the check above can fail: a copy of the
// kernel with one instruction misspelt is refused by ptxas.
func TestPTXASRefusesBrokenPTX(t *testing.T) {
	ptxas := testenv.Tool(t, "VRAMSEAL_PTXAS")
	broken := strings.Replace(leafPTX, "\tret;", "\tret.bogus;", 1)
	if broken == leafPTX {
		t.Fatal("the kernel has no ret to break")
	}
	for _, arch := range ptxasTargets {
		out, err := assemble(t, ptxas, broken, arch)
		if err == nil {
			t.Fatalf("ptxas -arch=%s accepted a broken kernel:\n%s", arch, out)
		}
		if !strings.Contains(out, "error") {
			t.Errorf("ptxas -arch=%s failed without naming an error:\n%s", arch, out)
		}
		t.Logf("ptxas %s: broken copy refused: %s", arch, firstLine(out))
	}
}

func TestParsePtxas(t *testing.T) {
	out := "ptxas info    : Function properties for k\n    0 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads\nptxas info    : Used 56 registers, 400 bytes cmem[0]\n"
	r, err := parsePtxas(out)
	if err != nil || r != (ptxasReport{Registers: 56, SpillStores: 8, SpillLoads: 4}) {
		t.Errorf("parsePtxas = %+v, %v", r, err)
	}
	if _, err := parsePtxas("ptxas fatal"); err == nil {
		t.Error("no figures: no error")
	}
}

// ptxasVersion is the release line of `ptxas --version`, e.g. "V11.8.89".
func ptxasVersion(ptxas string) string {
	out, err := exec.Command(ptxas, "--version").Output()
	if err != nil {
		return "(version unknown)"
	}
	if m := regexp.MustCompile(`V\d+\.\d+\.\d+`).FindString(string(out)); m != "" {
		return m
	}
	return "(version unknown)"
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
