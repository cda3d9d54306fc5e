package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"time"

	"github.com/sirupsen/logrus"
	"go.opentelemetry.io/otel/propagation"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/client"
	"github.com/vramseal/vramseal/internal/logfield"
	"github.com/vramseal/vramseal/sealer"
)

// Sealer is what the API drives; *sealer.Sealer implements it.
type Sealer interface {
	Seal(ctx context.Context, req sealer.SealRequest) (sealer.Seal, error)
	List() []sealer.ShardStatus
	Shard(id string) (sealer.ShardStatus, error)
	Verify(ctx context.Context, id string) (sealer.VerifyResult, error)
	VerifyAll(ctx context.Context) ([]sealer.VerifyResult, error)
	VerifySeal(ctx context.Context, presented sealer.Seal) (sealer.VerifyResult, error)
	Release(ctx context.Context, id string) (sealer.ReleaseResult, error)
	ForceRelease(ctx context.Context, id string) (sealer.ReleaseResult, error)
}

// Faults injects faults into the simulated GPU: what the debug endpoints
// drive. The agent gives one only for device: sim; without it every debug
// endpoint is refused (409). Errors for an unknown GPU wrap sealer.ErrNoDevice;
// Corrupt's errors are sealer errors (unknown shard, bad offset).
// Implementations must be safe for concurrent use.
type Faults interface {
	// Corrupt flips bit (0–7) of the byte at offset of a sealed shard.
	Corrupt(ctx context.Context, id string, offset uint64, bit uint) error
	// AddECC adds ECC errors to a GPU and returns its new totals.
	AddECC(ctx context.Context, gpu int, corrected, uncorrected uint64) (totalCorrected, totalUncorrected uint64, err error)
	// SetLost makes a GPU disappear (lost) or come back.
	SetLost(ctx context.Context, gpu int, lost bool) error
	// SetFailReads makes every read of a GPU fail, or not.
	SetFailReads(ctx context.Context, gpu int, on bool) error
}

var _ Sealer = (*sealer.Sealer)(nil)

// Config is what a Server is built from.
type Config struct {
	// Sealer is required.
	Sealer Sealer
	// Faults are the simulated GPU's fault switches; nil when the agent
	// runs on real GPUs, and then every debug endpoint is refused.
	Faults Faults
	// ModelDirs are the directories seal requests may name files under.
	ModelDirs []string
	// Access says who may call besides root.
	Access Access
	// Status describes the agent for GET /v1/status (optional).
	Status func() client.Status
	// NextDue tells when a shard is next verified (optional).
	NextDue func(id string) (time.Time, bool)
	// Progress makes the progress callback of a seal (optional).
	Progress func(id string) func(done, total uint64)
	// OnChange is called after a seal or release (optional).
	OnChange func()
	// RateLimit bounds each calling uid's calls (off when zero).
	RateLimit RateLimit
	// Observer counts refused calls (optional).
	Observer Observer
	// Emitter receives the audit event of the first refusal of each burst
	// (optional); WorkerID is put on it.
	Emitter  audit.Emitter
	WorkerID string
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Logger is the operational log (logrus standard logger when nil).
	Logger logrus.FieldLogger
}

// Server serves the control API.
type Server struct {
	cfg    Config
	log    logrus.FieldLogger
	prop   propagation.TraceContext
	mux    *http.ServeMux
	now    func() time.Time
	limits *callerLimits // nil: no rate limit
}

// NewServer returns a Server.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Sealer == nil {
		return nil, errors.New("control: a sealer is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = logrus.StandardLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), now: cfg.Now}
	if rl := cfg.RateLimit; rl.On() {
		if math.IsNaN(rl.RequestsPerSecond) || math.IsInf(rl.RequestsPerSecond, 0) || rl.Burst < 0 {
			return nil, fmt.Errorf("control: rate limit %g/s burst %d: want a finite rate and a burst from 0", rl.RequestsPerSecond, rl.Burst)
		}
		s.limits = newCallerLimits(rl, cfg.Now)
	}
	s.mux.HandleFunc("GET /v1/status", s.status)
	s.mux.HandleFunc("GET /v1/shards", s.list)
	s.mux.HandleFunc("POST /v1/shards", s.seal)
	s.mux.HandleFunc("GET /v1/shards/{id}", s.shard)
	s.mux.HandleFunc("DELETE /v1/shards/{id}", s.release)
	s.mux.HandleFunc("POST /v1/shards/{id}/verify", s.verifyOne)
	s.mux.HandleFunc("POST /v1/verify/all", s.verifyAll)
	s.mux.HandleFunc("POST /v1/verify/seal", s.verifySeal)
	s.mux.HandleFunc("POST /v1/debug/corrupt", s.debugCorrupt)
	s.mux.HandleFunc("POST /v1/debug/ecc", s.debugECC)
	s.mux.HandleFunc("POST /v1/debug/gpu-lost", s.debugLost(true))
	s.mux.HandleFunc("POST /v1/debug/gpu-restored", s.debugLost(false))
	s.mux.HandleFunc("POST /v1/debug/fail-reads", s.debugFailReads)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path))
	})
	return s, nil
}

// idleTimeout closes a control connection idle this long between calls.
const idleTimeout = 30 * time.Second

// Serve serves on ln until ctx ends, then shuts down (requests in flight
// get up to 5s) and returns nil.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		// A client that keeps connections open between calls holds a
		// goroutine and a descriptor each; idle ones are closed.
		IdleTimeout: idleTimeout,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			p, err := PeerOf(c)
			return withPeer(ctx, p, err)
		},
		// Requests run under ctx: at shutdown, seals and verifications in
		// flight are cancelled, so none completes after the agent has
		// released its shards.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("control API: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-errc
	return nil
}

// Handler is the API with the access check and trace extraction in front.
// Requests must come through Serve (which records the peer).
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := peerFrom(r.Context())
		fields := logrus.Fields{logfield.Method: r.Method, logfield.Path: r.URL.Path}
		if err != nil {
			s.log.WithFields(fields).WithError(err).Warn("control API call refused: the caller's credentials are unknown")
			writeError(w, http.StatusForbidden, client.KindForbidden, "the caller's credentials could not be read")
			return
		}
		fields[logfield.PeerUID], fields[logfield.PeerGID], fields[logfield.PeerPID] = p.UID, p.GID, p.PID
		ok, why := s.cfg.Access.Allow(p)
		if !ok {
			s.log.WithFields(fields).WithField(logfield.Why, why).Warn("control API call refused")
			writeError(w, http.StatusForbidden, client.KindForbidden, "not allowed: "+why)
			return
		}
		if s.rateLimited(w, r, p, fields) {
			return
		}
		ctx := s.prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		caller := p.Caller(ProcReader{}) // read once per request
		ctx = audit.WithCause(ctx, audit.Cause{Kind: audit.CauseAPI, Caller: &caller})
		rw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		s.mux.ServeHTTP(rw, r.WithContext(ctx))
		if r.Method != http.MethodGet {
			s.log.WithFields(fields).WithField(logfield.Status, rw.status).Info("control API call")
		}
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, kind, msg string) {
	writeJSON(w, status, client.ErrorResponse{Error: msg, Kind: kind})
}

// writeSealerError maps a sealer error to a status.
func writeSealerError(w http.ResponseWriter, err error) {
	status, kind := http.StatusInternalServerError, client.KindInternal
	switch k := sealer.KindOf(err); k {
	case sealer.KindInvalid:
		status, kind = http.StatusBadRequest, k.String()
	case sealer.KindNotFound:
		status, kind = http.StatusNotFound, k.String()
	case sealer.KindExists:
		status, kind = http.StatusConflict, k.String()
	case sealer.KindInsufficientVRAM:
		status, kind = http.StatusInsufficientStorage, k.String()
	case sealer.KindDevice:
		status, kind = http.StatusBadGateway, k.String()
	case sealer.KindIntegrity:
		status, kind = http.StatusUnprocessableEntity, k.String()
	case sealer.KindPolicy:
		status, kind = http.StatusForbidden, k.String()
	case sealer.KindCancelled:
		status, kind = http.StatusServiceUnavailable, k.String()
	case sealer.KindBusy:
		status, kind = http.StatusConflict, k.String()
	}
	writeJSON(w, status, client.ErrorResponse{Error: err.Error(), Kind: kind, Retryable: sealer.IsRetryable(err)})
}

// DecodeJSON decodes one JSON object from r (at most client.MaxBodyBytes) into v,
// refusing unknown fields and trailing data. It returns the HTTP status and
// error kind to answer with when it fails.
func DecodeJSON(r io.Reader, v any) (int, string, error) {
	data, err := io.ReadAll(io.LimitReader(r, client.MaxBodyBytes+1))
	if err != nil {
		return http.StatusBadRequest, client.KindInvalid, fmt.Errorf("reading the request body: %w", err)
	}
	if len(data) > client.MaxBodyBytes {
		return http.StatusRequestEntityTooLarge, client.KindTooLarge, fmt.Errorf("request body is larger than %d bytes", client.MaxBodyBytes)
	}
	if err := decodeStrict(data, v); err != nil {
		return http.StatusBadRequest, client.KindInvalid, err
	}
	return 0, "", nil
}

func decodeStrict(data []byte, v any) error {
	if !json.Valid(data) {
		var probe any
		err := json.Unmarshal(data, &probe)
		return fmt.Errorf("request body is not JSON: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("request body: %w", err)
	}
	return nil
}

// decode reads the request body into v, answering the error itself; it
// reports whether to go on.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	status, kind, err := DecodeJSON(r.Body, v)
	if err != nil {
		writeError(w, status, kind, err.Error())
		return false
	}
	return true
}

func (s *Server) changed() {
	if s.cfg.OnChange != nil {
		s.cfg.OnChange()
	}
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Status == nil {
		writeJSON(w, http.StatusOK, client.Status{Shards: len(s.cfg.Sealer.List())})
		return
	}
	writeJSON(w, http.StatusOK, s.cfg.Status())
}

func (s *Server) withDue(st sealer.ShardStatus) client.Shard {
	out := client.Shard{ShardStatus: st}
	if s.cfg.NextDue != nil {
		if t, ok := s.cfg.NextDue(st.Seal.ShardID); ok {
			out.NextVerificationAt = t
		}
	}
	return out
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	resp := client.ListResponse{Shards: []client.Shard{}}
	for _, st := range s.cfg.Sealer.List() {
		resp.Shards = append(resp.Shards, s.withDue(st))
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) shard(w http.ResponseWriter, r *http.Request) {
	st, err := s.cfg.Sealer.Shard(r.PathValue("id"))
	if err != nil {
		writeSealerError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.withDue(st))
}

func (s *Server) seal(w http.ResponseWriter, r *http.Request) {
	var req client.SealRequest
	if !decode(w, r, &req) {
		return
	}
	if err := sealer.CheckShardID(req.ID); err != nil {
		writeError(w, http.StatusBadRequest, client.KindInvalid, err.Error())
		return
	}
	file, path, err := OpenModelFile(s.cfg.ModelDirs, req.Path)
	if err != nil {
		writeError(w, http.StatusForbidden, client.KindForbidden, "seal "+req.ID+": "+err.Error())
		return
	}
	defer file.Close()
	sreq := sealer.SealRequest{ID: req.ID, Path: path, File: file, GPU: req.GPU, ExpectedSHA256: req.SHA256, ModelRef: req.ModelRef, LeafSize: req.LeafSize}
	if s.cfg.Progress != nil {
		sreq.Progress = s.cfg.Progress(req.ID)
	}
	seal, err := s.cfg.Sealer.Seal(r.Context(), sreq)
	if err != nil {
		writeSealerError(w, err)
		return
	}
	s.changed()
	writeJSON(w, http.StatusCreated, client.SealResponse{Seal: seal})
}

func (s *Server) release(w http.ResponseWriter, r *http.Request) {
	release := s.cfg.Sealer.Release
	switch r.URL.Query().Get("force") {
	case "", "false":
	case "true":
		release = s.cfg.Sealer.ForceRelease
	default:
		writeError(w, http.StatusBadRequest, client.KindInvalid, "force: want true or false")
		return
	}
	res, err := release(r.Context(), r.PathValue("id"))
	if err != nil {
		writeSealerError(w, err)
		return
	}
	s.changed()
	writeJSON(w, http.StatusOK, res)
}

// verified answers a verification: 200 with the results whether or not
// the shards are intact; 404 and the like only when nothing was verified.
func verified(w http.ResponseWriter, results []sealer.VerifyResult, err error) {
	if len(results) == 0 && err != nil {
		writeSealerError(w, err)
		return
	}
	resp := client.VerifyResponse{Intact: true, Results: results}
	if resp.Results == nil {
		resp.Results = []sealer.VerifyResult{}
	}
	for _, r := range results {
		if !r.Intact() {
			resp.Intact = false
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) verifyOne(w http.ResponseWriter, r *http.Request) {
	res, err := s.cfg.Sealer.Verify(r.Context(), r.PathValue("id"))
	if sealer.KindOf(err) == sealer.KindNotFound {
		writeSealerError(w, err)
		return
	}
	verified(w, []sealer.VerifyResult{res}, err)
}

func (s *Server) verifyAll(w http.ResponseWriter, r *http.Request) {
	res, err := s.cfg.Sealer.VerifyAll(r.Context())
	if len(res) == 0 {
		err = nil // nothing sealed: nothing failed
	}
	verified(w, res, err)
}

func (s *Server) verifySeal(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(io.LimitReader(r.Body, client.MaxBodyBytes+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, client.KindInvalid, "reading the request body: "+err.Error())
		return
	}
	if len(data) > client.MaxBodyBytes {
		writeError(w, http.StatusRequestEntityTooLarge, client.KindTooLarge, fmt.Sprintf("request body is larger than %d bytes", client.MaxBodyBytes))
		return
	}
	if !json.Valid(data) {
		writeError(w, http.StatusBadRequest, client.KindInvalid, "request body is not JSON (want a seal record)")
		return
	}
	presented, err := sealer.ParseSeal(data)
	if err != nil {
		writeError(w, http.StatusBadRequest, client.KindInvalid, err.Error())
		return
	}
	res, err := s.cfg.Sealer.VerifySeal(r.Context(), presented)
	verified(w, []sealer.VerifyResult{res}, err)
}

// faults returns the fault switches, or answers the refusal.
func (s *Server) faults(w http.ResponseWriter) Faults {
	if s.cfg.Faults == nil {
		writeError(w, http.StatusConflict, client.KindNotSimulated, "debug switches work only on the simulated GPU (device: sim)")
	}
	return s.cfg.Faults
}

// faultFailed answers a fault switch's error: 404 for an unknown GPU.
func faultFailed(w http.ResponseWriter, err error) {
	if errors.Is(err, sealer.ErrNoDevice) {
		writeError(w, http.StatusNotFound, "not_found", err.Error())
		return
	}
	writeSealerError(w, err)
}

func (s *Server) debugCorrupt(w http.ResponseWriter, r *http.Request) {
	var req client.CorruptRequest
	if !decode(w, r, &req) {
		return
	}
	f := s.faults(w)
	if f == nil {
		return
	}
	if err := f.Corrupt(r.Context(), req.ID, req.Offset, req.Bit); err != nil {
		faultFailed(w, err)
		return
	}
	s.log.WithFields(logrus.Fields{logfield.ShardID: req.ID, logfield.Offset: req.Offset, logfield.Bit: req.Bit}).
		Warn("debug: flipped a bit of a sealed shard in simulated VRAM")
	writeJSON(w, http.StatusOK, map[string]any{"shard_id": req.ID, "offset": req.Offset, "bit": req.Bit})
}

func (s *Server) debugECC(w http.ResponseWriter, r *http.Request) {
	var req client.ECCRequest
	if !decode(w, r, &req) {
		return
	}
	f := s.faults(w)
	if f == nil {
		return
	}
	corrected, uncorrected, err := f.AddECC(r.Context(), req.GPU, req.Correctable, req.Uncorrectable)
	if err != nil {
		faultFailed(w, err)
		return
	}
	s.log.WithFields(logrus.Fields{logfield.GPU: req.GPU, logfield.Correctable: req.Correctable, logfield.Uncorrectable: req.Uncorrectable}).
		Warn("debug: added ECC errors to a simulated GPU")
	writeJSON(w, http.StatusOK, map[string]any{"gpu": req.GPU, "ecc_corrected": corrected, "ecc_uncorrected": uncorrected})
}

func (s *Server) debugLost(lost bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req client.GPURequest
		if !decode(w, r, &req) {
			return
		}
		f := s.faults(w)
		if f == nil {
			return
		}
		if err := f.SetLost(r.Context(), req.GPU, lost); err != nil {
			faultFailed(w, err)
			return
		}
		s.log.WithFields(logrus.Fields{logfield.GPU: req.GPU, logfield.Lost: lost}).Warn("debug: simulated GPU lost or restored")
		writeJSON(w, http.StatusOK, map[string]any{"gpu": req.GPU, "lost": lost})
	}
}

func (s *Server) debugFailReads(w http.ResponseWriter, r *http.Request) {
	var req client.FailReadsRequest
	if !decode(w, r, &req) {
		return
	}
	f := s.faults(w)
	if f == nil {
		return
	}
	if err := f.SetFailReads(r.Context(), req.GPU, req.On); err != nil {
		faultFailed(w, err)
		return
	}
	s.log.WithFields(logrus.Fields{logfield.GPU: req.GPU, logfield.On: req.On}).Warn("debug: simulated GPU read failures switched")
	writeJSON(w, http.StatusOK, map[string]any{"gpu": req.GPU, "fail_reads": req.On})
}
