package sealer_test

import (
	"strings"
	"testing"

	"github.com/vramseal/vramseal/sealer"
)

func TestParseComputeCapability(t *testing.T) {
	for _, c := range []struct {
		in           string
		major, minor int
		ok           bool
	}{
		{"6.0", 6, 0, true}, {"9.0", 9, 0, true}, {"10.3", 10, 3, true}, {"12.1", 12, 1, true},
		{"", 0, 0, false}, {"6", 0, 0, false}, {"6.", 0, 0, false}, {".0", 0, 0, false}, {"6.10", 0, 0, false},
		{"9.10", 0, 0, false}, {"-1.0", 0, 0, false}, {"+6.0", 0, 0, false}, {"a.b", 0, 0, false},
		{"6.0.1", 0, 0, false}, {"100.0", 0, 0, false}, {"6.+1", 0, 0, false}, {" 6.0", 0, 0, false},
	} {
		got, err := sealer.ParseComputeCapability(c.in)
		if (err == nil) != c.ok || got.Major != c.major || got.Minor != c.minor {
			t.Errorf("%q: %v, %v", c.in, got, err)
		}
		if err == nil && got.String() != c.in {
			t.Errorf("%q prints as %q", c.in, got)
		}
	}
	if !(sealer.ComputeCapability{Major: 8, Minor: 6}).Less(sealer.ComputeCapability{Major: 9}) ||
		(sealer.ComputeCapability{Major: 9}).Less(sealer.ComputeCapability{Major: 8, Minor: 9}) {
		t.Error("Less orders by major, then minor")
	}
}

func FuzzParseComputeCapability(f *testing.F) {
	for _, s := range []string{"6.0", "8.6", "", "x", "1.2.3", "99.9", "9.10"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := sealer.ParseComputeCapability(s)
		if err != nil {
			if !strings.Contains(err.Error(), "compute capability") {
				t.Fatalf("%q: error %q does not say what it parsed", s, err)
			}
			return
		}
		if c.Major < 0 || c.Major > 99 || c.Minor < 0 || c.Minor > 9 || c.String() != s {
			t.Fatalf("%q parsed as %v", s, c)
		}
	})
}
