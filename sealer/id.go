package sealer

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxShardIDLen is the longest shard id.
const MaxShardIDLen = 256

// CheckShardID reports whether id is a valid shard id: 1–256 characters of
// [A-Za-z0-9._-], not starting with ".", without "..".
func CheckShardID(id string) error {
	if id == "" {
		return fmt.Errorf("shard id is empty")
	}
	if len(id) > MaxShardIDLen {
		return fmt.Errorf("shard id is %d characters long, at most %d allowed", len(id), MaxShardIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("shard id %q: character %d is not one of [A-Za-z0-9._-]", truncate(id), i)
		}
	}
	if id[0] == '.' {
		return fmt.Errorf("shard id %q starts with '.'", truncate(id))
	}
	if strings.Contains(id, "..") {
		return fmt.Errorf("shard id %q contains '..'", truncate(id))
	}
	return nil
}

// MaxModelRefLen is the longest model_ref a seal records.
const MaxModelRefLen = 1024

// CheckModelRef reports whether ref can be recorded in a seal: at most
// MaxModelRefLen bytes of valid UTF-8. A longer one would make the
// vram.sealed event too large to record and a huge metric label; invalid
// UTF-8 would not survive the seal record's JSON, so the printed record
// would no longer verify.
func CheckModelRef(ref string) error {
	if len(ref) > MaxModelRefLen {
		return fmt.Errorf("model_ref is %d bytes long, at most %d allowed", len(ref), MaxModelRefLen)
	}
	if !utf8.ValidString(ref) {
		return fmt.Errorf("model_ref is not valid UTF-8")
	}
	return nil
}

// truncate keeps error messages short when an id is long.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
