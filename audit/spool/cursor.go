package spool

import (
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
	if err := writeCursor(s.cfg.Dir, seq); err != nil {
		return err
	}
	s.mu.Lock()
	if seq > s.shipped {
		s.shipped = seq
	}
	s.mu.Unlock()
	return nil
}

type cursorFile struct {
	ShippedSeq uint64 `json:"shipped_seq"`
}

func readCursor(dir string) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(dir, cursorName))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("audit spool cursor: %w", err)
	}
	var c cursorFile
	if err := json.Unmarshal(b, &c); err != nil {
		return 0, fmt.Errorf("audit spool cursor %s: %w", filepath.Join(dir, cursorName), err)
	}
	return c.ShippedSeq, nil
}

func writeCursor(dir string, seq uint64) error {
	b, _ := json.Marshal(cursorFile{ShippedSeq: seq})
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
