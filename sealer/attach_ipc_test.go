package sealer

import (
	"encoding/hex"
	"strings"
	"testing"
)

func TestParseIPCHandle(t *testing.T) {
	h := strings.Repeat("0a", 64)
	if got, err := ParseIPCHandle(h); err != nil || got[0] != 0x0a || got[63] != 0x0a {
		t.Errorf("ParseIPCHandle(%q) = %x, %v", h, got, err)
	}
	if got, err := ParseIPCHandle(strings.ToUpper(strings.Repeat("ff", 64))); err != nil || got[5] != 0xff {
		t.Errorf("upper case: %v", err)
	}
	for _, bad := range []string{"", "0a", strings.Repeat("0a", 63), strings.Repeat("0a", 65), strings.Repeat("zz", 64), strings.Repeat("0a", 63) + "0 "} {
		if _, err := ParseIPCHandle(bad); err == nil {
			t.Errorf("ParseIPCHandle(%q): no error", bad)
		}
	}
}

func FuzzParseIPCHandle(f *testing.F) {
	f.Add(strings.Repeat("0a", 64))
	f.Add(strings.Repeat("g", 128))
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParseIPCHandle(s)
		if err != nil {
			return
		}
		if !strings.EqualFold(hex.EncodeToString(h[:]), s) {
			t.Fatalf("%q parsed as %x", s, h)
		}
	})
}

func TestCheckGPUUUID(t *testing.T) {
	for _, ok := range []string{"GPU-f0f1f2f3-f4f5-f6f7-f8f9-fafbfcfdfeff", "MIG-f0f1f2f3-f4f5-f6f7-f8f9-fafbfcfdfeff"} {
		if err := CheckGPUUUID(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "GPU-", "0", "gpu-f0f1f2f3-f4f5-f6f7-f8f9-fafbfcfdfeff", "GPU-F0F1F2F3-f4f5-f6f7-f8f9-fafbfcfdfeff",
		"GPU-f0f1f2f3-f4f5-f6f7-f8f9-fafbfcfdfef", "GPU-f0f1f2f3f4f5-f6f7-f8f9-fafbfcfdfeff", "GPU-f0f1f2f3-f4f5-f6f7-f8f9-fafbfcfdfeff-"} {
		if err := CheckGPUUUID(bad); err == nil {
			t.Errorf("CheckGPUUUID(%q): no error", bad)
		}
	}
}

func FuzzCheckGPUUUID(f *testing.F) {
	f.Add("GPU-f0f1f2f3-f4f5-f6f7-f8f9-fafbfcfdfeff")
	f.Add("MIG-")
	f.Fuzz(func(t *testing.T, s string) {
		if CheckGPUUUID(s) != nil {
			return
		}
		if len(s) != 40 || (!strings.HasPrefix(s, "GPU-") && !strings.HasPrefix(s, "MIG-")) || strings.Count(s, "-") != 5 {
			t.Fatalf("accepted %q", s)
		}
	})
}
