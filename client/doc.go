// Package client is how programs talk to a running vramseal agent over its
// two Unix sockets: the control socket (Control: seal, list, verify,
// release; the CLI uses it) and the consumer socket (Consumer: inference
// engines open sealed shards and receive their memory, leased for as long
// as they hold it). The consumer protocol is in docs/consumers.md.
package client
