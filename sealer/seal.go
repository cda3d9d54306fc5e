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
	Signature     string    `json:"signature"`
}

// canonical returns the length-prefixed encoding the signature covers:
// the domain string, then each field as uint32_be(len) || bytes, in the
// order of the struct; numbers in decimal, sealed_at in RFC 3339 with
// nanoseconds, UTC.
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

// Signer signs and checks seal records with a key derived from the seal
// secret (internal/secret, label LabelSealSignature).
type Signer struct {
	key []byte
}

// NewSigner returns a Signer for a 32-byte key.
func NewSigner(key []byte) (*Signer, error) {
	if len(key) < 32 {
		return nil, errors.New("seal signing key shorter than 32 bytes")
	}
	return &Signer{key: append([]byte(nil), key...)}, nil
}

func (g *Signer) mac(s Seal) []byte {
	m := hmac.New(sha256.New, g.key)
	m.Write(s.canonical())
	return m.Sum(nil)
}

// Sign returns s with its Signature set.
func (g *Signer) Sign(s Seal) Seal {
	s.Signature = SignatureScheme + ":" + hex.EncodeToString(g.mac(s))
	return s
}

// Check reports whether s carries a valid signature over its fields,
// comparing in constant time.
func (g *Signer) Check(s Seal) bool {
	hexSig, ok := strings.CutPrefix(s.Signature, SignatureScheme+":")
	if !ok {
		return false
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil || len(got) != sha256.Size {
		return false
	}
	return hmac.Equal(got, g.mac(s))
}

// sameSeal reports, in constant time over their canonical encodings and
// signatures, whether two records are identical.
func sameSeal(a, b Seal) bool {
	ca, cb := a.canonical(), b.canonical()
	eq := hmac.Equal(ca, cb)
	return hmac.Equal([]byte(a.Signature), []byte(b.Signature)) && eq
}
