package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/vramseal/vramseal/sealer"
)

// ErrUnreachable is wrapped by every error of a call that could not reach
// the agent (no socket, nobody listening, connection refused or dropped).
var ErrUnreachable = errors.New("agent unreachable")

// APIError is an error answer of the agent, on either socket.
type APIError struct {
	// Status is the HTTP status on the control socket (0 on the consumer
	// socket).
	Status int
	// Kind classifies it (ErrorResponse.Kind; on the consumer socket, the
	// kinds of docs/consumers.md).
	Kind    string
	Message string
}

func (e *APIError) Error() string { return e.Message }

// Control calls the control API over its Unix socket.
type Control struct {
	socket string
	http   *http.Client
	// TraceParent, when set, is sent as the W3C traceparent header so the
	// agent's audit records carry the caller's trace.
	TraceParent string
}

// NewControl returns a client of the agent listening on socket. timeout
// bounds each call (0: none).
func NewControl(socket string, timeout time.Duration) *Control {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableCompression: true,
	}
	return &Control{socket: socket, http: &http.Client{Transport: tr, Timeout: timeout}}
}

// CloseIdleConnections closes the connections kept open between calls.
func (c *Control) CloseIdleConnections() { c.http.CloseIdleConnections() }

// do sends a request and decodes a 2xx answer into out.
func (c *Control) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		if raw, ok := body.(json.RawMessage); ok {
			rd = bytes.NewReader(raw)
		} else {
			b, err := json.Marshal(body)
			if err != nil {
				return err
			}
			rd = bytes.NewReader(b)
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://vramseal"+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.TraceParent != "" {
		req.Header.Set("traceparent", c.TraceParent)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		return fmt.Errorf("%w: %s: %v", ErrUnreachable, c.socket, unwrapURLErr(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%w: reading the answer: %v", ErrUnreachable, err)
	}
	if resp.StatusCode/100 != 2 {
		var e ErrorResponse
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("agent answered %s", resp.Status)
		}
		return &APIError{Status: resp.StatusCode, Kind: e.Kind, Message: e.Error}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("agent's answer: %w", err)
		}
	}
	return nil
}

func unwrapURLErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// Status returns the agent's status.
func (c *Control) Status(ctx context.Context) (Status, error) {
	var s Status
	return s, c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
}

// Seal asks the agent to seal a file.
func (c *Control) Seal(ctx context.Context, req SealRequest) (sealer.Seal, error) {
	var r SealResponse
	return r.Seal, c.do(ctx, http.MethodPost, "/v1/shards", req, &r)
}

// List returns the sealed shards.
func (c *Control) List(ctx context.Context) ([]Shard, error) {
	var r ListResponse
	return r.Shards, c.do(ctx, http.MethodGet, "/v1/shards", nil, &r)
}

// Shard returns one shard.
func (c *Control) Shard(ctx context.Context, id string) (Shard, error) {
	var r Shard
	return r, c.do(ctx, http.MethodGet, "/v1/shards/"+url.PathEscape(id), nil, &r)
}

// Verify verifies one shard now.
func (c *Control) Verify(ctx context.Context, id string) (VerifyResponse, error) {
	var r VerifyResponse
	return r, c.do(ctx, http.MethodPost, "/v1/shards/"+url.PathEscape(id)+"/verify", nil, &r)
}

// VerifyAll verifies every shard now.
func (c *Control) VerifyAll(ctx context.Context) (VerifyResponse, error) {
	var r VerifyResponse
	return r, c.do(ctx, http.MethodPost, "/v1/verify/all", nil, &r)
}

// VerifySeal verifies a presented seal record (JSON, as `seal -o json`
// printed it).
func (c *Control) VerifySeal(ctx context.Context, record []byte) (VerifyResponse, error) {
	var r VerifyResponse
	return r, c.do(ctx, http.MethodPost, "/v1/verify/seal", json.RawMessage(record), &r)
}

// Release releases a shard.
// A shard that consumers hold is refused (kind busy, naming them) unless
// force, which revokes their leases.
func (c *Control) Release(ctx context.Context, id string, force bool) (sealer.ReleaseResult, error) {
	var r sealer.ReleaseResult
	path := "/v1/shards/" + url.PathEscape(id)
	if force {
		path += "?force=true"
	}
	return r, c.do(ctx, http.MethodDelete, path, nil, &r)
}

// Debug calls a debug endpoint ("corrupt", "ecc", "gpu-lost",
// "gpu-restored", "fail-reads") with its request.
func (c *Control) Debug(ctx context.Context, name string, req any) (map[string]any, error) {
	var r map[string]any
	return r, c.do(ctx, http.MethodPost, "/v1/debug/"+name, req, &r)
}
