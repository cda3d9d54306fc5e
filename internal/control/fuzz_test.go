package control

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sirupsen/logrus/hooks/test"

	"github.com/vramseal/vramseal/client"
	"github.com/vramseal/vramseal/sealer/simgpu"
)

// FuzzDecodeJSON: any body gives a decoded request or a 400/413 with a
// message; never a panic.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{`{"id":"a","path":"/m/a","gpu":1}`, `{"id":"a","offset":5,"bit":1}`, `null`, `[]`, `{"id":`, "\xff", `{"id":"a"} x`, `{"gpu":1e400}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, v := range []any{&client.SealRequest{}, &client.CorruptRequest{}, &client.ECCRequest{}, &client.FailReadsRequest{}} {
			status, kind, err := DecodeJSON(bytes.NewReader(data), v)
			if err == nil {
				if !json.Valid(data) {
					t.Fatalf("accepted invalid JSON %q", data)
				}
				continue
			}
			if status != http.StatusBadRequest && status != http.StatusRequestEntityTooLarge || kind == "" || err.Error() == "" {
				t.Fatalf("%q: status %d kind %q err %v", data, status, kind, err)
			}
		}
	})
}

// FuzzHandler sends arbitrary bodies to the endpoints that take one, on a
// real sealer with simulated GPUs: every answer is JSON with a status the
// API documents.
func FuzzHandler(f *testing.F) {
	fx := newFixture(f, 4<<20, Access{}, true)
	log, _ := test.NewNullLogger()
	srv, err := NewServer(Config{Sealer: fx.sealer, ModelDirs: []string{fx.models}, Faults: simgpu.Faults{Shards: fx.sealer, Devices: fx.devs}, Logger: log})
	if err != nil {
		f.Fatal(err)
	}
	h := srv.Handler()
	for _, s := range []string{`{"id":"a","path":"/etc/passwd"}`, `{"id":"a","offset":1}`, `{"gpu":0,"on":true}`, `{"shard_id":"a","signature":"hmac-sha256:00"}`, `garbage`} {
		f.Add(0, []byte(s))
	}
	paths := []string{"/v1/shards", "/v1/verify/seal", "/v1/debug/corrupt", "/v1/debug/ecc", "/v1/debug/fail-reads", "/v1/debug/gpu-lost"}
	f.Fuzz(func(t *testing.T, which int, body []byte) {
		path := paths[uint(which)%uint(len(paths))]
		if path == "/v1/debug/gpu-lost" || path == "/v1/debug/fail-reads" {
			defer func() {
				for _, d := range fx.devs {
					d.SetLost(false)
					d.SetFailReads(false)
				}
			}()
		}
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		req = req.WithContext(withPeer(context.Background(), Peer{UID: 0}, nil))
		rw := httptest.NewRecorder()
		h.ServeHTTP(rw, req)
		switch rw.Code {
		case 200, 201, 400, 403, 404, 409, 413, 422, 502, 507:
		default:
			t.Fatalf("%s %q: status %d", path, body, rw.Code)
		}
		if !json.Valid(rw.Body.Bytes()) {
			t.Fatalf("%s %q: answer is not JSON: %q", path, body, rw.Body.String())
		}
	})
}
