// Package control is the agent's local control API: HTTP/JSON on a Unix
// socket, and the client the CLI subcommands use.
//
// The socket is created mode 0600, or 0660 owned by a group; on top of the
// file mode, every connection's peer credentials (SO_PEERCRED and
// SO_PEERGROUPS) are checked against Access: root, the agent's own user, a
// member of the control group, or a uid or gid on the allow lists may call.
// Everyone else gets 403, and the refusal is logged with the caller's uid,
// gid and pid.
//
// Endpoints (all JSON; errors are {"error": "...", "kind": "..."}):
//
//	GET    /v1/status                 the agent: worker id, device, readiness
//	GET    /v1/shards                 every sealed shard
//	POST   /v1/shards                 seal a file under model_dirs (client.SealRequest)
//	GET    /v1/shards/{id}            one shard
//	DELETE /v1/shards/{id}            release a shard
//	POST   /v1/shards/{id}/verify     verify one shard now
//	POST   /v1/verify/all             verify every shard now
//	POST   /v1/verify/seal            verify a presented seal record (the body)
//	POST   /v1/debug/corrupt          simulated GPU only: flip a bit (client.CorruptRequest)
//	POST   /v1/debug/ecc              simulated GPU only: add ECC errors (client.ECCRequest)
//	POST   /v1/debug/gpu-lost         simulated GPU only (client.GPURequest)
//	POST   /v1/debug/gpu-restored     simulated GPU only (client.GPURequest)
//	POST   /v1/debug/fail-reads       simulated GPU only (client.FailReadsRequest)
//
// A W3C traceparent header on a request is extracted into the request's
// context, so the spans and audit events of the operation carry the caller's
// trace.
package control
