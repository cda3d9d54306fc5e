package podresources

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// ListMethod is the kubelet's pod-resources List call.
const ListMethod = "/v1.PodResourcesLister/List"

// maxResponseBytes bounds a List response (the kubelet's own limit is
// 16 MiB).
const maxResponseBytes = 16 << 20

// Client asks the kubelet's pod-resources socket. It is safe for
// concurrent use; Close ends it.
type Client struct {
	conn *grpc.ClientConn
}

// New returns a client of the pod-resources socket at path (an absolute
// path). It does not connect until the first List.
func New(path string) (*Client, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("pod-resources socket %q: not an absolute path", path)
	}
	conn, err := grpc.NewClient("unix://"+path,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxResponseBytes), grpc.ForceCodec(Codec{})))
	if err != nil {
		return nil, fmt.Errorf("pod-resources socket %s: %w", path, err)
	}
	return &Client{conn: conn}, nil
}

// List returns every pod with its containers' devices. ctx bounds the call.
func (c *Client) List(ctx context.Context) ([]Pod, error) {
	var resp Raw
	if err := c.conn.Invoke(ctx, ListMethod, &Raw{}, &resp); err != nil {
		return nil, fmt.Errorf("pod-resources List: %w", err)
	}
	pods, err := decodeList(resp)
	if err != nil {
		return nil, fmt.Errorf("pod-resources List: decoding the response: %w", err)
	}
	return pods, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Raw is a protobuf message as its encoded bytes.
type Raw []byte

// Codec is the gRPC codec of Raw messages, sent as "proto" (the bytes are
// protobuf; wire.go encodes and decodes them).
type Codec struct{}

// Marshal implements encoding.Codec.
func (Codec) Marshal(v any) ([]byte, error) {
	r, ok := v.(*Raw)
	if !ok {
		return nil, fmt.Errorf("podresources codec: cannot marshal %T", v)
	}
	return *r, nil
}

// Unmarshal implements encoding.Codec.
func (Codec) Unmarshal(data []byte, v any) error {
	r, ok := v.(*Raw)
	if !ok {
		return errors.New("podresources codec: can only unmarshal into *Raw")
	}
	*r = append((*r)[:0], data...)
	return nil
}

// Name implements encoding.Codec.
func (Codec) Name() string { return "proto" }
