package ptxgen

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// region is one buffer of simulated global memory at a base address.
type region struct {
	base uint64
	b    []byte
}

// memory is simulated global memory made of regions; any access outside
// them is an error, as an illegal address is on the GPU.
type memory struct{ regions []*region }

func (m *memory) find(addr, size uint64) ([]byte, error) {
	for _, r := range m.regions {
		if addr >= r.base && addr+size <= r.base+uint64(len(r.b)) {
			return r.b[addr-r.base : addr-r.base+size], nil
		}
	}
	return nil, fmt.Errorf("illegal address %#x (+%d)", addr, size)
}

func (m *memory) Load8(addr uint64) (byte, error) {
	b, err := m.find(addr, 1)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

func (m *memory) Load32(addr uint64) (uint32, error) {
	b, err := m.find(addr, 4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (m *memory) Store32(addr uint64, v uint32) error {
	b, err := m.find(addr, 4)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(b, v)
	return nil
}

const (
	dataBase = 0x7f0000000000
	outBase  = 0x7f8000000000
)

// launch interprets the kernel over a grid of block-sized blocks covering
// count leaves (plus one spare block, whose threads must do nothing).
func launch(t testing.TB, k *Kernel, data []byte, leafSize, first, count uint64, out []byte, block uint32) {
	t.Helper()
	// The data region is exactly the shard: a read past its end fails.
	mem := &memory{regions: []*region{{base: dataBase, b: data}, {base: outBase, b: out}}}
	params := map[string]uint64{
		"data": dataBase, "n": uint64(len(data)), "leaf_size": leafSize,
		"first": first, "count": count, "out": outBase,
	}
	grid := uint32((count+uint64(block)-1)/uint64(block)) + 1
	for c := uint32(0); c < grid; c++ {
		for tid := uint32(0); tid < block; tid++ {
			if _, err := k.Run(Thread{Params: params, Tid: tid, Ntid: block, Ctaid: c}, mem); err != nil {
				t.Fatalf("thread %d of block %d: %v", tid, c, err)
			}
		}
	}
}

func leafDigests(data []byte, leafSize uint64) []byte {
	var out []byte
	for off := uint64(0); off < uint64(len(data)); off += leafSize {
		s := sha256.Sum256(data[off:min(off+leafSize, uint64(len(data)))])
		out = append(out, s[:]...)
	}
	return out
}

func mustKernel(t testing.TB) *Kernel {
	t.Helper()
	k, err := LeafKernel()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestKernelMatchesSHA256 runs the interpreted kernel over every shard
// length from 1 to 300 bytes and a spread of longer ones, for several leaf
// sizes, and compares each leaf digest with crypto/sha256.
func TestKernelMatchesSHA256(t *testing.T) {
	k := mustKernel(t)
	rng := rand.New(rand.NewPCG(1, 2))
	var lengths []int
	for n := 1; n <= 300; n++ {
		lengths = append(lengths, n)
	}
	lengths = append(lengths, 447, 448, 455, 456, 511, 512, 513, 1000, 4095, 4096, 4097, 8191, 9000)
	for _, leafSize := range []uint64{64, 128, 4096} {
		for _, n := range lengths {
			if leafSize == 4096 && n < 300 && n%7 != 0 {
				continue // short shards are one leaf whatever L is; sample them
			}
			data := make([]byte, n)
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			count := (uint64(n) + leafSize - 1) / leafSize
			out := make([]byte, 32*count)
			launch(t, k, data, leafSize, 0, count, out, 32)
			if want := leafDigests(data, leafSize); !bytes.Equal(out, want) {
				t.Fatalf("n=%d L=%d: kernel digests differ from crypto/sha256", n, leafSize)
			}
		}
	}
}

// TestKernelLaunchWindow checks first/count: a launch hashes only its
// window and writes each digest at its leaf's absolute slot.
func TestKernelLaunchWindow(t *testing.T) {
	k := mustKernel(t)
	data := make([]byte, 64*10+17)
	for i := range data {
		data[i] = byte(i * 7)
	}
	want := leafDigests(data, 64)
	out := make([]byte, len(want))
	launch(t, k, data, 64, 3, 4, out, 3)
	for i := 0; i < 11; i++ {
		got := out[32*i : 32*i+32]
		in := i >= 3 && i < 7
		if in && !bytes.Equal(got, want[32*i:32*i+32]) {
			t.Errorf("leaf %d: wrong digest", i)
		}
		if !in && !bytes.Equal(got, make([]byte, 32)) {
			t.Errorf("leaf %d outside the window was written", i)
		}
	}
}

func TestInterpreterFaults(t *testing.T) {
	k := mustKernel(t)
	data := make([]byte, 128)
	out := make([]byte, 64)
	params := map[string]uint64{"data": dataBase + 4, "n": 128, "leaf_size": 64, "first": 0, "count": 2, "out": outBase}
	mem := &memory{regions: []*region{{base: dataBase, b: make([]byte, 256)}, {base: outBase, b: out}}}
	if _, err := k.Run(Thread{Params: params, Ntid: 1}, mem); err == nil || !strings.Contains(err.Error(), "misaligned") {
		t.Errorf("misaligned data: got %v", err)
	}
	params["data"] = dataBase
	mem.regions[0].b = data[:100] // a shard shorter than n: reads past the end
	if _, err := k.Run(Thread{Params: params, Tid: 1, Ntid: 2}, mem); err == nil || !strings.Contains(err.Error(), "illegal address") {
		t.Errorf("read past the end: got %v", err)
	}
	delete(params, "out")
	mem.regions[0].b = data
	if _, err := k.Run(Thread{Params: params, Ntid: 1}, mem); err == nil {
		t.Error("missing parameter: no error")
	}
	params["out"] = outBase
	if _, err := k.Run(Thread{Params: params, Ntid: 1, MaxSteps: 100}, mem); !errors.Is(err, ErrSteps) {
		t.Errorf("step bound: got %v", err)
	}
	if _, err := NewBuilder("x").kernelWithBranch(); err == nil {
		t.Error("branch to an undefined label: no error")
	}
}

func (b *Builder) kernelWithBranch() (*Kernel, error) {
	b.Bra("NOWHERE")
	return b.Kernel()
}

// TestKernelCost bounds the work per 64-byte block and the registers, so a
// change to the generator that bloats the hot loop shows here.
func TestKernelCost(t *testing.T) {
	k := mustKernel(t)
	data := make([]byte, 64*101)
	run := func(n int) uint64 {
		mem := &memory{regions: []*region{{base: dataBase, b: data[:n]}, {base: outBase, b: make([]byte, 32)}}}
		steps, err := k.Run(Thread{Params: map[string]uint64{"data": dataBase, "n": uint64(n), "leaf_size": 1 << 20, "first": 0, "count": 1, "out": outBase}, Ntid: 1}, mem)
		if err != nil {
			t.Fatal(err)
		}
		return steps
	}
	perBlock := (run(64*101) - run(64)) / 100
	t.Logf("instructions per full 64-byte block: %d; virtual registers: %d b32, %d b64, %d pred",
		perBlock, k.Registers(B32), k.Registers(B64), k.Registers(Pred))
	if perBlock > 2400 {
		t.Errorf("%d instructions per block: the hot loop grew", perBlock)
	}
	if k.Registers(B32) > 64 || k.Registers(B64) > 16 {
		t.Errorf("too many virtual registers: %d b32, %d b64", k.Registers(B32), k.Registers(B64))
	}
}

// TestPTXSyntax checks the printed PTX as far as it can be without ptxas:
// the module header, one well-formed instruction per line from the set the
// printer emits, registers within their declarations, labels defined once
// and every branch target defined, and parameters declared.
func TestPTXSyntax(t *testing.T) {
	ptx, err := LeafPTX()
	if err != nil {
		t.Fatal(err)
	}
	checkPTX(t, ptx)
}

var (
	reg     = `%(?:r|rd|p)\d+`
	opnd    = `(?:` + reg + `|0x[0-9A-F]+|\d+)`
	addrRe  = `\[%rd\d+(?:\+\d+)?\]`
	instRes = []string{
		`mov\.u32 ` + reg + `, %(?:tid|ntid|ctaid)\.x`,
		`mov\.b(?:32|64) ` + reg + `, ` + opnd,
		`(?:add|sub|min|mul\.lo)\.u(?:32|64) ` + reg + `, ` + opnd + `, ` + opnd,
		`(?:and|or|xor|shl)\.b(?:32|64) ` + reg + `, ` + opnd + `, ` + opnd,
		`shr\.u(?:32|64) ` + reg + `, ` + opnd + `, ` + opnd,
		`not\.b32 ` + reg + `, ` + opnd,
		`shf\.r\.wrap\.b32 ` + reg + `, (` + reg + `), (` + reg + `), \d+`,
		`prmt\.b32 ` + reg + `, (` + reg + `), (` + reg + `), 0x0123`,
		`cvt\.u64\.u32 %rd\d+, %r\d+`,
		`cvt\.u32\.u64 %r\d+, %rd\d+`,
		`setp\.(?:lt|le|gt|ge|eq|ne)\.u(?:32|64) %p\d+, ` + opnd + `, ` + opnd,
		`selp\.b32 %r\d+, ` + opnd + `, ` + opnd + `, %p\d+`,
		`ld\.param\.u64 %rd\d+, \[vramseal_sha256_leaves_param_[a-z_]+\]`,
		`ld\.global\.nc\.u8 %r\d+, ` + addrRe,
		`ld\.global\.nc\.v4\.u32 \{%r\d+, %r\d+, %r\d+, %r\d+\}, ` + addrRe,
		`st\.global\.u32 ` + addrRe + `, %r\d+`,
		`bra [A-Z]+`,
		`ret`,
	}
	instRe = regexp.MustCompile(`^\t(?:@!?%p\d+ )?(?:` + strings.Join(instRes, "|") + `);$`)
)

func checkPTX(t *testing.T, ptx string) {
	t.Helper()
	for _, want := range []string{"\n.version " + PTXVersion + "\n", "\n.target " + PTXTarget + "\n", "\n.address_size 64\n", ".visible .entry " + KernelName + "(", "\n)\n.maxntid 128, 1, 1\n{\n"} {
		if !strings.Contains(ptx, want) {
			t.Errorf("PTX lacks %q", want)
		}
	}
	decl := map[string]int{}
	for _, m := range regexp.MustCompile(`\.reg \.(?:pred|b32|b64) %(p|r|rd)<(\d+)>;`).FindAllStringSubmatch(ptx, -1) {
		decl[m[1]], _ = strconv.Atoi(m[2])
	}
	params := map[string]bool{}
	for _, m := range regexp.MustCompile(`\.param \.u64 (vramseal_sha256_leaves_param_[a-z_]+)`).FindAllStringSubmatch(ptx, -1) {
		params[m[1]] = true
	}
	if len(params) != len(Params) {
		t.Errorf("%d parameters declared, want %d", len(params), len(Params))
	}
	labels, branches := map[string]int{}, map[string]bool{}
	body := ptx[strings.Index(ptx, "{\n")+2 : strings.LastIndex(ptx, "}")]
	for i, line := range strings.Split(body, "\n") {
		switch {
		case line == "" || strings.HasPrefix(line, "\t.reg "):
			continue
		case regexp.MustCompile(`^[A-Z]+:$`).MatchString(line):
			labels[strings.TrimSuffix(line, ":")]++
			continue
		case !instRe.MatchString(line):
			t.Errorf("body line %d is not an instruction the printer emits: %q", i, line)
			continue
		}
		if m := regexp.MustCompile(`bra ([A-Z]+);`).FindStringSubmatch(line); m != nil {
			branches[m[1]] = true
		}
		if m := regexp.MustCompile(`\[(vramseal_sha256_leaves_param_[a-z_]+)\]`).FindStringSubmatch(line); m != nil && !params[m[1]] {
			t.Errorf("line %d: undeclared parameter %s", i, m[1])
		}
		for _, m := range regexp.MustCompile(`%(rd|r|p)(\d+)`).FindAllStringSubmatch(line, -1) {
			n, _ := strconv.Atoi(m[2])
			if n >= decl[m[1]] {
				t.Errorf("line %d: %%%s%d beyond the declared %d", i, m[1], n, decl[m[1]])
			}
		}
		if m := regexp.MustCompile(`shf\.r\.wrap\.b32 %r\d+, (%r\d+), (%r\d+)`).FindStringSubmatch(line); m != nil && m[1] != m[2] {
			t.Errorf("line %d: a rotate must funnel a register with itself", i)
		}
	}
	for l, n := range labels {
		if n != 1 {
			t.Errorf("label %s defined %d times", l, n)
		}
	}
	for l := range branches {
		if labels[l] == 0 {
			t.Errorf("branch to undefined label %s", l)
		}
	}
	if strings.Count(ptx, "{") != strings.Count(ptx, "}") {
		t.Error("unbalanced braces")
	}
}
