// Package policy is the VRAM-only policy: a shard may only be sealed into
// plain device memory of a GPU that meets the configured requirements.
//
// At start-up, CheckStartup asks each GPU the agent will use, through the
// small GPU interface (implemented here for the simulated GPU and the CUDA
// backend), for its properties: the device must exist and answer, be a
// discrete GPU (not integrated with host memory), have at least the minimum
// compute capability and memory, have ECC enabled when required, and not be
// in MIG mode unless allowed. After each seal, CheckAllocation (the sealer's
// AllocationChecker) asks the driver about the sealed allocation: it must
// be device memory and not managed (unified) memory.
//
// Each violation emits audit.PolicyViolation (policy "vram_only", the
// violation and details, the GPU). By default the action is
// "sealing_blocked": the GPU gets no shards (Admit, the sealer's
// Admission, refuses it), Compliant reports it false for the
// vramseal_policy_compliant metric, and Ready fails so the agent is not
// ready, while the agent keeps running. With ExitOnViolation the action is
// "agent_stopped": the violation is returned as an *ExitError from
// CheckStartup (and signalled on Exit for violations found later), which the
// agent maps to exit status 3 (ExitCode).
//
// MIG mode comes from NVML, which the CUDA driver API does not expose: a
// CUDA device that is a MIG compute instance reports MIG enabled (its UUID
// differs from its GPU's), any other reports it unknown unless a MIGSource
// (the NVML access in internal/) is given. An unknown MIG mode is not a
// violation.
package policy
