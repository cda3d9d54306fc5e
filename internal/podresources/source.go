package podresources

import (
	"context"

	"github.com/vramseal/vramseal/collector"
)

// Source is the collector's pod source: it lists the pods at each
// telemetry read.
type Source struct {
	c *Client
}

var _ collector.PodSource = (*Source)(nil)

// NewSource returns a pod source asking c.
func NewSource(c *Client) *Source { return &Source{c: c} }

// GPUPods implements collector.PodSource.
func (s *Source) GPUPods(ctx context.Context) ([]collector.GPUPod, error) {
	pods, err := s.c.List(ctx)
	if err != nil {
		return nil, err
	}
	as := Assignments(pods)
	out := make([]collector.GPUPod, 0, len(as))
	for _, a := range as {
		p := collector.GPUPod{Namespace: a.Namespace, Pod: a.Pod, Container: a.Container, UUID: a.GPU.UUID, Index: a.GPU.Index, All: a.GPU.All}
		if a.GPU.MIG && a.GPU.UUID == "" {
			// A MIG device named by index: the whole GPU it is on.
			p.Index = a.GPU.Index
		}
		out = append(out, p)
	}
	return out, nil
}
