package sealer

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// referenceDigest is the straightforward definition of docs/digest.md.
func referenceDigest(data []byte, leafSize uint64) string {
	var msg bytes.Buffer
	msg.WriteString("sha256-tree-v1")
	msg.WriteByte(0)
	_ = binary.Write(&msg, binary.BigEndian, uint64(len(data)))
	_ = binary.Write(&msg, binary.BigEndian, leafSize)
	for off := 0; off < len(data); off += int(leafSize) {
		end := min(off+int(leafSize), len(data))
		s := sha256.Sum256(data[off:end])
		msg.Write(s[:])
	}
	root := sha256.Sum256(msg.Bytes())
	return "sha256-tree-v1:" + hex.EncodeToString(root[:])
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

// TestDigestKnownAnswers pins the digest for the edge cases of the leaf
// cut. The expected values were computed with split -b and sha256sum
// (docs/digest.md shows how) and must never change.
func TestDigestKnownAnswers(t *testing.T) {
	const L = 4096
	cases := []struct {
		name string
		data []byte
		leaf uint64
		want string
	}{
		{"n=1", []byte("a"), L, "sha256-tree-v1:94355b897ac99c1b06a8b6394bb25528369cf38404e02df51f0a63463182ca2b"},
		{"n<L", bytes.Repeat([]byte("x"), 1000), L, "sha256-tree-v1:d1bc565d1e2b2e37e9825db4a4d3d5aae11fafdcb37300da3b17d8f02bc89ea6"},
		{"n=L", bytes.Repeat([]byte("x"), L), L, "sha256-tree-v1:1b6e67f7227cd19252fa847687e44818bc8ea4a79742a463821caae9e35155ef"},
		{"n=3L", bytes.Repeat([]byte("x"), 3*L), L, "sha256-tree-v1:35be2052b915caf8797e0ea160af673e6c1ba7142c28d0e37978d5c783d2d374"},
		{"n=3L+1", bytes.Repeat([]byte("x"), 3*L+1), L, "sha256-tree-v1:42a8662b84677f02135879ebf25507f7a82e4550f4298edbf9b26190c8fcd0fb"},
		{"docs example", docExample(), L, "sha256-tree-v1:8e023028e98ec9595923d75b4a49c209d7e033b6691ef67c52e715a3b847ff07"},
		{"leaf 64KiB", bytes.Repeat([]byte("x"), 200000), 64 << 10, "sha256-tree-v1:c448e2ca7cb30496ebf175264396ce6bec6fe05a740849644ca962f963da129f"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, err := DigestReader(bytes.NewReader(c.data), c.leaf)
			if err != nil {
				t.Fatal(err)
			}
			if ref := referenceDigest(c.data, c.leaf); d.Digest != ref {
				t.Fatalf("DigestReader %s, reference %s", d.Digest, ref)
			}
			if d.Digest != c.want {
				t.Errorf("digest = %s, want %s", d.Digest, c.want)
			}
			if want := sha256.Sum256(c.data); d.ContentSHA256 != hex.EncodeToString(want[:]) {
				t.Errorf("content_sha256 = %s", d.ContentSHA256)
			}
			if got, want := uint64(len(d.Leaves)), LeafCount(uint64(len(c.data)), c.leaf); got != want {
				t.Errorf("%d leaves, want %d (no empty last leaf)", got, want)
			}
		})
	}
}

// docExample is the file of docs/digest.md: `yes vramseal | head -c 10000`.
func docExample() []byte {
	return []byte(strings.Repeat("vramseal\n", 1112))[:10000]
}

func TestDigestEmpty(t *testing.T) {
	if _, err := DigestReader(bytes.NewReader(nil), DefaultLeafSize); !errors.Is(err, ErrEmpty) {
		t.Fatalf("err = %v, want ErrEmpty", err)
	}
}

func TestCheckLeafSize(t *testing.T) {
	for _, ok := range []uint64{4096, 8192, 262144, 16 << 20} {
		if err := CheckLeafSize(ok); err != nil {
			t.Errorf("%d: %v", ok, err)
		}
	}
	for _, bad := range []uint64{0, 1, 2048, 4095, 4097, 100000, 32 << 20} {
		if err := CheckLeafSize(bad); err == nil {
			t.Errorf("%d accepted", bad)
		}
	}
}

func TestHashLeavesMatchesStream(t *testing.T) {
	data := pattern(5*MinLeafSize + 123)
	d, err := DigestReader(bytes.NewReader(data), MinLeafSize)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []int{1, 2, 7} {
		leaves := HashLeaves(data, MinLeafSize, w)
		if FormatDigest(TreeRoot(uint64(len(data)), MinLeafSize, leaves)) != d.Digest {
			t.Fatalf("workers=%d: HashLeaves differs from the stream", w)
		}
	}
}

func TestParseDigest(t *testing.T) {
	good := "sha256-tree-v1:" + strings.Repeat("ab", 32)
	if _, err := ParseDigest(good); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "sha256:" + strings.Repeat("ab", 32), "sha256-tree-v1:" + strings.Repeat("AB", 32), good + "0", good[:len(good)-1]} {
		if _, err := ParseDigest(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// FuzzTreeDigest checks the streaming, parallel digest against the
// straightforward reference for arbitrary data and leaf sizes.
func FuzzTreeDigest(f *testing.F) {
	f.Add([]byte("a"), uint8(0))
	f.Add(bytes.Repeat([]byte{1}, 4096), uint8(0))
	f.Add(bytes.Repeat([]byte{2}, 8193), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, shift uint8) {
		leaf := uint64(MinLeafSize) << (shift % 3)
		d, err := DigestReader(bytes.NewReader(data), leaf)
		if len(data) == 0 {
			if !errors.Is(err, ErrEmpty) {
				t.Fatalf("empty input: err %v", err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if ref := referenceDigest(data, leaf); d.Digest != ref {
			t.Fatalf("digest %s, reference %s", d.Digest, ref)
		}
		if FormatDigest(TreeRoot(uint64(len(data)), leaf, HashLeaves(data, leaf, 3))) != d.Digest {
			t.Fatal("HashLeaves differs")
		}
	})
}
