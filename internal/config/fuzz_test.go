package config

import (
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the loader: it must never panic, and
// every failure must be a *config.Error naming the file.
func FuzzParse(f *testing.F) {
	f.Add([]byte(full))
	f.Add([]byte("seal_secret_file: /k\n"))
	f.Add([]byte("seal_secret_file: /k\nverify: {interval: 5m\n"))
	f.Add([]byte("seal_secret_file: &a /k\nmodel_dirs: [*a]\n"))
	f.Add([]byte("shards: [{id: a, path: /m, gpu: -1}]\nseal_secret_file: /k"))
	f.Add([]byte("sim: {per_gpu: [{gpu: 0, integrated: ~}]}\nseal_secret_file: /k"))
	f.Add([]byte("<<: {device: sim}\n"))
	f.Add([]byte("verify: {jitter: .nan}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yml", data, testEnv)
		if err != nil {
			if !IsError(err) || !strings.HasPrefix(err.Error(), "fuzz.yml: ") {
				t.Fatalf("error %q is not a config error naming the file", err)
			}
			return
		}
		if c.SealSecretFile == "" || c.WorkerID == "" || c.Verify.Interval <= 0 {
			t.Fatalf("accepted an incomplete configuration: %+v", c)
		}
		for i := range c.Sim.GPUs {
			_, _ = c.Sim.GPU(i)
		}
		_ = c.DeclaredShards()
	})
}
