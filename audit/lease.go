package audit

import (
	"strconv"
	"strings"
)

// Names of the consumer lease events.
const (
	NameVRAMOpened = "vram.opened"
	NameVRAMClosed = "vram.closed"
)

// Deallocation reasons (vram.deallocated).
const (
	DeallocReleased    = "released"     // a release through the control API
	DeallocForced      = "forced"       // a forced release: the leases were revoked
	DeallocShutdown    = "shutdown"     // the agent stopped
	DeallocOwnerExited = "owner_exited" // the owner of attached memory went away
	DeallocDetached    = "detached"     // the owner of attached memory detached it
	DeallocSealFailed  = "seal_failed"  // the seal did not complete (content digest mismatch, device error, policy)
)

// Why a lease ended (vram.closed).
const (
	CloseConsumer = "consumer_closed" // the consumer closed it, or its connection ended (its process exited)
	CloseRevoked  = "revoked"         // a forced release took the shard away
	CloseShutdown = "shutdown"        // the agent stopped
)

// Caller is the process behind a request, from SO_PEERCRED and /proc. An
// unknown value is -1 (pid 0: a peer in another pid namespace) or ""
// (an executable that cannot be read); nothing is guessed.
type Caller struct {
	UID        int64  `json:"uid"`
	GID        int64  `json:"gid"`
	PID        int64  `json:"pid"`
	Executable string `json:"executable"`
	// PodUID and ContainerID are the Kubernetes pod and container the
	// process runs in, from its cgroup ("" outside a pod, or unknown).
	PodUID      string `json:"pod_uid,omitempty"`
	ContainerID string `json:"container_id,omitempty"`
}

// fields lists the caller's fields; the pod and container only when known.
func (c Caller) fields() []Field {
	f := []Field{
		{"caller_uid", c.UID}, {"caller_gid", c.GID}, {"caller_pid", c.PID},
		{"caller_executable", c.Executable},
	}
	if c.PodUID != "" {
		f = append(f, Field{"caller_pod_uid", c.PodUID})
	}
	if c.ContainerID != "" {
		f = append(f, Field{"caller_container_id", c.ContainerID})
	}
	return f
}

// String names the caller for a person: "pid 42 (uid 1000, /usr/bin/python3)".
func (c Caller) String() string {
	var b strings.Builder
	if c.PID >= 0 {
		b.WriteString("pid " + strconv.FormatInt(c.PID, 10))
	} else {
		b.WriteString("pid unknown")
	}
	b.WriteString(" (uid " + strconv.FormatInt(c.UID, 10))
	if c.Executable != "" {
		b.WriteString(", " + c.Executable)
	}
	b.WriteString(")")
	return b.String()
}

// VRAMOpened: a consumer opened a sealed shard (a lease began). The
// consumer is the event's caller (Header.Cause, kind lease).
type VRAMOpened struct {
	Header
	ShardID   string
	GPUDevice int
	Consumer  Caller
}

func (VRAMOpened) Name() string       { return NameVRAMOpened }
func (VRAMOpened) Severity() Severity { return SeverityInfo }
func (e VRAMOpened) Head() Header     { return e.Header }
func (e VRAMOpened) Fields() []Field {
	return []Field{{"shard_id", e.ShardID}, {"gpu_device", int64(e.GPUDevice)}}
}

// VRAMClosed: a consumer's lease on a shard ended (Reason: Close*). The
// consumer is the event's caller (Header.Cause).
type VRAMClosed struct {
	Header
	ShardID   string
	GPUDevice int
	Consumer  Caller
	Reason    string
}

func (VRAMClosed) Name() string       { return NameVRAMClosed }
func (VRAMClosed) Severity() Severity { return SeverityInfo }
func (e VRAMClosed) Head() Header     { return e.Header }
func (e VRAMClosed) Fields() []Field {
	return []Field{{"shard_id", e.ShardID}, {"gpu_device", int64(e.GPUDevice)}, {"reason", e.Reason}}
}

// PIDList writes pids as vram.deallocated's still_mapped_by: "12,345", or
// "" for none.
func PIDList(pids []int64) string {
	s := make([]string, len(pids))
	for i, p := range pids {
		s[i] = strconv.FormatInt(p, 10)
	}
	return strings.Join(s, ",")
}
