package sealer

import (
	"fmt"
	"strings"
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

// truncate keeps error messages short when an id is long.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
