package simnode

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/sirupsen/logrus"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/collector"
	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/simgpu"
)

// Config says what the node holds.
type Config struct {
	Name     string // names the temporary folder, vramseal-<Name>-*
	WorkerID string
	GPUs     int    // simulated GPUs of 1 GiB each
	LeafSize uint64 // the sealer's leaf size; 0 leaves its default
	Shards   []Shard
}

// Shard is a file the node seals.
type Shard struct {
	ID       string
	GPU      int
	Data     []byte
	ModelRef string
}

// Node is a sealer on simulated GPUs with its shards sealed. Close removes
// its files.
type Node struct {
	Devices  []*simgpu.Device
	Sealer   *sealer.Sealer
	Observer *collector.Observer
	Counters *audit.Counters
	Recent   *audit.Recent  // the last audit events, as the agent keeps them
	Logger   *logrus.Logger // discards everything
	dir      string
}

// New starts the node and seals cfg.Shards, each from its own file.
func New(ctx context.Context, cfg Config) (*Node, error) {
	dir, err := os.MkdirTemp("", "vramseal-"+cfg.Name+"-")
	if err != nil {
		return nil, err
	}
	n := &Node{dir: dir}
	if err := n.start(ctx, cfg); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

func (n *Node) start(ctx context.Context, cfg Config) error {
	devs, err := simgpu.New(simgpu.Config{GPUs: cfg.GPUs, MemoryBytes: 1 << 30, Properties: simgpu.DefaultProperties()})
	if err != nil {
		return err
	}
	signer, err := sealer.NewSigner(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		return err
	}
	n.Devices = devs
	n.Logger = logrus.New()
	n.Logger.SetOutput(io.Discard)
	idx := make([]int, cfg.GPUs)
	for i := range idx {
		idx[i] = i
	}
	n.Observer = collector.NewObserver(idx)
	n.Counters = audit.NewCounters()
	n.Recent = audit.NewRecent(50)
	emitter := audit.Tee{Primary: audit.NewLogEmitter(n.Logger, n.Counters), Also: []audit.Emitter{n.Recent}}
	n.Sealer, err = sealer.New(sealer.Config{WorkerID: cfg.WorkerID, Devices: simgpu.Devices(devs), Signer: signer,
		Emitter: emitter, Observer: n.Observer, Logger: n.Logger, LeafSize: cfg.LeafSize})
	if err != nil {
		return err
	}
	for _, sh := range cfg.Shards {
		p := filepath.Join(n.dir, sh.ID)
		if err := os.WriteFile(p, sh.Data, 0o600); err != nil {
			return err
		}
		if _, err := n.Sealer.Seal(ctx, sealer.SealRequest{ID: sh.ID, Path: p, GPU: sh.GPU, ModelRef: sh.ModelRef}); err != nil {
			return fmt.Errorf("seal %s: %w", sh.ID, err)
		}
	}
	return nil
}

// Close removes the node's files.
func (n *Node) Close() { os.RemoveAll(n.dir) }
