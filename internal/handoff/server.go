// Package handoff serves the consumer socket: inference engines open sealed
// shards there and get the shard's memory as a file descriptor, leased for
// as long as their connection stays open (docs/consumers.md). They never
// seal, release or inject faults: those stay on the control socket.
package handoff

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/internal/control"
	"github.com/vramseal/vramseal/internal/logfield"
	"github.com/vramseal/vramseal/internal/wire"
	"github.com/vramseal/vramseal/sealer"
)

// Sealer is what the consumer socket drives; *sealer.Sealer implements it.
type Sealer interface {
	Open(ctx context.Context, id string, consumer audit.Caller, revoke func()) (*sealer.Lease, error)
	VerifySeal(ctx context.Context, presented sealer.Seal) (sealer.VerifyResult, error)
	Attach(ctx context.Context, req sealer.AttachRequest) (*sealer.Attachment, error)
}

var _ Sealer = (*sealer.Sealer)(nil)

// Config is what a Server is built from.
type Config struct {
	// Sealer is required.
	Sealer Sealer
	// Access says who may connect besides root (Section "handoff").
	Access control.Access
	// HandshakeTimeout bounds the wait for a connection's first request
	// (10s when 0): a client that connects and says nothing is dropped.
	HandshakeTimeout time.Duration
	// MaxConnections bounds the connections served at once (1024 when 0);
	// one more is answered too_many and closed.
	MaxConnections int
	// MaxLeasesPerConnection bounds one connection's open leases (256
	// when 0).
	MaxLeasesPerConnection int
	// Logger is the operational log (logrus standard logger when nil).
	Logger logrus.FieldLogger
	// Executable reads a process's executable (/proc/PID/exe when nil).
	Executable func(pid int32) (string, error)
	// Cgroup reads a process's cgroup file, for its pod and container
	// (/proc/PID/cgroup when nil).
	Cgroup func(pid int32) (string, error)
}

// Server serves the consumer socket.
type Server struct {
	cfg   Config
	log   logrus.FieldLogger
	slots chan struct{}
	wg    sync.WaitGroup
}

// NewServer returns a Server.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Sealer == nil {
		return nil, errors.New("handoff: a sealer is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = logrus.StandardLogger()
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = 1024
	}
	if cfg.MaxLeasesPerConnection <= 0 {
		cfg.MaxLeasesPerConnection = 256
	}
	if cfg.Executable == nil {
		cfg.Executable = control.ReadExecutable
	}
	if cfg.Cgroup == nil {
		cfg.Cgroup = control.ReadCgroup
	}
	if cfg.Access.Section == "" {
		cfg.Access.Section = "handoff"
	}
	return &Server{cfg: cfg, log: cfg.Logger, slots: make(chan struct{}, cfg.MaxConnections)}, nil
}

// Serve accepts connections on ln until ctx ends, then closes every
// connection (their leases end) and returns nil.
func (s *Server) Serve(ctx context.Context, ln *net.UnixListener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { <-ctx.Done(); ln.Close() }()
	defer s.wg.Wait()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("consumer socket: %w", err)
		}
		select {
		case s.slots <- struct{}{}:
		default:
			s.log.WithField(logfield.MaxConnections, s.cfg.MaxConnections).Warn("consumer socket: connection refused, too many open")
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_ = wire.Write(c, failure(wire.KindTooMany, "too many connections to the consumer socket"))
			c.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.slots }()
			s.serveConn(ctx, c)
		}()
	}
}

// caller is the audit record of a peer (control.Peer.Caller).
func (s *Server) caller(p control.Peer) audit.Caller {
	return p.Caller(control.ProcReader{Executable: s.cfg.Executable, Cgroup: s.cfg.Cgroup})
}

func failure(kind, msg string) wire.Response {
	return wire.Response{V: wire.Version, Error: &wire.Error{Kind: kind, Message: msg}}
}

func sealerFailure(err error) wire.Response {
	kind := sealer.KindOf(err).String()
	if sealer.KindOf(err) == 0 {
		kind = wire.KindInternal
	}
	return failure(kind, err.Error())
}

// conn is one consumer connection and the leases it holds.
type conn struct {
	s        *Server
	c        *net.UnixConn
	who      audit.Caller
	log      logrus.FieldLogger
	leases   map[string]*sealer.Lease
	attached map[string]*sealer.Attachment
}

func (s *Server) serveConn(ctx context.Context, c *net.UnixConn) {
	defer c.Close()
	p, err := control.PeerOf(c)
	if err != nil {
		s.log.WithError(err).Warn("consumer socket: connection refused: the caller's credentials are unknown")
		_ = wire.Write(c, failure(wire.KindForbidden, "the caller's credentials could not be read"))
		return
	}
	log := s.log.WithFields(logrus.Fields{logfield.PeerUID: p.UID, logfield.PeerGID: p.GID, logfield.PeerPID: p.PID})
	if ok, why := s.cfg.Access.Allow(p); !ok {
		log.WithField(logfield.Why, why).Warn("consumer socket: connection refused")
		_ = wire.Write(c, failure(wire.KindForbidden, "not allowed: "+why))
		return
	}
	cn := &conn{s: s, c: c, who: s.caller(p), log: log, leases: map[string]*sealer.Lease{}, attached: map[string]*sealer.Attachment{}}
	ctx = audit.WithCause(ctx, audit.Cause{Kind: audit.CauseLease, Caller: &cn.who})
	defer cn.closeAll(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	_ = c.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	for first := true; ; first = false {
		var req wire.Request
		files, err := wire.Read(c, &req)
		switch {
		case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed):
			return
		case err != nil:
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				log.Info("consumer socket: dropped a connection that sent no request in time")
				return
			}
			log.WithError(err).Warn("consumer socket: bad request, connection closed")
			_ = wire.Write(c, failure(wire.KindInvalid, err.Error()))
			return
		case len(files) != req.Files || len(files) > 0 && req.Op != wire.OpAttach:
			closeAll(files)
			_ = wire.Write(c, failure(wire.KindInvalid, fmt.Sprintf("the frame carries %d descriptors and announces %d; only attach carries one", len(files), req.Files)))
			return
		}
		if first {
			_ = c.SetReadDeadline(time.Time{}) // the lease lasts as long as the connection
		}
		if req.V != wire.Version {
			_ = wire.Write(c, failure(wire.KindVersion, fmt.Sprintf("protocol version %d is not served; this agent speaks version %d", req.V, wire.Version)))
			return
		}
		err = cn.handle(ctx, req, files)
		closeAll(files) // the sealer keeps its own reference to attached memory
		if err != nil {
			log.WithError(err).Info("consumer socket: connection closed")
			return
		}
	}
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// handle answers one request; an error ends the connection.
func (cn *conn) handle(ctx context.Context, req wire.Request, files []*os.File) error {
	switch req.Op {
	case wire.OpAttach:
		return cn.attach(ctx, req, files)
	case wire.OpDetach:
		a, ok := cn.attached[req.ID]
		if !ok {
			return wire.Write(cn.c, failure(sealer.KindNotFound.String(), fmt.Sprintf("this connection attached no shard %q", req.ID)))
		}
		delete(cn.attached, req.ID)
		if _, err := a.Detach(ctx); err != nil {
			return wire.Write(cn.c, sealerFailure(err))
		}
		return wire.Write(cn.c, wire.Response{V: wire.Version, OK: true})
	case wire.OpOpen:
		return cn.open(ctx, req.ID)
	case wire.OpClose:
		l, ok := cn.leases[req.ID]
		if !ok {
			return wire.Write(cn.c, failure(sealer.KindNotFound.String(), fmt.Sprintf("this connection holds no lease on %q", req.ID)))
		}
		delete(cn.leases, req.ID)
		l.Close(ctx)
		return wire.Write(cn.c, wire.Response{V: wire.Version, OK: true})
	case wire.OpVerify:
		presented, err := sealer.ParseSeal(req.Seal)
		if err != nil {
			return wire.Write(cn.c, failure(wire.KindInvalid, err.Error()))
		}
		res, err := cn.s.cfg.Sealer.VerifySeal(ctx, presented)
		if err != nil && res.ShardID == "" {
			return wire.Write(cn.c, sealerFailure(err))
		}
		raw, merr := json.Marshal(res)
		if merr != nil {
			return merr
		}
		return wire.Write(cn.c, wire.Response{V: wire.Version, OK: true, Result: raw})
	}
	return wire.Write(cn.c, failure(wire.KindInvalid, fmt.Sprintf("unknown operation %q (want open, close, verify, attach or detach)", req.Op)))
}

func (cn *conn) open(ctx context.Context, id string) error {
	if _, held := cn.leases[id]; held {
		return wire.Write(cn.c, failure(sealer.KindExists.String(), fmt.Sprintf("this connection already holds a lease on %q", id)))
	}
	if len(cn.leases) >= cn.s.cfg.MaxLeasesPerConnection {
		return wire.Write(cn.c, failure(wire.KindTooMany, fmt.Sprintf("a connection holds at most %d leases", cn.s.cfg.MaxLeasesPerConnection)))
	}
	if err := sealer.CheckShardID(id); err != nil {
		return wire.Write(cn.c, failure(wire.KindInvalid, err.Error()))
	}
	l, err := cn.s.cfg.Sealer.Open(ctx, id, cn.who, func() { cn.c.Close() })
	if err != nil {
		return wire.Write(cn.c, sealerFailure(err))
	}
	defer l.File.Close()
	raw, err := json.Marshal(l.Seal)
	if err != nil {
		l.Close(ctx)
		return err
	}
	resp := wire.Response{V: wire.Version, OK: true, Seal: raw, Size: l.Seal.VRAMBytes, Memory: l.Memory, Files: 1,
		MappedSize: l.MappedSize, GPUUUID: l.GPUUUID}
	if err := wire.Write(cn.c, resp, l.File); err != nil {
		l.Close(ctx)
		return err
	}
	cn.leases[id] = l
	cn.log.WithField(logfield.ShardID, id).Info("consumer socket: shard opened")
	return nil
}

// attach seals the memory the request carries, in place, for as long as
// this connection stays open.
func (cn *conn) attach(ctx context.Context, req wire.Request, files []*os.File) error {
	sreq := sealer.AttachRequest{ID: req.ID, GPU: req.GPU, GPUUUID: req.GPUUUID, Size: req.Size, Offset: req.Offset,
		ExpectedSHA256: req.SHA256, ModelRef: req.ModelRef, Owner: cn.who}
	switch {
	case req.IPCHandle != "":
		h, err := sealer.ParseIPCHandle(req.IPCHandle)
		if err != nil || len(files) != 0 {
			return wire.Write(cn.c, failure(wire.KindInvalid, fmt.Sprintf("attach by CUDA IPC handle carries 128 hex digits and no descriptor (%d descriptors; %v)", len(files), err)))
		}
		sreq.IPCHandle = &h
	case len(files) != 1:
		return wire.Write(cn.c, failure(wire.KindInvalid, "attach carries the memory's descriptor (SCM_RIGHTS, files: 1) or a CUDA IPC handle (ipc_handle)"))
	default:
		sreq.Memory = files[0]
	}
	if len(cn.leases)+len(cn.attached) >= cn.s.cfg.MaxLeasesPerConnection {
		return wire.Write(cn.c, failure(wire.KindTooMany, fmt.Sprintf("a connection holds at most %d leases and attachments", cn.s.cfg.MaxLeasesPerConnection)))
	}
	a, err := cn.s.cfg.Sealer.Attach(ctx, sreq)
	if err != nil {
		return wire.Write(cn.c, sealerFailure(err))
	}
	raw, err := json.Marshal(a.Seal)
	if err != nil {
		_, _ = a.OwnerExited(ctx)
		return err
	}
	cn.attached[req.ID] = a
	cn.log.WithField(logfield.ShardID, req.ID).Info("consumer socket: memory attached and sealed")
	return wire.Write(cn.c, wire.Response{V: wire.Version, OK: true, Seal: raw, Size: a.Seal.VRAMBytes})
}

// closeAll ends the connection's leases and attachments (the consumer went
// away): attached shards are released, also when they failed.
func (cn *conn) closeAll(ctx context.Context) {
	for id, l := range cn.leases {
		l.Close(ctx)
		delete(cn.leases, id)
	}
	for id, a := range cn.attached {
		if _, err := a.OwnerExited(ctx); err != nil && sealer.KindOf(err) != sealer.KindNotFound {
			cn.log.WithError(err).WithField(logfield.ShardID, id).Warn("releasing memory whose owner went away failed")
		}
		delete(cn.attached, id)
	}
}
