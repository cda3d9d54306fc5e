package sealer

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SignatureScheme prefixes a seal signature.
const SignatureScheme = "hmac-sha256"

// sealDomain starts the canonical encoding, so a seal MAC can never be
// mistaken for a MAC over anything else made with the same key.
const sealDomain = "vramseal-seal-v1"

// Seal is the signed seal record: what `seal -o json` prints, what `list -o
// json` shows and what the vram.sealed event carries. Every field but
// Signature is covered by Signature.
type Seal struct {
	ShardID       string    `json:"shard_id"`
	GPUDevice     int       `json:"gpu_device"`
	VRAMBytes     uint64    `json:"vram_bytes"`
	Digest        string    `json:"digest"`
	LeafSize      uint64    `json:"leaf_size"`
	ContentSHA256 string    `json:"content_sha256"`
	ModelRef      string    `json:"model_ref"`
	SealedAt      time.Time `json:"sealed_at"`
	WorkerID      string    `json:"worker_id"`
	// KeyID names the key that signed the record (internal/secret
	// Secret.KeyID), so that after a rotation the right one checks it;
	// empty on records signed before key ids existed.
	KeyID     string `json:"key_id,omitempty"`
	Signature string `json:"signature"`
}

// canonical returns the length-prefixed encoding the signature covers:
// the domain string, then each field as uint32_be(len) || bytes, in the
// order of the struct; numbers in decimal, sealed_at in RFC 3339 with
// nanoseconds, UTC; then key_id, when the record has one (records without
// one encode as they always did).
func (s Seal) canonical() []byte {
	fields := []string{
		sealDomain,
		s.ShardID,
		strconv.Itoa(s.GPUDevice),
		strconv.FormatUint(s.VRAMBytes, 10),
		s.Digest,
		strconv.FormatUint(s.LeafSize, 10),
		s.ContentSHA256,
		s.ModelRef,
		s.SealedAt.UTC().Format(time.RFC3339Nano),
		s.WorkerID,
	}
	if s.KeyID != "" {
		fields = append(fields, s.KeyID)
	}
	var b bytes.Buffer
	var l [4]byte
	for _, f := range fields {
		binary.BigEndian.PutUint32(l[:], uint32(len(f)))
		b.Write(l[:])
		b.WriteString(f)
	}
	return b.Bytes()
}

// JSON returns the record as one line of JSON.
func (s Seal) JSON() string {
	b, _ := json.Marshal(s) // a Seal always marshals
	return string(b)
}

// ParseSeal decodes a seal record presented as JSON. Unknown fields are
// refused; the record is checked for form, not for authenticity (that is
// Verify's job).
func ParseSeal(data []byte) (Seal, error) {
	var s Seal
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return Seal{}, fmt.Errorf("seal record: %w", err)
	}
	if dec.More() {
		return Seal{}, errors.New("seal record: trailing data after the JSON object")
	}
	if err := CheckShardID(s.ShardID); err != nil {
		return Seal{}, fmt.Errorf("seal record: %w", err)
	}
	if s.Signature == "" {
		return Seal{}, errors.New("seal record: no signature")
	}
	return s, nil
}

// Signer signs and checks seal records with keys derived from seal
// secrets (internal/secret, label LabelSealSignature): it signs with its
// first key and checks with any of them, so that records signed before a
// rotation still verify.
type Signer struct {
	keys []SigningKey
}

// SigningKey is a seal signing key and the id seal records name it by.
type SigningKey struct {
	ID  string
	Key []byte
}

// NewSigner returns a Signer for one 32-byte key without an id.
func NewSigner(key []byte) (*Signer, error) {
	return NewRotatingSigner([]SigningKey{{Key: key}})
}

// NewRotatingSigner returns a Signer that signs with keys[0] (its id goes
// into each record) and checks a record with the key its key id names,
// or, for a record without one, with each key.
func NewRotatingSigner(keys []SigningKey) (*Signer, error) {
	if len(keys) == 0 {
		return nil, errors.New("no seal signing key")
	}
	g := &Signer{}
	for i, k := range keys {
		if len(k.Key) < 32 {
			return nil, fmt.Errorf("seal signing key %d shorter than 32 bytes", i+1)
		}
		g.keys = append(g.keys, SigningKey{ID: k.ID, Key: append([]byte(nil), k.Key...)})
	}
	return g, nil
}

func mac(key []byte, s Seal) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(s.canonical())
	return m.Sum(nil)
}

// Sign returns s with its KeyID and Signature set (by the first key).
func (g *Signer) Sign(s Seal) Seal {
	s.KeyID = g.keys[0].ID
	s.Signature = SignatureScheme + ":" + hex.EncodeToString(mac(g.keys[0].Key, s))
	return s
}

// Check reports whether s carries a valid signature over its fields by
// one of the Signer's keys, comparing in constant time.
func (g *Signer) Check(s Seal) bool {
	hexSig, ok := strings.CutPrefix(s.Signature, SignatureScheme+":")
	if !ok {
		return false
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil || len(got) != sha256.Size {
		return false
	}
	for _, k := range g.keys {
		if s.KeyID != "" && k.ID != s.KeyID {
			continue
		}
		if hmac.Equal(got, mac(k.Key, s)) {
			return true
		}
	}
	return false
}

// sameSeal reports, in constant time over their canonical encodings and
// signatures, whether two records are identical.
func sameSeal(a, b Seal) bool {
	ca, cb := a.canonical(), b.canonical()
	eq := hmac.Equal(ca, cb)
	return hmac.Equal([]byte(a.Signature), []byte(b.Signature)) && eq
}
