package policy_test

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/sirupsen/logrus"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/policy"
	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/simgpu"
)

// The agent's wiring: build the policy over its GPUs, check them at
// start-up, then hand the policy to the sealer as its Admission and
// AllocationChecker (sealer.Config) and export Compliant as a metric.
func Example() {
	gpus, _ := simgpu.New(simgpu.Config{GPUs: 2, MemoryBytes: 8 << 30,
		Properties: simgpu.DefaultProperties(),
		PerGPU:     map[int]sealer.GPUProperties{1: {Integrated: true, Compute: sealer.ComputeCapability{Major: 8, Minor: 7}, MIG: sealer.MIGDisabled}}})
	log := logrus.New()
	log.SetOutput(io.Discard)
	rec := &audit.Recorder{}
	p, err := policy.New(policy.Config{MinMemoryBytes: 1 << 30, MinComputeCapability: "6.0", AllowMIG: true},
		policy.Deps{GPUs: policy.GPUsOf(gpus), Emitter: rec, WorkerID: "node-a", Logger: log})
	if err != nil {
		panic(err)
	}
	if err := p.CheckStartup(context.Background(), nil); err != nil {
		var exit *policy.ExitError
		if errors.As(err, &exit) {
			fmt.Println("exit status", exit.ExitCode())
		}
	}
	for _, ev := range rec.Named(audit.NamePolicyViolation) {
		v := ev.(audit.PolicyViolation)
		fmt.Println(v.GPUDevice, v.Violation, v.ActionTaken)
	}
	fmt.Println(p.Compliant())
	fmt.Println(p.Admit(context.Background(), 1))
	// Output:
	// 1 integrated_gpu sealing_blocked
	// map[0:true 1:false]
	// GPU 1 is blocked by the vram_only policy: integrated_gpu: vramseal simulated GPU is an integrated GPU sharing host memory
}
