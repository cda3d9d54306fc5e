package sealer

// Verification: re-reading a shard and checking it against its seal.

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/vramseal/vramseal/audit"
)

// VerifyResult is the outcome of one verification.
type VerifyResult struct {
	ShardID   string `json:"shard_id"`
	GPUDevice int    `json:"gpu_device"`
	// Result is ok, digest_mismatch, signature_invalid, allocation_missing,
	// read_error or cancelled.
	Result         string        `json:"result"`
	ExpectedDigest string        `json:"expected_digest"`
	ActualDigest   string        `json:"actual_digest,omitempty"`
	FirstBadOffset int64         `json:"first_bad_offset"` // -1 when no chunk was compared bad
	BadChunks      int64         `json:"bad_chunks"`
	Bytes          uint64        `json:"bytes"`
	Duration       time.Duration `json:"duration_ns"`
	// EventID is the id of the audit event that reported the result.
	EventID string `json:"event_id,omitempty"`
	// AuditDurable is true when a CRITICAL event's record was confirmed
	// durable before Verify returned (always false for success).
	AuditDurable bool `json:"audit_durable"`
}

// Intact reports whether the shard matched its seal.
func (r VerifyResult) Intact() bool { return r.Result == ResultOK }

// Verify re-reads a shard's VRAM and checks it against its seal. A failed
// verification is returned as a result and as an *Error of KindIntegrity
// (or KindDevice for a read error, KindCancelled when the shard was released
// meanwhile); every failure but a cancellation emits a CRITICAL event.
func (s *Sealer) Verify(ctx context.Context, id string) (VerifyResult, error) {
	sh, ok := s.lookup(id)
	if !ok {
		return VerifyResult{ShardID: id, Result: ResultError}, opErr("verify", id, KindNotFound, errors.New("no such shard"))
	}
	return s.verify(ctx, sh, nil)
}

// VerifySeal checks a seal record presented by a consumer (verify-before-use):
// its signature, then that it is the record of a shard this agent holds,
// field for field, then that shard's VRAM.
func (s *Sealer) VerifySeal(ctx context.Context, presented Seal) (VerifyResult, error) {
	sh, ok := s.lookup(presented.ShardID)
	if !ok {
		if !s.cfg.Signer.Check(presented) {
			return s.rejectPresented(ctx, presented, audit.ReasonSignatureInvalid, "presented seal record's signature is not valid")
		}
		return s.rejectPresented(ctx, presented, audit.ReasonAllocationMissing, "presented seal record is genuine but its shard is not held by this agent")
	}
	return s.verify(ctx, sh, &presented)
}

// rejectPresented reports a presented record that names no shard held here.
func (s *Sealer) rejectPresented(ctx context.Context, p Seal, reason, msg string) (VerifyResult, error) {
	_, span := s.tracer.Start(ctx, "vramseal.verify", trace.WithAttributes(attribute.String("vramseal.shard.id", p.ShardID)))
	defer span.End()
	span.SetStatus(codes.Error, reason)
	ev := audit.SealVerificationFailed{
		Header: s.header(ctx, p.GPUDevice), ShardID: p.ShardID, GPUDevice: p.GPUDevice, Reason: reason,
		ExpectedDigest: p.Digest, FirstBadOffset: -1,
	}
	ctx = trace.ContextWithSpan(ctx, span)
	durable := s.emitCritical(ctx, ev)
	s.observeVerify(p.GPUDevice, reason, 0, 0)
	res := VerifyResult{ShardID: p.ShardID, GPUDevice: p.GPUDevice, Result: reason, ExpectedDigest: p.Digest,
		FirstBadOffset: -1, EventID: ev.ID, AuditDurable: durable}
	return res, opErr("verify", p.ShardID, KindIntegrity, errors.New(msg))
}

// verify checks one shard; presented is a consumer's record or nil.
func (s *Sealer) verify(ctx context.Context, sh *shard, presented *Seal) (res VerifyResult, err error) {
	seal := sh.seal
	// One verification of a shard at a time; the others wait here, holding
	// nothing, and give up when their caller does or the shard goes.
	select {
	case sh.verify <- struct{}{}:
		defer func() { <-sh.verify }()
	case <-ctx.Done():
		res = VerifyResult{ShardID: seal.ShardID, GPUDevice: seal.GPUDevice, Result: ResultCancelled, ExpectedDigest: seal.Digest, FirstBadOffset: -1}
		return res, opErr("verify", seal.ShardID, KindCancelled, ctx.Err())
	case <-sh.ctx.Done():
		res = VerifyResult{ShardID: seal.ShardID, GPUDevice: seal.GPUDevice, Result: ResultCancelled, ExpectedDigest: seal.Digest, FirstBadOffset: -1}
		return res, opErr("verify", seal.ShardID, KindCancelled, errors.New("shard was released"))
	}

	ctx, span := s.tracer.Start(ctx, "vramseal.verify", trace.WithAttributes(
		attribute.String("vramseal.shard.id", seal.ShardID), attribute.Int("gpu.device.index", seal.GPUDevice)))
	defer func() { endSpan(span, err) }()

	// The shard's own context ends when it is released: stop reading then.
	vctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(sh.ctx, cancel)
	defer stop()

	start := time.Now()
	res = VerifyResult{ShardID: seal.ShardID, GPUDevice: seal.GPUDevice, ExpectedDigest: seal.Digest, FirstBadOffset: -1}
	if sh.ctx.Err() != nil {
		res.Result = ResultCancelled
		return res, opErr("verify", seal.ShardID, KindCancelled, errors.New("shard was released"))
	}

	c := s.check(vctx, sh, presented, &res)
	res.Duration = time.Since(start)
	switch {
	case c.cancelled != nil && sh.ctx.Err() != nil:
		res.Result = ResultCancelled
		return res, opErr("verify", seal.ShardID, KindCancelled, errors.New("shard was released during verification"))
	case c.cancelled != nil:
		res.Result = ResultCancelled
		return res, opErr("verify", seal.ShardID, KindCancelled, c.cancelled)
	}
	return s.report(ctx, sh, res, c)
}

// checked is what check found: reason "" when the shard is intact.
type checked struct {
	reason, actual string
	// badPresented: only the consumer's record is wrong; it says nothing
	// about the shard, whose state is left as it is.
	badPresented bool
	// err is the read error behind read_error or allocation_missing.
	err error
	// cancelled is set when the verification was cut short.
	cancelled error
}

// check compares the shard with its seal: the seal's signature, a
// presented record, then the bytes (res gets the digests and the location
// of a difference).
func (s *Sealer) check(ctx context.Context, sh *shard, presented *Seal, res *VerifyResult) (c checked) {
	seal := sh.seal
	switch {
	case !s.cfg.Signer.Check(seal):
		c.reason = audit.ReasonSignatureInvalid
		return c
	case presented != nil && !(s.cfg.Signer.Check(*presented) && sameSeal(*presented, seal)):
		c.reason, c.badPresented = audit.ReasonSignatureInvalid, true
		res.ExpectedDigest = presented.Digest
		return c
	}
	leaves, err := s.hashShard(ctx, sh)
	switch {
	case err != nil && ctx.Err() != nil:
		c.cancelled = ctx.Err()
	case errors.Is(err, ErrAllocationMissing):
		c.reason, c.err = audit.ReasonAllocationMissing, err
	case err != nil:
		c.reason, c.err = audit.ReasonReadError, err
	default:
		root := TreeRoot(seal.VRAMBytes, seal.LeafSize, leaves)
		c.actual = FormatDigest(root)
		res.ActualDigest = c.actual
		want, _ := ParseDigest(seal.Digest)
		if !hmac.Equal(root[:], want[:]) {
			c.reason = audit.ReasonDigestMismatch
			res.FirstBadOffset, res.BadChunks = compareLeaves(sh.leaves, leaves, seal.LeafSize)
		}
	}
	return c
}

// report records a verification's outcome on the shard (a failure is
// sticky, except a read error or a bad presented record), emits its event
// (CRITICAL for a failure, waited for until durable) and returns it.
func (s *Sealer) report(ctx context.Context, sh *shard, res VerifyResult, c checked) (VerifyResult, error) {
	seal := sh.seal
	now := s.cfg.Now()
	if c.reason == "" {
		res.Bytes = seal.VRAMBytes
		s.mu.Lock()
		sh.lastOK, sh.lastChecked, sh.lastResult = now, now, ResultOK
		s.mu.Unlock()
		ev := audit.SealVerified{Header: s.header(ctx, seal.GPUDevice), ShardID: seal.ShardID, GPUDevice: seal.GPUDevice, Digest: seal.Digest}
		s.emit(ctx, ev)
		res.Result, res.EventID = ResultOK, ev.ID
		s.observeVerify(seal.GPUDevice, ResultOK, res.Duration, seal.VRAMBytes)
		return res, nil
	}
	if !c.badPresented {
		s.mu.Lock()
		sh.lastChecked, sh.lastResult = now, c.reason
		if c.reason != audit.ReasonReadError {
			sh.failed = true // sticky: a shard once found altered stays failed
		}
		s.mu.Unlock()
	}
	ev := audit.SealVerificationFailed{
		Header: s.header(ctx, seal.GPUDevice), ShardID: seal.ShardID, GPUDevice: seal.GPUDevice, Reason: c.reason,
		ExpectedDigest: res.ExpectedDigest, ActualDigest: c.actual,
		FirstBadOffset: res.FirstBadOffset, BadChunks: res.BadChunks,
	}
	res.Result, res.EventID = c.reason, ev.ID
	res.AuditDurable = s.emitCritical(ctx, ev)
	s.observeVerify(seal.GPUDevice, c.reason, res.Duration, res.Bytes)
	kind, msg := KindIntegrity, c.reason
	switch c.reason {
	case audit.ReasonReadError:
		kind = KindDevice
		msg = fmt.Sprintf("reading the shard back failed: %v", c.err)
	case audit.ReasonAllocationMissing:
		msg = fmt.Sprintf("the shard's allocation is missing: %v", c.err)
	case audit.ReasonDigestMismatch:
		msg = fmt.Sprintf("VRAM does not match the seal: %d chunk(s) of %d bytes differ, the first at offset %d",
			res.BadChunks, seal.LeafSize, res.FirstBadOffset)
	case audit.ReasonSignatureInvalid:
		msg = "the seal record's signature or fields do not match"
	}
	return res, opErr("verify", seal.ShardID, kind, errors.New(msg))
}

// compareLeaves returns the offset of the first differing leaf and how many
// differ.
func compareLeaves(want, got []LeafHash, leafSize uint64) (first int64, bad int64) {
	first = -1
	for i := range want {
		if i >= len(got) || !hmac.Equal(want[i][:], got[i][:]) {
			if first < 0 {
				first = int64(uint64(i) * leafSize)
			}
			bad++
		}
	}
	return first, bad
}

// hashShard computes the shard's leaves, on the device or on the host,
// once one of the GPU's verification slots is free.
func (s *Sealer) hashShard(ctx context.Context, sh *shard) ([]LeafHash, error) {
	slots := s.gpuSlots[sh.dev.Index()]
	select {
	case slots <- struct{}{}:
		defer func() { <-slots }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	n, l := sh.seal.VRAMBytes, sh.seal.LeafSize
	if s.cfg.VerifyMode == VerifyDevice {
		if ld, ok := sh.dev.(LeafDigester); ok {
			// The device hashes in place; only digests cross the bus. The
			// budget is taken for the whole shard at once.
			if err := pace(ctx, n); err != nil {
				return nil, err
			}
			leaves, err := ld.LeafDigests(ctx, sh.alloc, n, l)
			if err == nil && uint64(len(leaves)) != LeafCount(n, l) {
				err = fmt.Errorf("device returned %d leaf digests, want %d", len(leaves), LeafCount(n, l))
			}
			return leaves, err
		}
	}
	return readBack(ctx, sh.dev, sh.alloc, n, l, s.cfg.Workers, s.bufs)
}

// VerifyAll verifies every sealed shard, one after the other, and returns
// every result; the error is the first failure's (nil when all are intact).
func (s *Sealer) VerifyAll(ctx context.Context) ([]VerifyResult, error) {
	var out []VerifyResult
	var first error
	for _, st := range s.List() {
		r, err := s.Verify(ctx, st.Seal.ShardID)
		if KindOf(err) == KindNotFound || KindOf(err) == KindCancelled {
			continue // released meanwhile
		}
		out = append(out, r)
		if err != nil && first == nil {
			first = err
		}
	}
	return out, first
}
