package ptxgen

import (
	"errors"
	"fmt"
	"math/bits"
)

// Memory is the global memory an interpreted thread sees.
type Memory interface {
	Load8(addr uint64) (byte, error)
	Load32(addr uint64) (uint32, error)
	Store32(addr uint64, v uint32) error
}

// Thread is one interpreted thread: its launch coordinates and parameters.
type Thread struct {
	Params map[string]uint64
	Tid    uint32 // %tid.x
	Ntid   uint32 // %ntid.x
	Ctaid  uint32 // %ctaid.x
	// MaxSteps bounds the instructions executed (0: 1<<32).
	MaxSteps uint64
}

// ErrSteps is returned when a thread runs past its step bound.
var ErrSteps = errors.New("ptxgen: step bound exceeded")

// Run interprets the kernel for one thread against mem. It returns the
// number of instructions executed.
func (k *Kernel) Run(t Thread, mem Memory) (uint64, error) {
	r32 := make([]uint32, k.nregs[B32])
	r64 := make([]uint64, k.nregs[B64])
	pr := make([]bool, k.nregs[Pred])
	val := func(o Operand, t Type) uint64 {
		if o.IsImm {
			return o.Imm
		}
		switch o.Reg.T {
		case B32:
			return uint64(r32[o.Reg.N])
		case B64:
			return r64[o.Reg.N]
		}
		if pr[o.Reg.N] {
			return 1
		}
		return 0
	}
	set := func(d Reg, v uint64) {
		switch d.T {
		case B32:
			r32[d.N] = uint32(v)
		case B64:
			r64[d.N] = v
		case Pred:
			pr[d.N] = v != 0
		}
	}
	limit := t.MaxSteps
	if limit == 0 {
		limit = 1 << 32
	}
	var steps uint64
	for pc := 0; pc < len(k.Body); pc++ {
		in := k.Body[pc]
		if in.Op == OpLabel {
			continue
		}
		steps++
		if steps > limit {
			return steps, ErrSteps
		}
		if in.Guarded && pr[in.Guard.N] == in.GuardNeg {
			continue
		}
		mask := uint64(1<<32 - 1)
		if in.T == B64 {
			mask = ^uint64(0)
		}
		a := func() uint64 { return val(in.Src[0], in.T) & mask }
		b := func() uint64 { return val(in.Src[1], in.T) & mask }
		var d Reg
		if len(in.Dst) > 0 {
			d = in.Dst[0]
		}
		switch in.Op {
		case OpMov:
			set(d, a())
		case OpAdd:
			set(d, (a()+b())&mask)
		case OpSub:
			set(d, (a()-b())&mask)
		case OpMul:
			set(d, (a()*b())&mask)
		case OpAnd:
			set(d, a()&b())
		case OpOr:
			set(d, a()|b())
		case OpXor:
			set(d, a()^b())
		case OpNot:
			set(d, ^a()&mask)
		case OpShl:
			n := b()
			if n >= 32 && in.T == B32 || n >= 64 {
				set(d, 0)
			} else {
				set(d, (a()<<n)&mask)
			}
		case OpShr:
			n := b()
			if n >= 32 && in.T == B32 || n >= 64 {
				set(d, 0)
			} else {
				set(d, a()>>n)
			}
		case OpRotr:
			// shf.r.wrap uses the shift amount modulo 32.
			set(d, uint64(bits.RotateLeft32(uint32(a()), -int(b()&31))))
		case OpBswap:
			set(d, uint64(bits.ReverseBytes32(uint32(a()))))
		case OpMin:
			set(d, min(a(), b()))
		case OpCvt64:
			set(d, val(in.Src[0], B32)&(1<<32-1))
		case OpCvt32:
			set(d, val(in.Src[0], B64)&(1<<32-1))
		case OpSetp:
			x, y := a(), b()
			var p bool
			switch in.Cmp {
			case "lt":
				p = x < y
			case "le":
				p = x <= y
			case "gt":
				p = x > y
			case "ge":
				p = x >= y
			case "eq":
				p = x == y
			case "ne":
				p = x != y
			default:
				return steps, fmt.Errorf("ptxgen: pc %d: unknown comparison %q", pc, in.Cmp)
			}
			set(d, b2u(p))
		case OpSelp:
			if pr[in.Src[2].Reg.N] {
				set(d, a())
			} else {
				set(d, b())
			}
		case OpParam:
			v, ok := t.Params[in.Name]
			if !ok {
				return steps, fmt.Errorf("ptxgen: pc %d: parameter %q not given", pc, in.Name)
			}
			set(d, v)
		case OpSreg:
			switch in.Name {
			case "tid.x":
				set(d, uint64(t.Tid))
			case "ntid.x":
				set(d, uint64(t.Ntid))
			case "ctaid.x":
				set(d, uint64(t.Ctaid))
			default:
				return steps, fmt.Errorf("ptxgen: pc %d: unknown special register %q", pc, in.Name)
			}
		case OpLd8:
			v, err := mem.Load8(val(in.Src[0], B64) + uint64(in.Off))
			if err != nil {
				return steps, fmt.Errorf("ptxgen: pc %d: %w", pc, err)
			}
			set(d, uint64(v))
		case OpLdV4:
			base := val(in.Src[0], B64) + uint64(in.Off)
			if base%16 != 0 {
				return steps, fmt.Errorf("ptxgen: pc %d: misaligned vector load at offset %d mod 16", pc, base%16)
			}
			for i := range 4 {
				v, err := mem.Load32(base + uint64(4*i))
				if err != nil {
					return steps, fmt.Errorf("ptxgen: pc %d: %w", pc, err)
				}
				set(in.Dst[i], uint64(v))
			}
		case OpSt32:
			at := val(in.Src[0], B64) + uint64(in.Off)
			if at%4 != 0 {
				return steps, fmt.Errorf("ptxgen: pc %d: misaligned store", pc)
			}
			if err := mem.Store32(at, uint32(val(in.Src[1], B32))); err != nil {
				return steps, fmt.Errorf("ptxgen: pc %d: %w", pc, err)
			}
		case OpBra:
			pc = k.labels[in.Name] // the loop's pc++ steps past the label
		case OpRet:
			return steps, nil
		default:
			return steps, fmt.Errorf("ptxgen: pc %d: unknown op %d", pc, in.Op)
		}
	}
	return steps, nil
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}
