package cuda

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"unsafe"

	"github.com/vramseal/vramseal/sealer"
)

// DefaultLibrary is the driver library Open loads when Options.LibraryPath
// is empty: the name the NVIDIA driver installs, found on the loader path.
const DefaultLibrary = "libcuda.so.1"

// ErrNoDriver is wrapped by Open's error when no usable CUDA driver can be
// loaded: the library is missing, lacks a symbol vramseal needs, or is a
// stub. The agent maps it to exit status 2.
var ErrNoDriver = errors.New("no usable NVIDIA CUDA driver")

// ErrNoDevice is wrapped by Open's error when the driver loads but reports
// no GPU (or not the ones asked for).
var ErrNoDevice = errors.New("no CUDA GPU")

// ErrClosed is returned by a Device's operations after Close.
var ErrClosed = errors.New("cuda: device closed")

// Options configure Open.
type Options struct {
	// LibraryPath is the driver library to load (DefaultLibrary when "").
	LibraryPath string
	// Devices are the CUDA ordinals to open (all when empty).
	Devices []int
	// Workers is the number of OS threads per device that call the driver
	// (4 when 0). Each holds two pinned staging buffers and two streams.
	Workers int
	// StagingBytes is the size of one pinned staging buffer (1 MiB when 0):
	// a copy is cut in chunks of this size, one chunk's DMA overlapping the
	// packing or unpacking of the next.
	StagingBytes int

	// SpinWait keeps the driver's default of spinning while it waits for
	// the GPU. When false (the default), a waiting driver thread yields its
	// core (CU_CTX_SCHED_YIELD), so host verification's hashing goroutines
	// and the node's inference processes get the CPU.
	SpinWait bool

	// load replaces dlOpen in tests.
	load loader
	// launchBytes replaces the bytes hashed per kernel launch in tests.
	launchBytes uint64
}

// cuDeviceGetAttribute attributes.
const (
	attrIntegrated   = 18
	attrECCEnabled   = 32
	attrComputeMajor = 75
	attrComputeMinor = 76
)

// CU_CTX_SCHED_YIELD: a thread waiting for the GPU yields its core.
const ctxSchedYield = 0x02

// cuPointerGetAttribute attributes.
const (
	pointerAttrMemoryType = 2
	pointerAttrIsManaged  = 8
)

// MemoryType is where an allocation lives (CUmemorytype).
type MemoryType int

// Memory types.
const (
	MemoryHost    MemoryType = 1
	MemoryDevice  MemoryType = 2
	MemoryArray   MemoryType = 3
	MemoryUnified MemoryType = 4
)

func (m MemoryType) String() string {
	switch m {
	case MemoryHost:
		return "host"
	case MemoryDevice:
		return "device"
	case MemoryArray:
		return "array"
	case MemoryUnified:
		return "unified"
	}
	return fmt.Sprintf("unknown (%d)", int(m))
}

// sharedLib counts the devices using one loaded driver.
type sharedLib struct {
	drv  *driver
	mu   sync.Mutex
	refs int
}

func (s *sharedLib) release() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refs--
	if s.refs == 0 {
		return s.drv.lib.Close()
	}
	return nil
}

// Open loads the driver, initialises it and opens the requested GPUs: each
// gets its primary context retained and made current on its worker
// threads. Without a usable driver it returns an error wrapping
// ErrNoDriver; without GPUs one wrapping ErrNoDevice. It never panics.
func Open(ctx context.Context, opts Options) ([]*Device, error) {
	if opts.LibraryPath == "" {
		opts.LibraryPath = DefaultLibrary
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.StagingBytes <= 0 {
		opts.StagingBytes = 1 << 20
	}
	if opts.launchBytes == 0 {
		opts.launchBytes = defaultLaunchBytes
	}
	load := opts.load
	if load == nil {
		load = dlOpen
	}
	lib, err := load(opts.LibraryPath)
	if err != nil {
		return nil, fmt.Errorf("cuda: %w: %w (is the NVIDIA driver installed and its library on the loader path?)", ErrNoDriver, err)
	}
	drv, err := bind(lib)
	if err != nil {
		lib.Close()
		return nil, fmt.Errorf("cuda: %w: %s: %w", ErrNoDriver, opts.LibraryPath, err)
	}
	if err := call("cuInit", drv.cuInit(0)); err != nil {
		lib.Close()
		switch {
		case errors.Is(err, ResultNoDevice):
			return nil, fmt.Errorf("cuda: %w: %w", ErrNoDevice, err)
		case errors.Is(err, ResultStubLibrary):
			return nil, fmt.Errorf("cuda: %w: %w", ErrNoDriver, err)
		}
		return nil, fmt.Errorf("cuda: initialising the driver: %w", err)
	}
	var version, count int32
	if err := errors.Join(call("cuDriverGetVersion", drv.cuDriverGetVersion(&version)),
		call("cuDeviceGetCount", drv.cuDeviceGetCount(&count))); err != nil {
		lib.Close()
		return nil, fmt.Errorf("cuda: %w", err)
	}
	ordinals := opts.Devices
	if len(ordinals) == 0 {
		for i := range int(count) {
			ordinals = append(ordinals, i)
		}
	}
	if len(ordinals) == 0 {
		lib.Close()
		return nil, fmt.Errorf("cuda: %w: the driver reports 0 devices", ErrNoDevice)
	}
	shared := &sharedLib{drv: drv, refs: 1} // the 1 is Open's own, dropped below
	var devs []*Device
	fail := func(err error) ([]*Device, error) {
		for _, d := range devs {
			d.Close()
		}
		shared.release()
		return nil, err
	}
	seen := map[int]bool{}
	for _, ord := range ordinals {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		if ord < 0 || ord >= int(count) {
			return fail(fmt.Errorf("cuda: %w %d: the driver reports %d device(s)", ErrNoDevice, ord, count))
		}
		if seen[ord] {
			return fail(fmt.Errorf("cuda: GPU %d is named twice", ord))
		}
		seen[ord] = true
		d, err := openDevice(ctx, shared, ord, int(version), opts)
		if err != nil {
			return fail(err)
		}
		devs = append(devs, d)
	}
	shared.release()
	return devs, nil
}

// Device is one GPU on the CUDA driver API. It implements sealer.Device and
// sealer.LeafDigester. All driver calls run on the device's worker
// goroutines, each locked to its OS thread with the primary context current.
type Device struct {
	lib     *sharedLib
	drv     *driver
	ordinal int32
	props   sealer.GPUProperties // read at Open
	version int                  // the CUDA version the driver supports
	pctx    uintptr              // the primary context
	staging int
	// launchBytes is the most bytes of a shard one kernel launch hashes.
	launchBytes uint64

	jobs chan job
	quit chan struct{}
	wg   sync.WaitGroup

	mu     sync.Mutex
	live   map[*allocation]bool
	closed bool

	kernelMu   sync.Mutex
	module     uintptr
	kernel     uintptr
	kernelInfo string
}

var (
	_ sealer.Device       = (*Device)(nil)
	_ sealer.LeafDigester = (*Device)(nil)
	_ sealer.GPUDescriber = (*Device)(nil)
)

type job struct {
	fn   func(w *worker) error
	done chan error
}

// worker is one locked OS thread with the device's context current.
type worker struct {
	dev     *Device
	drv     *driver
	streams [2]uintptr
	stage   [2]unsafe.Pointer // pinned host buffers
	size    int
}

func openDevice(ctx context.Context, shared *sharedLib, ordinal, version int, opts Options) (*Device, error) {
	drv := shared.drv
	var dev int32
	if err := call("cuDeviceGet", drv.cuDeviceGet(&dev, int32(ordinal))); err != nil {
		return nil, fmt.Errorf("cuda: GPU %d: %w", ordinal, err)
	}
	props, err := readProperties(drv, dev, ordinal)
	if err != nil {
		return nil, fmt.Errorf("cuda: GPU %d: %w", ordinal, err)
	}
	d := &Device{
		lib: shared, drv: drv, ordinal: dev, props: props, version: version, staging: opts.StagingBytes, launchBytes: opts.launchBytes,
		jobs: make(chan job), quit: make(chan struct{}), live: map[*allocation]bool{},
	}
	if !opts.SpinWait {
		// CU_CTX_SCHED_YIELD, before the context is first made current.
		if err := call("cuDevicePrimaryCtxSetFlags_v2", drv.cuDevicePrimaryCtxSetFlags(dev, ctxSchedYield)); err != nil {
			return nil, fmt.Errorf("cuda: GPU %d: %w", ordinal, err)
		}
	}
	if err := call("cuDevicePrimaryCtxRetain", drv.cuDevicePrimaryCtxRetain(&d.pctx, dev)); err != nil {
		return nil, fmt.Errorf("cuda: GPU %d: %w", ordinal, err)
	}
	shared.mu.Lock()
	shared.refs++
	shared.mu.Unlock()
	started := make(chan error, opts.Workers)
	for range opts.Workers {
		d.wg.Add(1)
		go d.work(started)
	}
	var errs []error
	for range opts.Workers {
		if err := <-started; err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		d.Close()
		return nil, fmt.Errorf("cuda: GPU %d: starting its worker threads: %w", ordinal, errors.Join(errs...))
	}
	return d, nil
}

// readProperties reads a device's static properties. MIG is enabled for a
// MIG compute instance (its own UUID, cuDeviceGetUuid_v2, differs from its
// GPU's, cuDeviceGetUuid) and unknown otherwise: the driver API alone does
// not tell (the agent asks NVML).
func readProperties(drv *driver, dev int32, ordinal int) (sealer.GPUProperties, error) {
	p := sealer.GPUProperties{Index: ordinal}
	var name [256]byte
	var uuid, gpuUUID [16]byte
	var integrated, ecc, major, minor int32
	err := errors.Join(
		call("cuDeviceGetName", drv.cuDeviceGetName(&name[0], int32(len(name)), dev)),
		call("cuDeviceGetUuid_v2", drv.cuDeviceGetUuid(&uuid, dev)),
		call("cuDeviceGetUuid", drv.cuDeviceGetUuidV1(&gpuUUID, dev)),
		call("cuDeviceTotalMem_v2", drv.cuDeviceTotalMem(&p.TotalMemory, dev)),
		call("cuDeviceGetAttribute(INTEGRATED)", drv.cuDeviceGetAttribute(&integrated, attrIntegrated, dev)),
		call("cuDeviceGetAttribute(ECC_ENABLED)", drv.cuDeviceGetAttribute(&ecc, attrECCEnabled, dev)),
		call("cuDeviceGetAttribute(COMPUTE_CAPABILITY_MAJOR)", drv.cuDeviceGetAttribute(&major, attrComputeMajor, dev)),
		call("cuDeviceGetAttribute(COMPUTE_CAPABILITY_MINOR)", drv.cuDeviceGetAttribute(&minor, attrComputeMinor, dev)),
	)
	if err != nil {
		return p, err
	}
	if i := bytes.IndexByte(name[:], 0); i >= 0 {
		p.Name = string(name[:i])
	}
	p.UUID = FormatUUID(uuid)
	if uuid != gpuUUID {
		p.MIG = sealer.MIGEnabled
		p.UUID = "MIG-" + strings.TrimPrefix(p.UUID, "GPU-")
	}
	p.Integrated, p.ECCEnabled = integrated != 0, ecc != 0
	p.Compute = sealer.ComputeCapability{Major: int(major), Minor: int(minor)}
	return p, nil
}

// FormatUUID writes a device UUID as nvidia-smi does: GPU-8-4-4-4-12 hex.
func FormatUUID(u [16]byte) string {
	const hexd = "0123456789abcdef"
	var s strings.Builder
	s.WriteString("GPU-")
	for i, b := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			s.WriteByte('-')
		}
		s.WriteByte(hexd[b>>4])
		s.WriteByte(hexd[b&15])
	}
	return s.String()
}

// work is one worker: it locks its OS thread, makes the primary context
// current, creates its streams and pinned buffers, and runs jobs until
// Close. The thread stays locked until the goroutine ends, so the OS
// thread, with the context current, is never reused for other Go code.
func (d *Device) work(started chan<- error) {
	defer d.wg.Done()
	runtime.LockOSThread()
	w := &worker{dev: d, drv: d.drv, size: d.staging}
	if err := w.init(d.pctx); err != nil {
		w.destroy()
		started <- err
		return
	}
	started <- nil
	defer w.destroy()
	for {
		select {
		case j := <-d.jobs:
			j.done <- j.fn(w)
		case <-d.quit:
			return
		}
	}
}

func (w *worker) init(pctx uintptr) error {
	if err := call("cuCtxSetCurrent", w.drv.cuCtxSetCurrent(pctx)); err != nil {
		return err
	}
	for i := range w.streams {
		// CU_STREAM_NON_BLOCKING: no implicit sync with the legacy stream.
		if err := call("cuStreamCreate", w.drv.cuStreamCreate(&w.streams[i], 1)); err != nil {
			return err
		}
		if err := call("cuMemHostAlloc", w.drv.cuMemHostAlloc(&w.stage[i], uint64(w.size), 0)); err != nil {
			return err
		}
	}
	return nil
}

func (w *worker) destroy() {
	for i := range w.streams {
		if w.streams[i] != 0 {
			w.drv.cuStreamSynchronize(w.streams[i])
			w.drv.cuStreamDestroy(w.streams[i])
			w.streams[i] = 0
		}
		if w.stage[i] != nil {
			w.drv.cuMemFreeHost(w.stage[i])
			w.stage[i] = nil
		}
	}
}

// buf is staging buffer i as a byte slice.
func (w *worker) buf(i int) []byte { return unsafe.Slice((*byte)(w.stage[i]), w.size) }

// do runs fn on one of the device's worker threads and waits for it.
func (d *Device) do(ctx context.Context, fn func(w *worker) error) error {
	j := job{fn: fn, done: make(chan error, 1)}
	select {
	case d.jobs <- j:
	case <-d.quit:
		return fmt.Errorf("GPU %d: %w", d.ordinal, ErrClosed)
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-j.done
}

func (d *Device) errf(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("GPU %d: %w", d.ordinal, err)
}

// Index is the CUDA ordinal.
func (d *Device) Index() int { return int(d.ordinal) }

// Properties implements sealer.GPUDescriber: the properties read at Open,
// once the device has answered a memory query (an error means it is lost).
func (d *Device) Properties(ctx context.Context) (sealer.GPUProperties, error) {
	if _, err := d.MemoryInfo(ctx); err != nil {
		return sealer.GPUProperties{}, err
	}
	return d.props, nil
}

// StaticProperties returns the properties read at Open, without asking the
// device.
func (d *Device) StaticProperties() sealer.GPUProperties { return d.props }

// DriverVersion is the CUDA version the driver supports, e.g. 13000.
func (d *Device) DriverVersion() int { return d.version }

// MemoryInfo asks the driver for the device's free and total memory.
func (d *Device) MemoryInfo(ctx context.Context) (sealer.MemoryInfo, error) {
	var free, total uint64
	err := d.do(ctx, func(w *worker) error { return call("cuMemGetInfo_v2", w.drv.cuMemGetInfo(&free, &total)) })
	return sealer.MemoryInfo{Total: total, Free: free}, d.errf(err)
}

// allocation is a plain device allocation (cuMemAlloc). It never prints its
// address.
type allocation struct {
	dev  *Device
	ptr  uint64
	size uint64
	// use is held shared by operations on the allocation and exclusively
	// by Free, so memory is never freed under a copy or a kernel.
	use sync.RWMutex
}

func (a *allocation) Size() uint64     { return a.size }
func (a *allocation) String() string   { return fmt.Sprintf("cuda allocation (%d bytes)", a.size) }
func (a *allocation) GoString() string { return a.String() }

// Alloc allocates size bytes of device memory with cuMemAlloc: never
// managed, never host memory.
func (d *Device) Alloc(ctx context.Context, size uint64) (sealer.Allocation, error) {
	if size == 0 {
		return nil, d.errf(errors.New("zero-byte allocation"))
	}
	a := &allocation{dev: d, size: size}
	err := d.do(ctx, func(w *worker) error { return call("cuMemAlloc_v2", w.drv.cuMemAlloc(&a.ptr, size)) })
	if err != nil {
		return nil, d.errf(fmt.Errorf("allocating %d bytes: %w", size, err))
	}
	d.mu.Lock()
	d.live[a] = true
	d.mu.Unlock()
	return a, nil
}

// acquire checks that a is a live allocation of d covering [off, off+n)
// and holds it against Free until release.
func (d *Device) acquire(a sealer.Allocation, off, n uint64) (*allocation, error) {
	al, ok := a.(*allocation)
	if !ok || al.dev != d {
		return nil, d.errf(fmt.Errorf("allocation of another device: %w", sealer.ErrAllocationMissing))
	}
	al.use.RLock()
	d.mu.Lock()
	live := d.live[al]
	d.mu.Unlock()
	if !live {
		al.use.RUnlock()
		return nil, d.errf(sealer.ErrAllocationMissing)
	}
	if off > al.size || n > al.size-off {
		al.use.RUnlock()
		return nil, d.errf(fmt.Errorf("range [%d, %d) outside a %d-byte allocation", off, off+n, al.size))
	}
	return al, nil
}

// Write copies p into the allocation at off through the pinned staging
// buffers, two copies in flight on two streams.
func (d *Device) Write(ctx context.Context, a sealer.Allocation, off uint64, p []byte) error {
	al, err := d.acquire(a, off, uint64(len(p)))
	if err != nil {
		return err
	}
	defer al.use.RUnlock()
	return d.errf(d.do(ctx, func(w *worker) error { return w.write(ctx, al.ptr+off, p) }))
}

// Read copies len(p) bytes of the allocation at off into p through the
// pinned staging buffers, the next copy in flight while the last is
// unpacked.
func (d *Device) Read(ctx context.Context, a sealer.Allocation, off uint64, p []byte) error {
	al, err := d.acquire(a, off, uint64(len(p)))
	if err != nil {
		return err
	}
	defer al.use.RUnlock()
	return d.errf(d.do(ctx, func(w *worker) error { return w.read(ctx, p, al.ptr+off) }))
}

// Free releases the allocation (cuMemFree). A second Free wraps
// sealer.ErrAllocationMissing.
func (d *Device) Free(ctx context.Context, a sealer.Allocation) error {
	al, ok := a.(*allocation)
	if !ok || al.dev != d {
		return d.errf(fmt.Errorf("allocation of another device: %w", sealer.ErrAllocationMissing))
	}
	al.use.Lock()
	defer al.use.Unlock()
	d.mu.Lock()
	live := d.live[al]
	delete(d.live, al)
	d.mu.Unlock()
	if !live {
		return d.errf(fmt.Errorf("freed twice: %w", sealer.ErrAllocationMissing))
	}
	return d.errf(d.do(context.WithoutCancel(ctx), func(w *worker) error { return call("cuMemFree_v2", w.drv.cuMemFree(al.ptr)) }))
}

// AllocationMemory asks the driver what memory backs the allocation
// (cuPointerGetAttribute MEMORY_TYPE and IS_MANAGED), for the VRAM-only
// policy.
func (d *Device) AllocationMemory(ctx context.Context, a sealer.Allocation) (sealer.AllocationMemory, error) {
	al, err := d.acquire(a, 0, 0)
	if err != nil {
		return sealer.AllocationMemory{}, err
	}
	defer al.use.RUnlock()
	var out sealer.AllocationMemory
	err = d.do(ctx, func(w *worker) error {
		// Zeroed 8-byte slots: the driver writes an unsigned int (memory
		// type) or a bool (managed) into the start of each.
		mt, managed := new(uint64), new(uint64)
		if err := call("cuPointerGetAttribute(MEMORY_TYPE)", w.drv.cuPointerGetAttribute(unsafe.Pointer(mt), pointerAttrMemoryType, al.ptr)); err != nil {
			return err
		}
		if err := call("cuPointerGetAttribute(IS_MANAGED)", w.drv.cuPointerGetAttribute(unsafe.Pointer(managed), pointerAttrIsManaged, al.ptr)); err != nil {
			return err
		}
		out = sealer.AllocationMemory{Type: MemoryType(uint32(*mt)).String(), Managed: *managed != 0}
		return nil
	})
	return out, d.errf(err)
}

// Close unloads the kernel, stops the workers (freeing their streams and
// pinned buffers), releases the primary context and, with the last device,
// the driver library. Allocations still live are freed with the context.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	var errs []error
	d.kernelMu.Lock()
	if d.module != 0 {
		mod := d.module
		errs = append(errs, d.do(context.Background(), func(w *worker) error { return call("cuModuleUnload", w.drv.cuModuleUnload(mod)) }))
		d.module, d.kernel = 0, 0
	}
	d.kernelMu.Unlock()
	close(d.quit)
	d.wg.Wait()
	if d.pctx != 0 {
		errs = append(errs, call("cuDevicePrimaryCtxRelease_v2", d.drv.cuDevicePrimaryCtxRelease(d.ordinal)))
		errs = append(errs, d.lib.release())
	}
	return d.errf(errors.Join(errs...))
}

// write copies p to device address dst in staging-sized chunks,
// alternating buffers and streams: while one chunk's DMA runs, the next is
// packed into the other buffer.
func (w *worker) write(ctx context.Context, dst uint64, p []byte) (err error) {
	var busy [2]bool
	defer func() { err = errors.Join(err, w.drain(&busy)) }()
	for i, off := 0, 0; off < len(p); i, off = i+1, off+w.size {
		if err := ctx.Err(); err != nil {
			return err
		}
		k := i % 2
		if busy[k] {
			busy[k] = false
			if err := call("cuStreamSynchronize", w.drv.cuStreamSynchronize(w.streams[k])); err != nil {
				return err
			}
		}
		n := copy(w.buf(k), p[off:])
		if err := call("cuMemcpyHtoDAsync_v2", w.drv.cuMemcpyHtoDAsync(dst+uint64(off), w.stage[k], uint64(n), w.streams[k])); err != nil {
			return err
		}
		busy[k] = true
	}
	return nil
}

// read copies device address src into p: chunk i+1's DMA is in flight while
// chunk i is unpacked from its staging buffer.
func (w *worker) read(ctx context.Context, p []byte, src uint64) (err error) {
	var busy [2]bool
	defer func() { err = errors.Join(err, w.drain(&busy)) }()
	chunks := (len(p) + w.size - 1) / w.size
	issue := func(i int) error {
		off := i * w.size
		n := min(w.size, len(p)-off)
		k := i % 2
		busy[k] = true
		return call("cuMemcpyDtoHAsync_v2", w.drv.cuMemcpyDtoHAsync(w.stage[k], src+uint64(off), uint64(n), w.streams[k]))
	}
	if chunks > 0 {
		if err := issue(0); err != nil {
			return err
		}
	}
	for i := range chunks {
		if err := ctx.Err(); err != nil {
			return err
		}
		if i+1 < chunks {
			if err := issue(i + 1); err != nil {
				return err
			}
		}
		k := i % 2
		busy[k] = false
		if err := call("cuStreamSynchronize", w.drv.cuStreamSynchronize(w.streams[k])); err != nil {
			return err
		}
		off := i * w.size
		copy(p[off:min(off+w.size, len(p))], w.buf(k))
	}
	return nil
}

// drain waits for the streams still busy, so a staging buffer is never
// reused or freed under a copy.
func (w *worker) drain(busy *[2]bool) error {
	var errs []error
	for k := range busy {
		if busy[k] {
			busy[k] = false
			errs = append(errs, call("cuStreamSynchronize", w.drv.cuStreamSynchronize(w.streams[k])))
		}
	}
	return errors.Join(errs...)
}

// Devices returns ds as sealer Devices.
func Devices(ds []*Device) []sealer.Device {
	out := make([]sealer.Device, len(ds))
	for i, d := range ds {
		out[i] = d
	}
	return out
}
