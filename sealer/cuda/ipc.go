package cuda

// IPCHandle is a legacy CUDA IPC memory handle (CUipcMemHandle, 64 opaque
// bytes): what cuIpcGetMemHandle, and PyTorch for a storage's allocator
// segment, export.
type IPCHandle struct{ Reserved [64]byte }
