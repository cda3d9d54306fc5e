package cuda

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"unsafe"

	"github.com/vramseal/vramseal/sealer"
)

// DefaultLibrary is the driver library Open loads when Options.LibraryPath
// is empty: the name the NVIDIA driver installs, found by the loader's
// search or in one of DriverFolders.
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
	// LibraryPath is the driver library to load, and the only one tried.
	// When "", DefaultLibrary is searched for: the loader's search first
	// (LD_LIBRARY_PATH, the loader cache), then DriverFolders.
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

	// VerifyInFlight bounds the verifications on the GPU (LeafDigests
	// calls, TreeDigests shards) the device runs at once
	// (DefaultVerifyInFlight when 0). Each keeps a device and a pinned
	// host buffer of 32 bytes per leaf of the largest shard it verified,
	// reused until Close.
	VerifyInFlight int

	// ReaderCommand, when set, starts a process of this program that calls
	// ServeReader (cmd/agent: the agent's own executable): each attachment
	// is then imported and read in a reader process of its own, so that a
	// sticky CUDA error on it (the owner freed the memory) ends that
	// process only, never the agent's CUDA context. Verification of such
	// memory on the GPU falls back to the host. When empty, attachments
	// are read in the agent's own context.
	ReaderCommand []string

	// load replaces dlOpen in tests.
	load loader
	// launchBytes replaces the bytes hashed per kernel launch in tests.
	launchBytes uint64
	// beforeRoot, in tests, is called before TreeDigests computes shard
	// i's root on the host.
	beforeRoot func(i int)
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

// Open loads the driver, initialises it and opens the requested GPUs: each
// gets its primary context retained and made current on its worker
// threads. Without a usable driver it returns an error wrapping
// ErrNoDriver; without GPUs one wrapping ErrNoDevice. It never panics.
//
// Once cuInit has been called on a library, the library stays loaded for
// the life of the process, whatever Open returns and after every Device is
// closed: the driver starts threads of its own that run its code, and
// unloading it under them crashes the process (a second Open reuses it).
func Open(ctx context.Context, opts Options) ([]*Device, error) {
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.StagingBytes <= 0 {
		opts.StagingBytes = 1 << 20
	}
	if opts.VerifyInFlight <= 0 {
		opts.VerifyInFlight = DefaultVerifyInFlight
	}
	if opts.launchBytes == 0 {
		opts.launchBytes = defaultLaunchBytes
	}
	load := opts.load
	if load == nil {
		load = dlOpen
	}
	lib, name, err := loadDriver(load, opts.LibraryPath)
	if err != nil {
		return nil, fmt.Errorf("cuda: %w: %w (is the NVIDIA driver installed?)", ErrNoDriver, err)
	}
	drv, err := bind(lib)
	if err != nil {
		lib.Close()
		return nil, fmt.Errorf("cuda: %w: %s: %w", ErrNoDriver, name, err)
	}
	drv.path = name
	if addr, err := lib.Sym("cuInit"); err == nil {
		if file := mappedFile(addr); file != "" {
			drv.path = file
		}
	}
	// From here on the library is never closed (see above).
	if err := call("cuInit", drv.cuInit(0)); err != nil {
		switch {
		case errors.Is(err, ResultNoDevice):
			return nil, fmt.Errorf("cuda: %w: %w", ErrNoDevice, err)
		case errors.Is(err, ResultStubLibrary):
			return nil, fmt.Errorf("cuda: %w: %s is a CUDA toolkit's stub, not the driver (take its folder off LD_LIBRARY_PATH, or set cuda.library): %w",
				ErrNoDriver, drv.path, err)
		}
		return nil, fmt.Errorf("cuda: initialising the driver: %w", err)
	}
	var version, count int32
	if err := errors.Join(call("cuDriverGetVersion", drv.cuDriverGetVersion(&version)),
		call("cuDeviceGetCount", drv.cuDeviceGetCount(&count))); err != nil {
		return nil, fmt.Errorf("cuda: %w", err)
	}
	ordinals := opts.Devices
	if len(ordinals) == 0 {
		for i := range int(count) {
			ordinals = append(ordinals, i)
		}
	}
	if len(ordinals) == 0 {
		return nil, fmt.Errorf("cuda: %w: the driver reports 0 devices", ErrNoDevice)
	}
	var devs []*Device
	fail := func(err error) ([]*Device, error) {
		for _, d := range devs {
			d.Close()
		}
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
		d, err := openDevice(ctx, drv, ord, int(version), opts)
		if err != nil {
			return fail(err)
		}
		devs = append(devs, d)
	}
	return devs, nil
}

// Device is one GPU on the CUDA driver API. It implements sealer.Device and
// sealer.LeafDigester. All driver calls run on the device's worker
// goroutines, each locked to its OS thread with the primary context current.
type Device struct {
	drv     *driver
	ordinal int32
	props   sealer.GPUProperties // read at Open
	version int                  // the CUDA version the driver supports
	pctx    uintptr              // the primary context
	staging int
	// launchBytes is the most bytes of a shard one kernel launch hashes.
	launchBytes uint64
	// granularity is the VMM allocation granularity; 0 when shards are
	// plain cuMemAlloc allocations (no VMM support).
	granularity uint64
	readerCmd   []string
	// rd is the reader process of the device's attachments (reader.go).
	readerMu sync.Mutex
	rd       *reader

	jobs chan job
	quit chan struct{}
	wg   sync.WaitGroup

	mu     sync.Mutex
	live   map[*allocation]bool
	closed bool

	// slots are the verifications on the GPU that may be in flight, each
	// with its reusable buffers; closing ends new ones at Close.
	slots      chan *digestSlot
	closing    chan struct{}
	beforeRoot func(i int)

	// limits are the features an optional driver symbol would have served
	// that this device runs without (Limitations).
	limits []string

	// ipc are the IPC segments opened (AdoptIPC), by handle.
	ipcMu sync.Mutex
	ipc   map[IPCHandle]*ipcSegment

	kernelMu   sync.Mutex
	module     uintptr
	kernel     uintptr
	kernelInfo string
}

var (
	_ sealer.Device       = (*Device)(nil)
	_ sealer.LeafDigester = (*Device)(nil)
	_ sealer.GPUDescriber = (*Device)(nil)
	_ sealer.Exporter     = (*Device)(nil)
	_ sealer.Adopter      = (*Device)(nil)
)

func openDevice(ctx context.Context, drv *driver, ordinal, version int, opts Options) (*Device, error) {
	var dev int32
	if err := call("cuDeviceGet", drv.cuDeviceGet(&dev, int32(ordinal))); err != nil {
		return nil, fmt.Errorf("cuda: GPU %d: %w", ordinal, err)
	}
	props, limits, err := readProperties(drv, dev, ordinal, version)
	if err != nil {
		return nil, fmt.Errorf("cuda: GPU %d: %w", ordinal, err)
	}
	d := &Device{
		drv: drv, ordinal: dev, props: props, version: version, staging: opts.StagingBytes, launchBytes: opts.launchBytes,
		jobs: make(chan job), quit: make(chan struct{}), live: map[*allocation]bool{}, limits: limits, ipc: map[IPCHandle]*ipcSegment{}, readerCmd: opts.ReaderCommand,
		slots: make(chan *digestSlot, opts.VerifyInFlight), closing: make(chan struct{}), beforeRoot: opts.beforeRoot,
	}
	for range opts.VerifyInFlight {
		d.slots <- &digestSlot{}
	}
	if g, limit := vmmSupport(drv, dev); limit != "" {
		d.limits = append(d.limits, limit)
	} else {
		d.granularity = g
	}
	if !opts.SpinWait {
		// CU_CTX_SCHED_YIELD, before the context is first made current.
		// Without it the driver's threads spin while they wait: slower for
		// the node's other work, never wrong.
		if drv.cuDevicePrimaryCtxSetFlags == nil {
			d.limits = append(d.limits, "waiting threads spin: the driver lacks cuDevicePrimaryCtxSetFlags_v2")
		} else if err := call("cuDevicePrimaryCtxSetFlags_v2", drv.cuDevicePrimaryCtxSetFlags(dev, ctxSchedYield)); err != nil {
			d.limits = append(d.limits, fmt.Sprintf("waiting threads spin: %v", err))
		}
	}
	if err := call("cuDevicePrimaryCtxRetain", drv.cuDevicePrimaryCtxRetain(&d.pctx, dev)); err != nil {
		return nil, fmt.Errorf("cuda: GPU %d: %w", ordinal, err)
	}
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
// MIG compute instance (migInstance) and unknown otherwise: the driver API
// alone does not tell (the agent asks NVML). The strings are the features
// the driver lacks (Limitations).
func readProperties(drv *driver, dev int32, ordinal, version int) (sealer.GPUProperties, []string, error) {
	p := sealer.GPUProperties{Index: ordinal}
	var name [256]byte
	var uuid [16]byte
	var integrated, ecc, major, minor int32
	err := errors.Join(
		call("cuDeviceGetName", drv.cuDeviceGetName(&name[0], int32(len(name)), dev)),
		call("cuDeviceGetUuid_v2", drv.cuDeviceGetUuid(&uuid, dev)),
		call("cuDeviceTotalMem_v2", drv.cuDeviceTotalMem(&p.TotalMemory, dev)),
		call("cuDeviceGetAttribute(INTEGRATED)", drv.cuDeviceGetAttribute(&integrated, attrIntegrated, dev)),
		call("cuDeviceGetAttribute(ECC_ENABLED)", drv.cuDeviceGetAttribute(&ecc, attrECCEnabled, dev)),
		call("cuDeviceGetAttribute(COMPUTE_CAPABILITY_MAJOR)", drv.cuDeviceGetAttribute(&major, attrComputeMajor, dev)),
		call("cuDeviceGetAttribute(COMPUTE_CAPABILITY_MINOR)", drv.cuDeviceGetAttribute(&minor, attrComputeMinor, dev)),
	)
	if err != nil {
		return p, nil, err
	}
	if i := bytes.IndexByte(name[:], 0); i >= 0 {
		p.Name = string(name[:i])
	}
	p.UUID = FormatUUID(uuid)
	mig, limit := migInstance(drv, dev, uuid, version)
	if mig {
		p.MIG = sealer.MIGEnabled
		p.UUID = "MIG-" + strings.TrimPrefix(p.UUID, "GPU-")
	}
	var limits []string
	if limit != "" {
		limits = append(limits, limit)
	}
	p.Integrated, p.ECCEnabled = integrated != 0, ecc != 0
	p.Compute = sealer.ComputeCapability{Major: int(major), Minor: int(minor)}
	return p, limits, nil
}

// migInstance tells whether the device is a MIG instance by comparing its
// UUID with the legacy cuDeviceGetUuid's. When it cannot tell, it says why,
// and the answer is false (unknown): the legacy symbol is missing or fails,
// or the driver is CUDA 13 or newer, where the legacy call gives MIG UUIDs
// too and the comparison proves nothing.
func migInstance(drv *driver, dev int32, uuid [16]byte, version int) (bool, string) {
	switch {
	case version >= 13000:
		return false, "MIG instance unknown from the driver API: on CUDA 13 drivers cuDeviceGetUuid gives MIG UUIDs too"
	case drv.cuDeviceGetUuidLegacy == nil:
		return false, "MIG instance unknown from the driver API: the driver lacks cuDeviceGetUuid"
	}
	var gpu [16]byte
	if err := call("cuDeviceGetUuid", drv.cuDeviceGetUuidLegacy(&gpu, dev)); err != nil {
		return false, fmt.Sprintf("MIG instance unknown from the driver API: %v", err)
	}
	return gpu != uuid, ""
}

// Limitations lists the features this device runs without because an
// optional driver symbol is missing or failed (MIG instance unknown,
// waiting threads spinning), one sentence each; empty when none.
func (d *Device) Limitations() []string { return append([]string(nil), d.limits...) }

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

func (d *Device) errf(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("GPU %d: %w", d.ordinal, err)
}

// Library is the driver library file the device runs on, as the process
// mapped it (e.g. /usr/lib/x86_64-linux-gnu/libcuda.so.570.133.20), or the
// name it was loaded by when the mapping cannot be read.
func (d *Device) Library() string { return d.drv.path }

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

// allocation is a shard's device memory: a VMM allocation mapped at ptr
// (vmm set), or a plain one (cuMemAlloc) where the GPU has no VMM. It
// never prints its address.
type allocation struct {
	dev  *Device
	ptr  uint64
	size uint64
	vmm  *vmmMemory
	// attached: another process's memory, imported (Adopt) or opened
	// from an IPC handle (AdoptIPC, ipc set); the agent only reads it.
	attached bool
	ipc      *ipcSegment
	// remote is an attachment held by the reader process
	// (Options.ReaderCommand).
	remote *remote
	// fault is the contained sticky error of attached memory (contain).
	faultMu sync.Mutex
	fault   *AttachedFault
	// use is held shared by operations on the allocation and exclusively
	// by Free, so memory is never freed under a copy or a kernel.
	use sync.RWMutex
}

func (a *allocation) Size() uint64     { return a.size }
func (a *allocation) String() string   { return fmt.Sprintf("cuda allocation (%d bytes)", a.size) }
func (a *allocation) GoString() string { return a.String() }

// Alloc allocates size bytes of device memory: a VMM allocation
// (cuMemCreate, exportable as a POSIX file descriptor, rounded up to the
// granularity, mapped read-write for the device), or with cuMemAlloc
// where the GPU has no VMM. Never managed, never host memory.
func (d *Device) Alloc(ctx context.Context, size uint64) (sealer.Allocation, error) {
	if size == 0 {
		return nil, d.errf(errors.New("zero-byte allocation"))
	}
	a := &allocation{dev: d, size: size}
	err := d.do(ctx, func(w *worker) error {
		if d.granularity == 0 {
			return call("cuMemAlloc_v2", w.drv.cuMemAlloc(&a.ptr, size))
		}
		ptr, m, err := w.vmmCreate(size)
		if err == nil {
			a.ptr, a.vmm = ptr, &m
		}
		return err
	})
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
	if err := al.faulted(); err != nil {
		al.use.RUnlock()
		return nil, d.errf(err)
	}
	return al, nil
}

// Free releases the allocation: a VMM allocation is unmapped, its address
// range freed and its handle released, in that order (its memory lives on
// while a consumer holds a handle or mapping of it); a plain one is freed
// with cuMemFree. A second Free wraps sealer.ErrAllocationMissing.
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
	switch {
	case al.remote != nil:
		return d.errf(al.remote.free(context.WithoutCancel(ctx)))
	case al.ipc != nil:
		return d.errf(d.dropSegment(al.ipc))
	}
	return d.errf(d.do(context.WithoutCancel(ctx), func(w *worker) error {
		if al.vmm != nil {
			return w.vmmFree(al.ptr, *al.vmm)
		}
		return call("cuMemFree_v2", w.drv.cuMemFree(al.ptr))
	}))
}

// AllocationMemory asks the driver what memory backs the allocation
// (cuPointerGetAttribute MEMORY_TYPE and IS_MANAGED, on the mapped
// pointer for a VMM allocation), for the VRAM-only policy.
func (d *Device) AllocationMemory(ctx context.Context, a sealer.Allocation) (sealer.AllocationMemory, error) {
	al, err := d.acquire(a, 0, 0)
	if err != nil {
		return sealer.AllocationMemory{}, err
	}
	defer al.use.RUnlock()
	if al.remote != nil {
		m, err := al.remote.memory(ctx)
		return m, d.errf(al.contain(err))
	}
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

// Close waits for the verifications on the GPU in flight, frees their
// buffers, frees the allocations still live (VMM allocations and IPC
// segments are not the context's to free), unloads the kernel, stops the
// workers (freeing their streams and pinned buffers) and releases the
// primary context. The driver library stays loaded (see Open).
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	close(d.closing)
	// The verifications in flight end; their buffers are freed.
	errs := []error{d.freeSlots()}
	// VMM allocations and IPC segments outlive the context: free them.
	errs = append(errs, d.freeLive(), d.closeReader())
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
	}
	return d.errf(errors.Join(errs...))
}

// Devices returns ds as sealer Devices.
func Devices(ds []*Device) []sealer.Device {
	out := make([]sealer.Device, len(ds))
	for i, d := range ds {
		out[i] = d
	}
	return out
}
