// Package secret loads the agent's seal secret and derives the keys made from
// it. The secret's bytes never leave this package: a Secret formats as
// "[redacted]" and derived keys are handed out only as []byte to the code
// that computes MACs with them.
package secret

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
)

// MinBytes is the shortest seal secret accepted.
const MinBytes = 32

// maxBytes bounds what is read from a secret file.
const maxBytes = 64 << 10

// HKDF labels ("info") of the keys derived from the seal secret. Each use has
// its own, so a key for one can never be used for another.
const (
	LabelSealSignature   = "vramseal seal-signature v1"
	LabelAuditCheckpoint = "vramseal audit-checkpoint v1"
	// LabelKeyID derives a secret's public id (KeyID).
	LabelKeyID = "vramseal key-id v1"
)

// Secret is the seal secret.
type Secret struct {
	b []byte
}

// ErrUnusable is wrapped by every error Load returns for a secret file that
// exists but must not be used (too short, too open, not a regular file).
var ErrUnusable = errors.New("unusable seal secret file")

// Load reads the secret from path. The file must be a regular file of at
// least MinBytes bytes that neither group nor others may read or write.
// Errors name the file and the reason, never the content.
func Load(path string) (Secret, error) {
	f, err := os.Open(path)
	if err != nil {
		return Secret{}, fmt.Errorf("seal secret file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Secret{}, fmt.Errorf("seal secret file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return Secret{}, fmt.Errorf("%w %s: not a regular file", ErrUnusable, path)
	}
	if perm := st.Mode().Perm(); perm&0o066 != 0 {
		return Secret{}, fmt.Errorf("%w %s: mode %04o lets group or others read or write it; use 0400 or 0600", ErrUnusable, path, perm)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxBytes+1))
	if err != nil {
		return Secret{}, fmt.Errorf("seal secret file %s: %w", path, err)
	}
	if len(b) > maxBytes {
		return Secret{}, fmt.Errorf("%w %s: larger than %d bytes", ErrUnusable, path, maxBytes)
	}
	if len(b) < MinBytes {
		return Secret{}, fmt.Errorf("%w %s: %d bytes, need at least %d", ErrUnusable, path, len(b), MinBytes)
	}
	return Secret{b: b}, nil
}

// FromBytes makes a Secret from b (copied), for tests and tools. It applies
// the same length rule as Load.
func FromBytes(b []byte) (Secret, error) {
	if len(b) < MinBytes {
		return Secret{}, fmt.Errorf("%w: %d bytes, need at least %d", ErrUnusable, len(b), MinBytes)
	}
	return Secret{b: append([]byte(nil), b...)}, nil
}

// Key derives the 32-byte key for label with HKDF-SHA256 (no salt).
func (s Secret) Key(label string) ([]byte, error) {
	if len(s.b) == 0 {
		return nil, errors.New("seal secret not loaded")
	}
	return hkdf.Key(sha256.New, s.b, nil, label, 32)
}

// KeyID returns the secret's id: 16 hex digits derived one way from it
// (HKDF, LabelKeyID), safe to publish. Seal records and checkpoints name
// the secret that signed them by it, so that after a rotation the right
// one checks them.
func (s Secret) KeyID() (string, error) {
	k, err := s.Key(LabelKeyID)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(k[:8]), nil
}

// String hides the secret.
func (Secret) String() string { return "[redacted]" }

// GoString hides the secret.
func (Secret) GoString() string { return "secret.Secret{[redacted]}" }
