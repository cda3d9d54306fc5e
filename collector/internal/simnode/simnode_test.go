package simnode

import (
	"context"
	"os"
	"testing"
)

func TestNewSealsEveryShardAndCloseRemovesTheFiles(t *testing.T) {
	n, err := New(context.Background(), Config{Name: "simnode-test", WorkerID: "node-a", GPUs: 2, LeafSize: 4096, Shards: []Shard{
		{ID: "a", GPU: 0, Data: []byte("weights a")},
		{ID: "b", GPU: 1, Data: []byte("weights b"), ModelRef: "org/model@rev"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(n.Devices) != 2 {
		t.Errorf("%d devices, want 2", len(n.Devices))
	}
	gpus := map[string]int{}
	for _, s := range n.Sealer.List() {
		gpus[s.Seal.ShardID] = s.Seal.GPUDevice
	}
	if len(gpus) != 2 || gpus["a"] != 0 || gpus["b"] != 1 {
		t.Errorf("sealed shards by GPU: %v, want a on 0 and b on 1", gpus)
	}
	n.Close()
	if _, err := os.Stat(n.dir); !os.IsNotExist(err) {
		t.Errorf("Close left %s: %v", n.dir, err)
	}
}

func TestNewFailsOnAShardForAMissingGPU(t *testing.T) {
	_, err := New(context.Background(), Config{Name: "simnode-test", WorkerID: "node-a", GPUs: 1, Shards: []Shard{{ID: "a", GPU: 3, Data: []byte("x")}}})
	if err == nil {
		t.Fatal("New sealed a shard on GPU 3 of a one-GPU node")
	}
}
