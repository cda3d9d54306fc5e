package spool

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Shipped returns the cursor: the last sequence number the collector took.
func (s *Spool) Shipped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shipped
}

// Ack records that every record up to seq was shipped: the cursor file is
// replaced atomically (temporary file, fsync, rename, fsync of the folder).
func (s *Spool) Ack(seq uint64) error {
	s.anchorMu.Lock()
	a := s.anchor
	a.ShippedSeq = seq
	err := writeAnchor(s.cfg.Dir, a)
	if err == nil {
		s.anchor = a
	}
	s.anchorMu.Unlock()
	if err != nil {
		return err
	}
	s.mu.Lock()
	if seq > s.shipped {
		s.shipped = seq
	}
	s.mu.Unlock()
	return nil
}

// anchorCheckpoint records a checkpoint, once it is durable, in the
// anchor.
func (s *Spool) anchorCheckpoint(seq uint64, hash [32]byte) {
	s.anchorMu.Lock()
	defer s.anchorMu.Unlock()
	a := s.anchor
	a.CheckpointSeq, a.CheckpointHash = seq, hash
	if err := writeAnchor(s.cfg.Dir, a); err != nil {
		s.log.WithError(err).Error("audit spool: cannot record the last checkpoint in the cursor file; a cut-short spool may go unnoticed until the next one")
		return
	}
	s.anchor = a
}

// Anchor is what the spool keeps outside its segment files, in the cursor
// file, so that a spool cut short is found: the last sequence number the
// collector took, and the last durable checkpoint's sequence number and
// hash. The segments must reach both.
type Anchor struct {
	ShippedSeq     uint64
	CheckpointSeq  uint64
	CheckpointHash [32]byte
}

// End is the last sequence number the segments must hold.
func (a Anchor) End() uint64 { return max(a.ShippedSeq, a.CheckpointSeq) }

// cursorFile is the cursor file's JSON. Files written before the
// checkpoint anchor existed hold shipped_seq only.
type cursorFile struct {
	ShippedSeq     uint64 `json:"shipped_seq"`
	CheckpointSeq  uint64 `json:"checkpoint_seq,omitempty"`
	CheckpointHash string `json:"checkpoint_hash,omitempty"`
}

// ReadAnchor reads the anchor in a spool folder's cursor file (zero when
// there is none).
func ReadAnchor(dir string) (Anchor, error) {
	var a Anchor
	b, err := os.ReadFile(filepath.Join(dir, cursorName))
	if errors.Is(err, os.ErrNotExist) {
		return a, nil
	}
	if err != nil {
		return a, fmt.Errorf("audit spool cursor: %w", err)
	}
	var c cursorFile
	if err := json.Unmarshal(b, &c); err != nil {
		return a, fmt.Errorf("audit spool cursor %s: %w", filepath.Join(dir, cursorName), err)
	}
	a.ShippedSeq, a.CheckpointSeq = c.ShippedSeq, c.CheckpointSeq
	if c.CheckpointSeq > 0 {
		h, err := hex.DecodeString(c.CheckpointHash)
		if err != nil || len(h) != len(a.CheckpointHash) {
			return a, fmt.Errorf("audit spool cursor %s: checkpoint_hash %q is not 64 hex digits", filepath.Join(dir, cursorName), c.CheckpointHash)
		}
		copy(a.CheckpointHash[:], h)
	}
	return a, nil
}

func readCursor(dir string) (uint64, error) {
	a, err := ReadAnchor(dir)
	return a.ShippedSeq, err
}

func writeAnchor(dir string, a Anchor) error {
	c := cursorFile{ShippedSeq: a.ShippedSeq, CheckpointSeq: a.CheckpointSeq}
	if a.CheckpointSeq > 0 {
		c.CheckpointHash = hex.EncodeToString(a.CheckpointHash[:])
	}
	b, _ := json.Marshal(c)
	return replaceFile(dir, cursorName, append(b, '\n'))
}

// replaceFile replaces dir/name with data atomically: a temporary file,
// fsync, rename, fsync of the folder.
func replaceFile(dir, name string, data []byte) error {
	tmp, err := os.CreateTemp(dir, name+".tmp-*")
	if err != nil {
		return fmt.Errorf("audit spool %s: %w", name, err)
	}
	_, werr := tmp.Write(data)
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), filepath.Join(dir, name))
	}
	if werr != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("audit spool %s: %w", name, werr)
	}
	return syncDir(dir)
}
