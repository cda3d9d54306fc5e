// Package killtest is the harness the audit packages' SIGKILL tests share: a
// parent test starts the test binary again as a child that emits audit
// records, kills it with SIGKILL at a random moment, and collects the IDs of
// the CRITICAL records the child was told were durable.
//
// The child prints "ready" once it is set up and "durable <id>" for each
// confirmed record; the parent reads those lines from the child's stdout.
package killtest
