package ptxgen

import (
	"fmt"
	"strings"
)

// Type is a register's type.
type Type uint8

// Register types.
const (
	B32  Type = iota + 1 // 32-bit integer (%r)
	B64                  // 64-bit integer (%rd)
	Pred                 // predicate (%p)
)

// Reg is a virtual register.
type Reg struct {
	T Type
	N int
}

func (r Reg) String() string {
	switch r.T {
	case B32:
		return fmt.Sprintf("%%r%d", r.N)
	case B64:
		return fmt.Sprintf("%%rd%d", r.N)
	case Pred:
		return fmt.Sprintf("%%p%d", r.N)
	}
	return "%invalid"
}

// Operand is a register or an immediate.
type Operand struct {
	Reg   Reg
	Imm   uint64
	IsImm bool
}

// Imm is an immediate operand.
func Imm(v uint64) Operand { return Operand{Imm: v, IsImm: true} }

// R is a register operand.
func R(r Reg) Operand { return Operand{Reg: r} }

func (o Operand) String() string {
	if o.IsImm {
		if o.Imm > 9 {
			return fmt.Sprintf("0x%X", o.Imm)
		}
		return fmt.Sprintf("%d", o.Imm)
	}
	return o.Reg.String()
}

// Op is an instruction's operation.
type Op uint8

// Operations. Arithmetic is unsigned and wraps; T of the instruction gives
// the width.
const (
	OpMov   Op = iota + 1 // d = a
	OpAdd                 // d = a + b
	OpSub                 // d = a - b
	OpMul                 // d = low(a * b)
	OpAnd                 // d = a & b
	OpOr                  // d = a | b
	OpXor                 // d = a ^ b
	OpNot                 // d = ^a
	OpShl                 // d = a << b
	OpShr                 // d = a >> b (logical)
	OpRotr                // d = a rotated right by b (B32; funnel shift)
	OpBswap               // d = a with its bytes reversed (B32; prmt)
	OpMin                 // d = min(a, b)
	OpCvt64               // d (B64) = zero-extended a (B32)
	OpCvt32               // d (B32) = low 32 bits of a (B64)
	OpSetp                // d (Pred) = a Cmp b
	OpSelp                // d = c ? a : b (c is Src[2], a predicate)
	OpParam               // d (B64) = kernel parameter Name
	OpSreg                // d (B32) = special register Name (tid.x, ntid.x, ctaid.x)
	OpLd8                 // d (B32) = global byte at [a + Off]
	OpLdV4                // Dst[0..3] (B32) = four little-endian words at [a + Off], 16-byte aligned
	OpSt32                // global word at [a + Off] = b (little-endian)
	OpLabel               // a branch target named Name
	OpBra                 // jump to Name
	OpRet                 // end of the thread
)

// Inst is one instruction.
type Inst struct {
	Op  Op
	T   Type
	Dst []Reg
	Src []Operand
	Cmp string // OpSetp: lt, le, gt, ge, eq, ne (unsigned)
	Off int64  // memory offset
	// Name: the label (OpLabel, OpBra), the parameter (OpParam) or the
	// special register (OpSreg).
	Name string
	// Guarded instructions run only when Guard is true (false with GuardNeg).
	Guarded  bool
	Guard    Reg
	GuardNeg bool
}

// Kernel is a kernel entry in the IR: its parameters (all .u64) and body.
type Kernel struct {
	Name   string
	Params []string
	// MaxThreads, when set, is the most threads per block the kernel is
	// launched with (.maxntid), which lets ptxas plan registers for it.
	MaxThreads int
	Body       []Inst
	nregs      map[Type]int
	labels     map[string]int
}

// Builder appends instructions to a Kernel.
type Builder struct {
	k     *Kernel
	guard *Inst // applied to the next instruction
}

// NewBuilder starts a kernel with the given parameters.
func NewBuilder(name string, params ...string) *Builder {
	return &Builder{k: &Kernel{Name: name, Params: params, nregs: map[Type]int{}, labels: map[string]int{}}}
}

// Reg allocates a fresh register of type t.
func (b *Builder) Reg(t Type) Reg {
	r := Reg{T: t, N: b.k.nregs[t]}
	b.k.nregs[t]++
	return r
}

// If guards the next instruction with p (or !p when neg).
func (b *Builder) If(p Reg, neg bool) *Builder {
	b.guard = &Inst{Guarded: true, Guard: p, GuardNeg: neg}
	return b
}

func (b *Builder) emit(in Inst) {
	if b.guard != nil {
		in.Guarded, in.Guard, in.GuardNeg = true, b.guard.Guard, b.guard.GuardNeg
		b.guard = nil
	}
	if in.Op == OpLabel {
		if _, dup := b.k.labels[in.Name]; dup {
			panic("ptxgen: duplicate label " + in.Name)
		}
		b.k.labels[in.Name] = len(b.k.Body)
	}
	b.k.Body = append(b.k.Body, in)
}

func (b *Builder) op(op Op, d Reg, src ...Operand) {
	b.emit(Inst{Op: op, T: d.T, Dst: []Reg{d}, Src: src})
}

// Mov sets d = a.
func (b *Builder) Mov(d Reg, a Operand) { b.op(OpMov, d, a) }

// Add sets d = a + c.
func (b *Builder) Add(d Reg, a, c Operand) { b.op(OpAdd, d, a, c) }

// Sub sets d = a - c.
func (b *Builder) Sub(d Reg, a, c Operand) { b.op(OpSub, d, a, c) }

// Mul sets d = low(a * c).
func (b *Builder) Mul(d Reg, a, c Operand) { b.op(OpMul, d, a, c) }

// And sets d = a & c.
func (b *Builder) And(d Reg, a, c Operand) { b.op(OpAnd, d, a, c) }

// Or sets d = a | c.
func (b *Builder) Or(d Reg, a, c Operand) { b.op(OpOr, d, a, c) }

// Xor sets d = a ^ c.
func (b *Builder) Xor(d Reg, a, c Operand) { b.op(OpXor, d, a, c) }

// Not sets d = ^a.
func (b *Builder) Not(d Reg, a Operand) { b.op(OpNot, d, a) }

// Shl sets d = a << n.
func (b *Builder) Shl(d Reg, a, n Operand) { b.op(OpShl, d, a, n) }

// Shr sets d = a >> n.
func (b *Builder) Shr(d Reg, a, n Operand) { b.op(OpShr, d, a, n) }

// Rotr sets d = a rotated right by n (32-bit).
func (b *Builder) Rotr(d Reg, a Operand, n uint) { b.op(OpRotr, d, a, Imm(uint64(n))) }

// Bswap sets d = a with its four bytes reversed.
func (b *Builder) Bswap(d Reg, a Operand) { b.op(OpBswap, d, a) }

// Min sets d = min(a, c).
func (b *Builder) Min(d Reg, a, c Operand) { b.op(OpMin, d, a, c) }

// Cvt64 sets the 64-bit d to the zero-extended 32-bit a.
func (b *Builder) Cvt64(d, a Reg) {
	b.emit(Inst{Op: OpCvt64, T: B64, Dst: []Reg{d}, Src: []Operand{R(a)}})
}

// Cvt32 sets the 32-bit d to the low half of the 64-bit a.
func (b *Builder) Cvt32(d, a Reg) {
	b.emit(Inst{Op: OpCvt32, T: B32, Dst: []Reg{d}, Src: []Operand{R(a)}})
}

// Setp sets the predicate p = a cmp c, comparing as unsigned integers of t.
func (b *Builder) Setp(p Reg, cmp string, t Type, a, c Operand) {
	b.emit(Inst{Op: OpSetp, T: t, Dst: []Reg{p}, Src: []Operand{a, c}, Cmp: cmp})
}

// Selp sets d = p ? a : c.
func (b *Builder) Selp(d Reg, a, c Operand, p Reg) { b.op(OpSelp, d, a, c, R(p)) }

// Param loads the 64-bit kernel parameter name into d.
func (b *Builder) Param(d Reg, name string) {
	b.emit(Inst{Op: OpParam, T: B64, Dst: []Reg{d}, Name: name})
}

// Sreg reads a special register (tid.x, ntid.x, ctaid.x) into d.
func (b *Builder) Sreg(d Reg, name string) {
	b.emit(Inst{Op: OpSreg, T: B32, Dst: []Reg{d}, Name: name})
}

// Ld8 loads the global byte at [a+off] into d.
func (b *Builder) Ld8(d, a Reg, off int64) {
	b.emit(Inst{Op: OpLd8, T: B32, Dst: []Reg{d}, Src: []Operand{R(a)}, Off: off})
}

// LdV4 loads four little-endian words at [a+off] (16-byte aligned).
func (b *Builder) LdV4(d [4]Reg, a Reg, off int64) {
	b.emit(Inst{Op: OpLdV4, T: B32, Dst: d[:], Src: []Operand{R(a)}, Off: off})
}

// St32 stores the word v at [a+off].
func (b *Builder) St32(a Reg, off int64, v Reg) {
	b.emit(Inst{Op: OpSt32, T: B32, Src: []Operand{R(a), R(v)}, Off: off})
}

// Label places the label name here.
func (b *Builder) Label(name string) { b.emit(Inst{Op: OpLabel, Name: name}) }

// Bra jumps to the label name.
func (b *Builder) Bra(name string) { b.emit(Inst{Op: OpBra, Name: name}) }

// Ret ends the thread.
func (b *Builder) Ret() { b.emit(Inst{Op: OpRet}) }

// Kernel returns the built kernel after checking that every branch has its
// label and every parameter is declared.
func (b *Builder) Kernel() (*Kernel, error) {
	params := map[string]bool{}
	for _, p := range b.k.Params {
		params[p] = true
	}
	for i, in := range b.k.Body {
		switch in.Op {
		case OpBra:
			if _, ok := b.k.labels[in.Name]; !ok {
				return nil, fmt.Errorf("instruction %d: branch to undefined label %q", i, in.Name)
			}
		case OpParam:
			if !params[in.Name] {
				return nil, fmt.Errorf("instruction %d: undeclared parameter %q", i, in.Name)
			}
		}
	}
	return b.k, nil
}

// Registers returns how many virtual registers of type t the kernel uses.
func (k *Kernel) Registers(t Type) int { return k.nregs[t] }

// PTX prints the kernel as a PTX module for the given ISA version and
// target (e.g. "7.8", "sm_80").
func (k *Kernel) PTX(version, target, header string) string {
	var s strings.Builder
	for _, l := range strings.Split(strings.TrimRight(header, "\n"), "\n") {
		fmt.Fprintf(&s, "// %s\n", l)
	}
	fmt.Fprintf(&s, "\n.version %s\n.target %s\n.address_size 64\n\n", version, target)
	fmt.Fprintf(&s, ".visible .entry %s(\n", k.Name)
	for i, p := range k.Params {
		sep := ","
		if i == len(k.Params)-1 {
			sep = ""
		}
		fmt.Fprintf(&s, "\t.param .u64 %s_param_%s%s\n", k.Name, p, sep)
	}
	s.WriteString(")\n")
	if k.MaxThreads > 0 {
		fmt.Fprintf(&s, ".maxntid %d, 1, 1\n", k.MaxThreads)
	}
	s.WriteString("{\n")
	fmt.Fprintf(&s, "\t.reg .pred %%p<%d>;\n", max(1, k.nregs[Pred]))
	fmt.Fprintf(&s, "\t.reg .b32 %%r<%d>;\n", max(1, k.nregs[B32]))
	fmt.Fprintf(&s, "\t.reg .b64 %%rd<%d>;\n\n", max(1, k.nregs[B64]))
	for _, in := range k.Body {
		if in.Op == OpLabel {
			fmt.Fprintf(&s, "%s:\n", in.Name)
			continue
		}
		s.WriteByte('\t')
		if in.Guarded {
			neg := ""
			if in.GuardNeg {
				neg = "!"
			}
			fmt.Fprintf(&s, "@%s%s ", neg, in.Guard)
		}
		s.WriteString(k.inst(in))
		s.WriteString(";\n")
	}
	s.WriteString("}\n")
	return s.String()
}

func width(t Type) string {
	if t == B64 {
		return "64"
	}
	return "32"
}

// inst prints one instruction (without guard and semicolon).
func (k *Kernel) inst(in Inst) string {
	w := width(in.T)
	var d string
	if len(in.Dst) > 0 {
		d = in.Dst[0].String()
	}
	src := func(i int) string { return in.Src[i].String() }
	switch in.Op {
	case OpMov:
		return fmt.Sprintf("mov.b%s %s, %s", w, d, src(0))
	case OpAdd:
		return fmt.Sprintf("add.u%s %s, %s, %s", w, d, src(0), src(1))
	case OpSub:
		return fmt.Sprintf("sub.u%s %s, %s, %s", w, d, src(0), src(1))
	case OpMul:
		return fmt.Sprintf("mul.lo.u%s %s, %s, %s", w, d, src(0), src(1))
	case OpAnd:
		return fmt.Sprintf("and.b%s %s, %s, %s", w, d, src(0), src(1))
	case OpOr:
		return fmt.Sprintf("or.b%s %s, %s, %s", w, d, src(0), src(1))
	case OpXor:
		return fmt.Sprintf("xor.b%s %s, %s, %s", w, d, src(0), src(1))
	case OpNot:
		return fmt.Sprintf("not.b%s %s, %s", w, d, src(0))
	case OpShl:
		return fmt.Sprintf("shl.b%s %s, %s, %s", w, d, src(0), src(1))
	case OpShr:
		return fmt.Sprintf("shr.u%s %s, %s, %s", w, d, src(0), src(1))
	case OpRotr:
		return fmt.Sprintf("shf.r.wrap.b32 %s, %s, %s, %d", d, src(0), src(0), in.Src[1].Imm)
	case OpBswap:
		// Selector 0x0123 takes bytes 3,2,1,0 of a (b is not read).
		return fmt.Sprintf("prmt.b32 %s, %s, %s, 0x0123", d, src(0), src(0))
	case OpMin:
		return fmt.Sprintf("min.u%s %s, %s, %s", w, d, src(0), src(1))
	case OpCvt64:
		return fmt.Sprintf("cvt.u64.u32 %s, %s", d, src(0))
	case OpCvt32:
		return fmt.Sprintf("cvt.u32.u64 %s, %s", d, src(0))
	case OpSetp:
		return fmt.Sprintf("setp.%s.u%s %s, %s, %s", in.Cmp, w, d, src(0), src(1))
	case OpSelp:
		return fmt.Sprintf("selp.b%s %s, %s, %s, %s", w, d, src(0), src(1), src(2))
	case OpParam:
		return fmt.Sprintf("ld.param.u64 %s, [%s_param_%s]", d, k.Name, in.Name)
	case OpSreg:
		return fmt.Sprintf("mov.u32 %s, %%%s", d, in.Name)
	case OpLd8:
		return fmt.Sprintf("ld.global.nc.u8 %s, %s", d, addr(in.Src[0].Reg, in.Off))
	case OpLdV4:
		return fmt.Sprintf("ld.global.nc.v4.u32 {%s, %s, %s, %s}, %s", in.Dst[0], in.Dst[1], in.Dst[2], in.Dst[3], addr(in.Src[0].Reg, in.Off))
	case OpSt32:
		return fmt.Sprintf("st.global.u32 %s, %s", addr(in.Src[0].Reg, in.Off), src(1))
	case OpBra:
		return "bra " + in.Name
	case OpRet:
		return "ret"
	}
	panic(fmt.Sprintf("ptxgen: unknown op %d", in.Op))
}

func addr(r Reg, off int64) string {
	if off == 0 {
		return fmt.Sprintf("[%s]", r)
	}
	return fmt.Sprintf("[%s+%d]", r, off)
}
