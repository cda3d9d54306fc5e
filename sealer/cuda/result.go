package cuda

import (
	"fmt"

	"github.com/vramseal/vramseal/sealer"
)

// Result is a CUDA driver API return code (CUresult). A non-zero Result is
// an error whose message names the code.
type Result int32

// Results the binding refers to by name (cuda.h, CUDA 13).
const (
	Success                   Result = 0
	ResultInvalidValue        Result = 1
	ResultOutOfMemory         Result = 2
	ResultNotInitialized      Result = 3
	ResultDeinitialized       Result = 4
	ResultStubLibrary         Result = 34
	ResultDeviceUnavailable   Result = 46
	ResultNoDevice            Result = 100
	ResultInvalidDevice       Result = 101
	ResultInvalidContext      Result = 201
	ResultECCUncorrectable    Result = 214
	ResultInvalidPTX          Result = 218
	ResultNVLinkUncorrectable Result = 220
	ResultNotFound            Result = 500
	ResultIllegalAddress      Result = 700
	ResultLaunchTimeout       Result = 702
	ResultContextIsDestroyed  Result = 709
	ResultAssert              Result = 710
	ResultHardwareStackError  Result = 714
	ResultIllegalInstruction  Result = 715
	ResultMisalignedAddress   Result = 716
	ResultInvalidAddressSpace Result = 717
	ResultInvalidPC           Result = 718
	ResultLaunchFailed        Result = 719
	ResultNotPermitted        Result = 800
	ResultNotSupported        Result = 801
	ResultUnknown             Result = 999
)

// resultNames maps the driver's codes (cuda.h, CUDA 13) to their names and
// meanings.
var resultNames = map[Result][2]string{
	0:   {"CUDA_SUCCESS", "no error"},
	1:   {"CUDA_ERROR_INVALID_VALUE", "invalid argument"},
	2:   {"CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
	3:   {"CUDA_ERROR_NOT_INITIALIZED", "driver not initialized"},
	4:   {"CUDA_ERROR_DEINITIALIZED", "driver shutting down"},
	5:   {"CUDA_ERROR_PROFILER_DISABLED", "profiler disabled"},
	34:  {"CUDA_ERROR_STUB_LIBRARY", "the CUDA driver is a stub library"},
	46:  {"CUDA_ERROR_DEVICE_UNAVAILABLE", "device unavailable"},
	100: {"CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
	101: {"CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
	102: {"CUDA_ERROR_DEVICE_NOT_LICENSED", "device not licensed"},
	200: {"CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"},
	201: {"CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
	202: {"CUDA_ERROR_CONTEXT_ALREADY_CURRENT", "context already current"},
	205: {"CUDA_ERROR_MAP_FAILED", "mapping of buffer object failed"},
	206: {"CUDA_ERROR_UNMAP_FAILED", "unmapping of buffer object failed"},
	209: {"CUDA_ERROR_NO_BINARY_FOR_GPU", "no kernel image is available for execution on the device"},
	214: {"CUDA_ERROR_ECC_UNCORRECTABLE", "uncorrectable ECC error encountered"},
	216: {"CUDA_ERROR_CONTEXT_ALREADY_IN_USE", "context already in use"},
	218: {"CUDA_ERROR_INVALID_PTX", "a PTX JIT compilation failed"},
	220: {"CUDA_ERROR_NVLINK_UNCORRECTABLE", "uncorrectable NVLink error detected"},
	221: {"CUDA_ERROR_JIT_COMPILER_NOT_FOUND", "PTX JIT compiler library not found"},
	222: {"CUDA_ERROR_UNSUPPORTED_PTX_VERSION", "the provided PTX was compiled with an unsupported toolchain"},
	223: {"CUDA_ERROR_JIT_COMPILATION_DISABLED", "PTX JIT compilation was disabled"},
	300: {"CUDA_ERROR_INVALID_SOURCE", "device kernel image is invalid"},
	301: {"CUDA_ERROR_FILE_NOT_FOUND", "file not found"},
	302: {"CUDA_ERROR_SHARED_OBJECT_SYMBOL_NOT_FOUND", "shared object symbol not found"},
	303: {"CUDA_ERROR_SHARED_OBJECT_INIT_FAILED", "shared object initialization failed"},
	304: {"CUDA_ERROR_OPERATING_SYSTEM", "OS call failed"},
	400: {"CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
	401: {"CUDA_ERROR_ILLEGAL_STATE", "the operation is not permitted in the current state"},
	500: {"CUDA_ERROR_NOT_FOUND", "named symbol not found"},
	600: {"CUDA_ERROR_NOT_READY", "device not ready"},
	700: {"CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"},
	701: {"CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", "too many resources requested for launch"},
	702: {"CUDA_ERROR_LAUNCH_TIMEOUT", "the launch timed out and was terminated"},
	708: {"CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE", "primary context already active"},
	709: {"CUDA_ERROR_CONTEXT_IS_DESTROYED", "context is destroyed"},
	710: {"CUDA_ERROR_ASSERT", "device-side assert triggered"},
	714: {"CUDA_ERROR_HARDWARE_STACK_ERROR", "hardware stack error"},
	715: {"CUDA_ERROR_ILLEGAL_INSTRUCTION", "an illegal instruction was encountered"},
	716: {"CUDA_ERROR_MISALIGNED_ADDRESS", "misaligned address"},
	717: {"CUDA_ERROR_INVALID_ADDRESS_SPACE", "operation not supported on global/shared address space"},
	718: {"CUDA_ERROR_INVALID_PC", "invalid program counter"},
	719: {"CUDA_ERROR_LAUNCH_FAILED", "unspecified launch failure"},
	800: {"CUDA_ERROR_NOT_PERMITTED", "operation not permitted"},
	801: {"CUDA_ERROR_NOT_SUPPORTED", "operation not supported"},
	802: {"CUDA_ERROR_SYSTEM_NOT_READY", "system not yet initialized"},
	803: {"CUDA_ERROR_SYSTEM_DRIVER_MISMATCH", "system has unsupported display driver / cuda driver combination"},
	804: {"CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE", "forward compatibility was attempted on non supported HW"},
	999: {"CUDA_ERROR_UNKNOWN", "unknown error"},
}

// Name is the code's name in cuda.h, e.g. CUDA_ERROR_OUT_OF_MEMORY.
func (r Result) Name() string {
	if n, ok := resultNames[r]; ok {
		return n[0]
	}
	return fmt.Sprintf("CUDA_ERROR_%d", int32(r))
}

func (r Result) Error() string {
	if n, ok := resultNames[r]; ok {
		return fmt.Sprintf("%s (%d): %s", n[0], int32(r), n[1])
	}
	return fmt.Sprintf("CUDA error %d (not in this build's table)", int32(r))
}

// Is maps codes onto the sealer's errors: out of memory, and the "sticky"
// errors after which the context (and every allocation in it) is unusable
// until the process restarts, which the sealer treats as a lost device.
func (r Result) Is(target error) bool {
	switch target {
	case sealer.ErrOutOfMemory:
		return r == ResultOutOfMemory
	case sealer.ErrDeviceLost:
		return r.sticky()
	}
	return false
}

// sticky reports whether r leaves the context unusable: every later call
// in the process fails. A kernel that ran past the watchdog
// (LAUNCH_TIMEOUT) is one: the driver tears the context down as for an
// illegal address.
func (r Result) sticky() bool {
	switch r {
	case ResultDeinitialized, ResultDeviceUnavailable, ResultECCUncorrectable, ResultNVLinkUncorrectable,
		ResultIllegalAddress, ResultLaunchTimeout, ResultContextIsDestroyed, ResultAssert,
		ResultHardwareStackError, ResultIllegalInstruction, ResultMisalignedAddress,
		ResultInvalidAddressSpace, ResultInvalidPC, ResultLaunchFailed:
		return true
	}
	return false
}
