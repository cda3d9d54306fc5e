// Package nvml is the one place vramseal talks to NVIDIA's management
// library (NVML, libnvidia-ml.so.1) through github.com/NVIDIA/go-nvml.
//
// The rest of the code sees two small interfaces, Library and Device, with
// only the calls vramseal makes, and a Client that gates every call on a
// successful Init: go-nvml kills the process ("symbol lookup error") when
// any NVML function is called after Init failed, so a Client exists only
// after Init succeeded, and every method of a closed Client returns
// ErrClosed without touching the library. Optional symbols (the _v2 memory
// query) are looked up before they are called.
//
// System returns the machine's NVML. It needs cgo on Linux; a build with
// CGO_ENABLED=0 (or the build tag nonvml) gets a stub whose Init reports
// ErrNotBuiltIn, so the agent still builds for the simulated GPU.
//
// Telemetry serves the metrics collector (memory, ECC, remapped rows,
// retired pages); Properties and PropertiesByUUID serve the VRAM-only
// policy (ECC and MIG modes). The policy's MIGSource is a few lines over a
// Client:
//
//	func (m nvmlMIG) MIGMode(ctx context.Context, uuid string) (policy.MIGMode, error) {
//		p, err := m.client.PropertiesByUUID(uuid)
//		switch {
//		case err != nil || !p.MIGSupported:
//			return policy.MIGUnknown, err
//		case p.MIGEnabled:
//			return policy.MIGEnabled, nil
//		}
//		return policy.MIGDisabled, nil
//	}
//
// Tests use a fake Library; TestLibraryMissingInRealProcess exercises the
// real library-missing path in a child process.
package nvml
