package ptxgen

import "fmt"

// KernelName is the entry point of the leaf kernel.
const KernelName = "vramseal_sha256_leaves"

// Params are the leaf kernel's parameters, in order, each a .u64:
//
//	data      device address of the shard's first byte (16-byte aligned)
//	n         the shard's size in bytes
//	leaf_size the leaf size L (a multiple of 64)
//	first     the first leaf of this launch
//	count     the number of leaves of this launch
//	out       device address of the digest buffer: leaf i's SHA-256 is
//	          written, as its 32 bytes in order, at out + 32*i (i counted
//	          from the shard's first leaf, not from first)
//
// Thread g = ctaid.x*ntid.x + tid.x hashes leaf first+g when g < count.
var Params = []string{"data", "n", "leaf_size", "first", "count", "out"}

// BlockThreads is the block size the kernel is launched with (and
// declares with .maxntid).
const BlockThreads = 128

// ISA version and target of the shipped PTX: PTX ISA 7.8 (CUDA 11.8) for
// sm_80. The kernel uses nothing newer; every CUDA 12 and 13 driver
// JIT-compiles it for Ampere, Hopper and newer, and the oldest ptxas the
// tests assemble it with (CUDA 11.8's) accepts it.
const (
	PTXVersion = "7.8"
	PTXTarget  = "sm_80"
)

var sha256K = [64]uint32{
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}

var sha256IV = [8]uint32{
	0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
}

// LeafKernel builds the sha256-tree-v1 leaf kernel: one thread per leaf,
// each running plain SHA-256 over its leaf (the last one possibly short):
// full 64-byte blocks are read with 16-byte vector loads and byte-swapped;
// the blocks past the last full one are assembled byte by byte with the
// 0x80 terminator, zero padding and the bit length in the final block.
func LeafKernel() (*Kernel, error) {
	b := NewBuilder(KernelName, Params...)
	b.k.MaxThreads = BlockThreads
	r32 := func() Reg { return b.Reg(B32) }
	r64 := func() Reg { return b.Reg(B64) }
	pred := func() Reg { return b.Reg(Pred) }

	// Thread index → leaf.
	tid, ntid, ctaid, gid32 := r32(), r32(), r32(), r32()
	b.Sreg(tid, "tid.x")
	b.Sreg(ntid, "ntid.x")
	b.Sreg(ctaid, "ctaid.x")
	b.Mul(gid32, R(ctaid), R(ntid))
	b.Add(gid32, R(gid32), R(tid))
	gid := r64()
	b.Cvt64(gid, gid32)
	count := r64()
	b.Param(count, "count")
	p := pred()
	b.Setp(p, "ge", B64, R(gid), R(count))
	b.If(p, false).Ret()

	data, n, leafSize, first, out := r64(), r64(), r64(), r64(), r64()
	b.Param(data, "data")
	b.Param(n, "n")
	b.Param(leafSize, "leaf_size")
	b.Param(first, "first")
	b.Param(out, "out")
	leaf, off, rest, length := r64(), r64(), r64(), r64()
	b.Add(leaf, R(first), R(gid))
	b.Mul(off, R(leaf), R(leafSize))
	b.Sub(rest, R(n), R(off))
	b.Min(length, R(leafSize), R(rest))
	blk := r64() // address of the current block
	b.Add(blk, R(data), R(off))

	len32, nfull, rem, nblocks, extra := r32(), r32(), r32(), r32(), r32()
	b.Cvt32(len32, length)
	b.Shr(nfull, R(len32), Imm(6))
	b.And(rem, R(len32), Imm(63))
	b.Setp(p, "ge", B32, R(rem), Imm(56))
	b.Selp(extra, Imm(2), Imm(1), p)
	b.Add(nblocks, R(nfull), R(extra))
	// Bit length, big-endian in the final block's words 14 and 15.
	hi64, lenHi, lenLo := r64(), r32(), r32()
	b.Shr(hi64, R(length), Imm(29))
	b.Cvt32(lenHi, hi64)
	b.Shl(lenLo, R(len32), Imm(3))

	var H [8]Reg
	for i := range H {
		H[i] = r32()
		b.Mov(H[i], Imm(uint64(sha256IV[i])))
	}
	var W [16]Reg
	for i := range W {
		W[i] = r32()
	}
	bi, boff := r32(), r32() // block index, block offset within the leaf
	b.Mov(bi, Imm(0))
	b.Mov(boff, Imm(0))

	b.Label("BLOCK")
	b.Setp(p, "ge", B32, R(bi), R(nblocks))
	b.If(p, false).Bra("DONE")
	b.Setp(p, "lt", B32, R(bi), R(nfull))
	b.If(p, true).Bra("TAIL")
	for q := range 4 {
		b.LdV4([4]Reg{W[4*q], W[4*q+1], W[4*q+2], W[4*q+3]}, blk, int64(16*q))
	}
	for i := range W {
		b.Bswap(W[i], R(W[i]))
	}
	b.Bra("COMPRESS")

	b.Label("TAIL")
	pos, byt := r32(), r32()
	pl, pe := pred(), pred()
	for i := range 64 {
		b.Add(pos, R(boff), Imm(uint64(i)))
		b.Setp(pl, "lt", B32, R(pos), R(len32))
		b.Setp(pe, "eq", B32, R(pos), R(len32))
		b.Selp(byt, Imm(0x80), Imm(0), pe)
		b.If(pl, false).Ld8(byt, blk, int64(i))
		w := W[i/4]
		if i%4 == 0 {
			b.Mov(w, R(byt))
		} else {
			b.Shl(w, R(w), Imm(8))
			b.Or(w, R(w), R(byt))
		}
	}
	next := r32()
	b.Add(next, R(bi), Imm(1))
	b.Setp(p, "eq", B32, R(next), R(nblocks))
	b.If(p, false).Mov(W[14], R(lenHi))
	b.If(p, false).Mov(W[15], R(lenLo))

	b.Label("COMPRESS")
	v := [8]Reg{}
	for i := range v {
		v[i] = r32()
		b.Mov(v[i], R(H[i]))
	}
	t1, t2, t3, t4 := r32(), r32(), r32(), r32()
	// bigSigma sets d = rotr(x,r0) ^ rotr(x,r1) ^ rotr(x,r2), using t as scratch.
	bigSigma := func(d, x, t Reg, r0, r1, r2 uint) {
		b.Rotr(d, R(x), r0)
		b.Rotr(t, R(x), r1)
		b.Xor(d, R(d), R(t))
		b.Rotr(t, R(x), r2)
		b.Xor(d, R(d), R(t))
	}
	// smallSigma sets d = rotr(x,r0) ^ rotr(x,r1) ^ (x >> s).
	smallSigma := func(d, x, t Reg, r0, r1, s uint) {
		b.Rotr(d, R(x), r0)
		b.Rotr(t, R(x), r1)
		b.Xor(d, R(d), R(t))
		b.Shr(t, R(x), Imm(uint64(s)))
		b.Xor(d, R(d), R(t))
	}
	for t := range 64 {
		w := W[t%16]
		if t >= 16 {
			// w[t] = σ1(w[t-2]) + w[t-7] + σ0(w[t-15]) + w[t-16]
			smallSigma(t1, W[(t-2)%16], t2, 17, 19, 10)
			b.Add(w, R(w), R(t1))
			b.Add(w, R(w), R(W[(t-7)%16]))
			smallSigma(t1, W[(t-15)%16], t2, 7, 18, 3)
			b.Add(w, R(w), R(t1))
		}
		a, bb, c, d, e, f, g, h := v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]
		// T1 = h + Σ1(e) + Ch(e,f,g) + K[t] + w, accumulated in h.
		bigSigma(t1, e, t2, 6, 11, 25)
		b.Add(h, R(h), R(t1))
		b.And(t1, R(e), R(f))
		b.Not(t2, R(e))
		b.And(t2, R(t2), R(g))
		b.Xor(t1, R(t1), R(t2))
		b.Add(h, R(h), R(t1))
		b.Add(h, R(h), Imm(uint64(sha256K[t])))
		b.Add(h, R(h), R(w))
		// e' = d + T1, in d's register.
		b.Add(d, R(d), R(h))
		// T2 = Σ0(a) + Maj(a,b,c); a' = T1 + T2, in h's register.
		bigSigma(t3, a, t2, 2, 13, 22)
		b.And(t1, R(a), R(bb))
		b.And(t4, R(a), R(c))
		b.Xor(t1, R(t1), R(t4))
		b.And(t4, R(bb), R(c))
		b.Xor(t1, R(t1), R(t4))
		b.Add(t3, R(t3), R(t1))
		b.Add(h, R(h), R(t3))
		v = [8]Reg{h, a, bb, c, d, e, f, g}
	}
	for i := range H {
		b.Add(H[i], R(H[i]), R(v[i]))
	}
	b.Add(bi, R(bi), Imm(1))
	b.Add(boff, R(boff), Imm(64))
	b.Add(blk, R(blk), Imm(64))
	b.Bra("BLOCK")

	b.Label("DONE")
	dst := r64()
	b.Shl(dst, R(leaf), Imm(5))
	b.Add(dst, R(out), R(dst))
	for i := range H {
		b.Bswap(t1, R(H[i]))
		b.St32(dst, int64(4*i), t1)
	}
	b.Ret()
	return b.Kernel()
}

// LeafPTX returns the leaf kernel as the PTX module vramseal ships.
func LeafPTX() (string, error) {
	k, err := LeafKernel()
	if err != nil {
		return "", err
	}
	hdr := fmt.Sprintf("Code generated by ptxgen (make generate-ptx); DO NOT EDIT.\n"+
		"sha256-tree-v1 leaf kernel: SHA-256 of each leaf, one thread per leaf.\n"+
		"Parameters (all .u64): %v.", Params)
	return k.PTX(PTXVersion, PTXTarget, hdr), nil
}
