package main

import (
	"fmt"

	"github.com/sirupsen/logrus"
	"github.com/vramseal/vramseal/internal/logfield"
)

// The CUDA driver numbers GPUs fastest first unless CUDA_DEVICE_ORDER says
// PCI_BUS_ID; NVML (the GPU metrics, the policy) always numbers them in PCI
// bus order. The agent needs both to agree, or a shard declared on GPU 1 is
// sealed on the GPU that the metrics call 0.
const (
	envCUDADeviceOrder = "CUDA_DEVICE_ORDER"
	cudaOrderPCIBusID  = "PCI_BUS_ID"
)

// setCUDADeviceOrder sets CUDA_DEVICE_ORDER=PCI_BUS_ID for this process when
// it is unset, saying so in the log; it must run before the CUDA driver is
// loaded, which reads the variable once, at cuInit. A value set by the
// operator is kept; one other than PCI_BUS_ID is warned about.
func setCUDADeviceOrder(getenv func(string) string, setenv func(string, string) error, log logrus.FieldLogger) error {
	switch v := getenv(envCUDADeviceOrder); v {
	case cudaOrderPCIBusID:
		return nil
	case "":
		if err := setenv(envCUDADeviceOrder, cudaOrderPCIBusID); err != nil {
			return fmt.Errorf("set %s: %w", envCUDADeviceOrder, err)
		}
		log.WithFields(logrus.Fields{logfield.Env: envCUDADeviceOrder, logfield.Value: cudaOrderPCIBusID}).
			Info("CUDA_DEVICE_ORDER was unset: set to PCI_BUS_ID so that CUDA ordinals (shards) and NVML indexes (GPU metrics) name the same GPUs")
	default:
		log.WithFields(logrus.Fields{logfield.Env: envCUDADeviceOrder, logfield.Value: v}).
			Warn("CUDA_DEVICE_ORDER is not PCI_BUS_ID: the GPU a shard names (a CUDA ordinal) may not be the GPU of the same index in the GPU metrics (NVML)")
	}
	return nil
}
