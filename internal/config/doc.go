// Package config loads the agent's YAML configuration file.
//
// Loading is strict: unknown keys, duplicate keys, values of the wrong type
// and values out of range are refused with an *Error that names the file,
// the key (as a dotted path such as "verify.interval" or "shards[1].id"), the
// line, and the reason. Keys left out take the defaults documented in
// docs/config.md (and applied by Default). The worker id defaults to
// $NODE_NAME, then the host name.
//
// Reading the file is kept apart from parsing it: Load reads, Parse parses
// bytes, and tests and fuzzing call Parse directly.
package config
