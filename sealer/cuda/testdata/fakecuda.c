// fakecuda: a fake libcuda.so for vramseal's tests, built with gcc by the
// tests of sealer/cuda and loaded through the same dlopen path as the real
// driver. It implements the driver calls vramseal uses on host memory:
// "device" allocations are malloc'd, pinned host buffers too, copies are
// memcpy, and cuLaunchKernel runs a host version of the leaf kernel with
// the kernel's parameter layout. It checks what a real driver would refuse
// (no current context on the calling thread, unknown or freed pointers,
// ranges outside an allocation, a kernel the module lacks) and can inject
// any error into any call.
//
// Virtual memory management (cuMemCreate and the calls around it) is backed
// by a memfd per allocation, mapped with mmap at the reserved address: an
// exported handle is a descriptor of that memfd, so a second process that
// imports it (loading its own copy of this library) maps the same pages.
//
// Control (exported, called by the tests through dlsym):
//   fakecuda_fail(name, code, nth): the nth next call of name returns code
//   fakecuda_set(key, value) / fakecuda_get(key): configuration and counters
//   ("init_device_order": what CUDA_DEVICE_ORDER was at cuInit, as the real
//   driver reads it: 1 PCI_BUS_ID, 2 FASTEST_FIRST, 0 unset, 3 other, -2 no cuInit yet)
//
// Build: gcc -shared -fPIC -O2 -o libcuda.so.1 fakecuda.c -lpthread
// (-DFAKECUDA_OMIT_MEMGETINFO leaves out cuMemGetInfo_v2, for the
// missing-symbol test; -DFAKECUDA_OMIT_OPTIONAL leaves out the optional
// legacy cuDeviceGetUuid and cuDevicePrimaryCtxSetFlags_v2;
// -DFAKECUDA_WARN adds code gcc warns about, as a newer gcc may warn about
// code that builds cleanly today.)
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef int CUresult;
typedef int CUdevice;
typedef uint64_t CUdeviceptr;

enum {
	OK = 0,
	INVALID_VALUE = 1,
	OUT_OF_MEMORY = 2,
	NOT_INITIALIZED = 3,
	INVALID_DEVICE = 101,
	INVALID_CONTEXT = 201,
	INVALID_PTX = 218,
	INVALID_HANDLE = 400,
	NOT_FOUND = 500,
	ILLEGAL_ADDRESS = 700,
	MISALIGNED_ADDRESS = 716,
	LAUNCH_FAILED = 719,
	NOT_PERMITTED = 800,
	NOT_SUPPORTED = 801,
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

#ifdef FAKECUDA_WARN
static int fakecuda_never_used; // -Wall: defined but not used
#endif

// ---- configuration and counters ----
static long long cfg_devices = 1;
static long long cfg_total = 1LL << 30;
static long long cfg_integrated = 0;
static long long cfg_ecc = 1;
static long long cfg_major = 9;
static long long cfg_minor = 0;
static long long cfg_memtype = 2; // CU_MEMORYTYPE_DEVICE
static long long cfg_managed = 0;
static long long cfg_mig = 0;
static long long cfg_version = 13000; // what cuDriverGetVersion reports
static long long cfg_corrupt_kernel = 0; // flip a bit of each digest the "kernel" writes
static long long cfg_vmm = 1;             // VIRTUAL_MEMORY_MANAGEMENT and POSIX_FD handles supported
static long long cfg_granularity = 65536; // what cuMemGetAllocationGranularity reports
static long long cfg_refuse_read_only = 0; // cuMemSetAccess refuses PROT_READ (as many drivers do)

static int initialized;
static long long init_device_order = -2;
static long long used;
static long long retained[64];
static long long streams_live, modules_live, launches, host_live, dev_live;
static long long ctx_flags = -1; // the primary context's flags; -1: never set
static long long vmm_handles, vmm_maps, vmm_reserved, vmm_bytes; // live VMM objects; bytes created here
static long long last_map; // the address of the last cuMemMap, for tests that act as an engine

struct counter { char name[64]; long long n; };
static struct counter counters[128];
static int ncounters;

struct fail { char name[64]; int code; int nth; };
static struct fail fails[32];
static int nfails;

static __thread const void *current_ctx;
static char ctx_tokens[64];

// Called at the entry of every driver function: counts it and returns the
// injected error, if any is due.
static int enter(const char *name) {
	pthread_mutex_lock(&mu);
	int i;
	for (i = 0; i < ncounters; i++)
		if (strcmp(counters[i].name, name) == 0) break;
	if (i == ncounters && ncounters < 128) {
		snprintf(counters[ncounters].name, 64, "%s", name);
		ncounters++;
	}
	if (i < 128) counters[i].n++;
	int code = 0;
	for (int j = 0; j < nfails; j++) {
		if (strcmp(fails[j].name, name) == 0 && fails[j].nth > 0) {
			if (--fails[j].nth == 0) {
				code = fails[j].code;
				fails[j] = fails[--nfails];
				break;
			}
		}
	}
	pthread_mutex_unlock(&mu);
	return code;
}

#define ENTER(name)                      \
	do {                                 \
		int _rc = enter(name);           \
		if (_rc) return _rc;             \
		if (!initialized) return NOT_INITIALIZED; \
	} while (0)

#define NEED_CTX()                                   \
	do {                                             \
		if (current_ctx == NULL) return INVALID_CONTEXT; \
	} while (0)

int fakecuda_fail(const char *name, int code, int nth) {
	pthread_mutex_lock(&mu);
	if (nfails == 32) {
		pthread_mutex_unlock(&mu);
		return -1;
	}
	snprintf(fails[nfails].name, 64, "%s", name);
	fails[nfails].code = code;
	fails[nfails].nth = nth < 1 ? 1 : nth;
	nfails++;
	pthread_mutex_unlock(&mu);
	return 0;
}

static long long *key(const char *k) {
	if (!strcmp(k, "devices")) return &cfg_devices;
	if (!strcmp(k, "total")) return &cfg_total;
	if (!strcmp(k, "integrated")) return &cfg_integrated;
	if (!strcmp(k, "ecc")) return &cfg_ecc;
	if (!strcmp(k, "major")) return &cfg_major;
	if (!strcmp(k, "minor")) return &cfg_minor;
	if (!strcmp(k, "memtype")) return &cfg_memtype;
	if (!strcmp(k, "managed")) return &cfg_managed;
	if (!strcmp(k, "mig")) return &cfg_mig;
	if (!strcmp(k, "version")) return &cfg_version;
	if (!strcmp(k, "corrupt_kernel")) return &cfg_corrupt_kernel;
	if (!strcmp(k, "vmm")) return &cfg_vmm;
	if (!strcmp(k, "granularity")) return &cfg_granularity;
	if (!strcmp(k, "refuse_read_only")) return &cfg_refuse_read_only;
	if (!strcmp(k, "vmm_handles")) return &vmm_handles;
	if (!strcmp(k, "vmm_maps")) return &vmm_maps;
	if (!strcmp(k, "vmm_reserved")) return &vmm_reserved;
	if (!strcmp(k, "vmm_bytes")) return &vmm_bytes;
	if (!strcmp(k, "last_map")) return &last_map;
	if (!strcmp(k, "used")) return &used;
	if (!strcmp(k, "streams")) return &streams_live;
	if (!strcmp(k, "modules")) return &modules_live;
	if (!strcmp(k, "launches")) return &launches;
	if (!strcmp(k, "host_allocs")) return &host_live;
	if (!strcmp(k, "dev_allocs")) return &dev_live;
	if (!strcmp(k, "ctx_flags")) return &ctx_flags;
	return NULL;
}

void fakecuda_set(const char *k, long long v) {
	pthread_mutex_lock(&mu);
	long long *p = key(k);
	if (p) *p = v;
	pthread_mutex_unlock(&mu);
}

// fakecuda_get returns a setting or counter; "calls:NAME" is how often NAME
// was called; "retained" sums the primary context references; -1: no such key.
long long fakecuda_get(const char *k) {
	long long v = -1;
	pthread_mutex_lock(&mu);
	if (!strncmp(k, "calls:", 6)) {
		v = 0;
		for (int i = 0; i < ncounters; i++)
			if (!strcmp(counters[i].name, k + 6)) v = counters[i].n;
	} else if (!strcmp(k, "init_device_order")) {
		v = init_device_order;
	} else if (!strcmp(k, "retained")) {
		v = 0;
		for (int i = 0; i < 64; i++) v += retained[i];
	} else {
		long long *p = key(k);
		if (p) v = *p;
	}
	pthread_mutex_unlock(&mu);
	return v;
}

// ---- allocations: device (cuMemAlloc) and pinned host (cuMemHostAlloc) ----
struct region { char *p; uint64_t size; int host; int readonly; };
static struct region *regions;
static int nregions, capregions;

static void add_region(char *p, uint64_t size, int host) {
	if (nregions == capregions) {
		capregions = capregions ? 2 * capregions : 64;
		regions = realloc(regions, capregions * sizeof *regions);
	}
	regions[nregions++] = (struct region){p, size, host, 0};
}

// find_region: the live region of the given kind holding [p, p+n); -1 if none.
static int find_region(const char *p, uint64_t n, int host) {
	for (int i = 0; i < nregions; i++) {
		struct region *r = &regions[i];
		if (r->host == host && p >= r->p && n <= r->size && (uint64_t)(p - r->p) <= r->size - n) return i;
	}
	return -1;
}

static int region_at(const char *p, int host) {
	for (int i = 0; i < nregions; i++)
		if (regions[i].host == host && regions[i].p == p) return i;
	return -1;
}

static void drop_region(int i) { regions[i] = regions[--nregions]; }

// ---- initialisation and devices ----
CUresult cuInit(unsigned flags) {
	int rc = enter("cuInit");
	if (rc) return rc;
	if (flags != 0) return INVALID_VALUE;
	const char *order = getenv("CUDA_DEVICE_ORDER");
	pthread_mutex_lock(&mu);
	init_device_order = !order ? 0 : !strcmp(order, "PCI_BUS_ID") ? 1 : !strcmp(order, "FASTEST_FIRST") ? 2 : 3;
	// A second process of a test sets its fake through the environment.
	if (getenv("FAKECUDA_REFUSE_READ_ONLY")) cfg_refuse_read_only = 1;
	pthread_mutex_unlock(&mu);
	// FAKECUDA_FAIL=NAME:CODE:NTH injects a failure, as fakecuda_fail does.
	const char *inject = getenv("FAKECUDA_FAIL");
	if (inject) {
		char name[64];
		int code, nth;
		if (sscanf(inject, "%63[^:]:%d:%d", name, &code, &nth) == 3) fakecuda_fail(name, code, nth);
	}
	initialized = 1;
	return OK;
}

CUresult cuDriverGetVersion(int *v) {
	int rc = enter("cuDriverGetVersion");
	if (rc) return rc;
	*v = (int)cfg_version;
	return OK;
}

CUresult cuDeviceGetCount(int *n) {
	ENTER("cuDeviceGetCount");
	*n = (int)cfg_devices;
	return OK;
}

CUresult cuDeviceGet(CUdevice *d, int ordinal) {
	ENTER("cuDeviceGet");
	if (ordinal < 0 || ordinal >= cfg_devices) return INVALID_DEVICE;
	*d = ordinal;
	return OK;
}

CUresult cuDeviceGetName(char *name, int len, CUdevice d) {
	ENTER("cuDeviceGetName");
	if (d < 0 || d >= cfg_devices) return INVALID_DEVICE;
	snprintf(name, len, "Fake CUDA GPU %d", d);
	return OK;
}

CUresult cuDeviceGetUuid_v2(unsigned char *uuid, CUdevice d) {
	ENTER("cuDeviceGetUuid_v2");
	if (d < 0 || d >= cfg_devices) return INVALID_DEVICE;
	for (int i = 0; i < 16; i++) uuid[i] = (unsigned char)(0xf0 + i + d);
	return OK;
}

#ifndef FAKECUDA_OMIT_OPTIONAL
// cuDeviceGetUuid (v1) gives the physical GPU's UUID, which differs from the
// device's own for a MIG instance (setting "mig").
CUresult cuDeviceGetUuid(unsigned char *uuid, CUdevice d) {
	ENTER("cuDeviceGetUuid");
	if (d < 0 || d >= cfg_devices) return INVALID_DEVICE;
	for (int i = 0; i < 16; i++) uuid[i] = (unsigned char)(0xf0 + i + d);
	if (cfg_mig) uuid[15] ^= 0x55;
	return OK;
}
#endif

CUresult cuDeviceGetAttribute(int *v, int attr, CUdevice d) {
	ENTER("cuDeviceGetAttribute");
	if (d < 0 || d >= cfg_devices) return INVALID_DEVICE;
	switch (attr) {
	case 18: *v = (int)cfg_integrated; return OK;
	case 32: *v = (int)cfg_ecc; return OK;
	case 75: *v = (int)cfg_major; return OK;
	case 76: *v = (int)cfg_minor; return OK;
	case 102: *v = (int)cfg_vmm; return OK; // VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED
	case 103: *v = (int)cfg_vmm; return OK; // HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED
	}
	return INVALID_VALUE;
}

CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice d) {
	ENTER("cuDeviceTotalMem_v2");
	if (d < 0 || d >= cfg_devices) return INVALID_DEVICE;
	*bytes = (size_t)cfg_total;
	return OK;
}

CUresult cuDevicePrimaryCtxRetain(void **ctx, CUdevice d) {
	ENTER("cuDevicePrimaryCtxRetain");
	if (d < 0 || d >= cfg_devices || d >= 64) return INVALID_DEVICE;
	pthread_mutex_lock(&mu);
	retained[d]++;
	pthread_mutex_unlock(&mu);
	*ctx = &ctx_tokens[d];
	return OK;
}

CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) {
	ENTER("cuDevicePrimaryCtxRelease_v2");
	if (d < 0 || d >= cfg_devices || d >= 64) return INVALID_DEVICE;
	pthread_mutex_lock(&mu);
	int ok = retained[d] > 0;
	if (ok) retained[d]--;
	pthread_mutex_unlock(&mu);
	return ok ? OK : INVALID_CONTEXT;
}

#ifndef FAKECUDA_OMIT_OPTIONAL
CUresult cuDevicePrimaryCtxSetFlags_v2(CUdevice d, unsigned flags) {
	ENTER("cuDevicePrimaryCtxSetFlags_v2");
	if (d < 0 || d >= cfg_devices || d >= 64) return INVALID_DEVICE;
	if (flags & ~0x1fu) return INVALID_VALUE;
	pthread_mutex_lock(&mu);
	ctx_flags = flags;
	pthread_mutex_unlock(&mu);
	return OK;
}
#endif

CUresult cuCtxSetCurrent(void *ctx) {
	ENTER("cuCtxSetCurrent");
	if (ctx != NULL && ((char *)ctx < ctx_tokens || (char *)ctx >= ctx_tokens + 64)) return INVALID_CONTEXT;
	current_ctx = ctx;
	return OK;
}

// ---- memory ----
#ifndef FAKECUDA_OMIT_MEMGETINFO
CUresult cuMemGetInfo_v2(size_t *free, size_t *total) {
	ENTER("cuMemGetInfo_v2");
	NEED_CTX();
	pthread_mutex_lock(&mu);
	*free = (size_t)(cfg_total - used);
	*total = (size_t)cfg_total;
	pthread_mutex_unlock(&mu);
	return OK;
}
#endif

CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t size) {
	ENTER("cuMemAlloc_v2");
	NEED_CTX();
	if (size == 0) return INVALID_VALUE;
	pthread_mutex_lock(&mu);
	if ((long long)size > cfg_total - used) {
		pthread_mutex_unlock(&mu);
		return OUT_OF_MEMORY;
	}
	// 256-byte aligned, as cuMemAlloc guarantees.
	char *p = aligned_alloc(256, (size + 255) / 256 * 256);
	if (!p) {
		pthread_mutex_unlock(&mu);
		return OUT_OF_MEMORY;
	}
	memset(p, 0xA5, size); // device memory is not zeroed
	used += (long long)size;
	dev_live++;
	add_region(p, size, 0);
	pthread_mutex_unlock(&mu);
	*dptr = (CUdeviceptr)(uintptr_t)p;
	return OK;
}

CUresult cuMemFree_v2(CUdeviceptr dptr) {
	ENTER("cuMemFree_v2");
	NEED_CTX();
	pthread_mutex_lock(&mu);
	int i = region_at((char *)(uintptr_t)dptr, 0);
	if (i < 0) {
		pthread_mutex_unlock(&mu);
		return INVALID_VALUE;
	}
	used -= (long long)regions[i].size;
	dev_live--;
	free(regions[i].p);
	drop_region(i);
	pthread_mutex_unlock(&mu);
	return OK;
}

CUresult cuMemHostAlloc(void **pp, size_t size, unsigned flags) {
	ENTER("cuMemHostAlloc");
	NEED_CTX();
	if (size == 0) return INVALID_VALUE;
	char *p = malloc(size);
	if (!p) return OUT_OF_MEMORY;
	pthread_mutex_lock(&mu);
	add_region(p, size, 1);
	host_live++;
	pthread_mutex_unlock(&mu);
	*pp = p;
	return OK;
}

CUresult cuMemFreeHost(void *p) {
	ENTER("cuMemFreeHost");
	NEED_CTX();
	pthread_mutex_lock(&mu);
	int i = region_at(p, 1);
	if (i < 0) {
		pthread_mutex_unlock(&mu);
		return INVALID_VALUE;
	}
	free(regions[i].p);
	drop_region(i);
	host_live--;
	pthread_mutex_unlock(&mu);
	return OK;
}

// ---- streams (copies complete at once; a stream is a token) ----
struct stream { int magic; };
#define STREAM_MAGIC 0x5eed

CUresult cuStreamCreate(void **s, unsigned flags) {
	ENTER("cuStreamCreate");
	NEED_CTX();
	struct stream *st = malloc(sizeof *st);
	st->magic = STREAM_MAGIC;
	pthread_mutex_lock(&mu);
	streams_live++;
	pthread_mutex_unlock(&mu);
	*s = st;
	return OK;
}

static int bad_stream(void *s) { return s == NULL || ((struct stream *)s)->magic != STREAM_MAGIC; }

CUresult cuStreamDestroy_v2(void *s) {
	ENTER("cuStreamDestroy_v2");
	NEED_CTX();
	if (bad_stream(s)) return INVALID_HANDLE;
	((struct stream *)s)->magic = 0;
	free(s);
	pthread_mutex_lock(&mu);
	streams_live--;
	pthread_mutex_unlock(&mu);
	return OK;
}

CUresult cuStreamSynchronize(void *s) {
	ENTER("cuStreamSynchronize");
	NEED_CTX();
	if (bad_stream(s)) return INVALID_HANDLE;
	return OK;
}

// Copies: the device side must lie in a live device allocation and the host
// side in a pinned buffer (vramseal always stages through pinned memory).
static CUresult copy_checked(char *dst, int dst_host, const char *src, int src_host, size_t n, void *s) {
	if (bad_stream(s)) return INVALID_HANDLE;
	pthread_mutex_lock(&mu);
	int di = find_region(dst, n, dst_host);
	int ok = di >= 0 && find_region(src, n, src_host) >= 0;
	int ro = ok && regions[di].readonly;
	pthread_mutex_unlock(&mu);
	if (!ok) return INVALID_VALUE;
	// A write through a read-only mapping faults on the GPU: a sticky error.
	if (ro) return ILLEGAL_ADDRESS;
	memmove(dst, src, n);
	return OK;
}

CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, void *s) {
	ENTER("cuMemcpyHtoDAsync_v2");
	NEED_CTX();
	return copy_checked((char *)(uintptr_t)dst, 0, src, 1, n, s);
}

CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, void *s) {
	ENTER("cuMemcpyDtoHAsync_v2");
	NEED_CTX();
	return copy_checked(dst, 1, (const char *)(uintptr_t)src, 0, n, s);
}

CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, void *s) {
	ENTER("cuMemcpyDtoDAsync_v2");
	NEED_CTX();
	return copy_checked((char *)(uintptr_t)dst, 0, (const char *)(uintptr_t)src, 0, n, s);
}

// Synchronous copies (what a consumer uses): the host side may be any
// memory, as with the real driver's pageable copies.
CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n) {
	ENTER("cuMemcpyDtoH_v2");
	NEED_CTX();
	pthread_mutex_lock(&mu);
	int ok = find_region((const char *)(uintptr_t)src, n, 0) >= 0;
	pthread_mutex_unlock(&mu);
	if (!ok) return INVALID_VALUE;
	memmove(dst, (const void *)(uintptr_t)src, n);
	return OK;
}

CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n) {
	ENTER("cuMemcpyHtoD_v2");
	NEED_CTX();
	pthread_mutex_lock(&mu);
	int i = find_region((const char *)(uintptr_t)dst, n, 0);
	int ro = i >= 0 && regions[i].readonly;
	pthread_mutex_unlock(&mu);
	if (i < 0) return INVALID_VALUE;
	if (ro) return ILLEGAL_ADDRESS;
	memmove((void *)(uintptr_t)dst, src, n);
	return OK;
}

CUresult cuPointerGetAttribute(void *data, int attr, CUdeviceptr p) {
	ENTER("cuPointerGetAttribute");
	NEED_CTX();
	pthread_mutex_lock(&mu);
	int ok = find_region((char *)(uintptr_t)p, 1, 0) >= 0;
	pthread_mutex_unlock(&mu);
	if (!ok) return INVALID_VALUE;
	switch (attr) {
	case 2: *(unsigned *)data = (unsigned)cfg_memtype; return OK;
	case 8: *(unsigned char *)data = cfg_managed != 0; return OK;
	}
	return INVALID_VALUE;
}

// ---- virtual memory management: memfd-backed allocations ----
// A handle is a struct vmm; a reservation is PROT_NONE anonymous memory; a
// mapping replaces part of a reservation with the memfd (MAP_SHARED), made
// accessible by cuMemSetAccess. The memory lives until its handle is
// released and every mapping of it is unmapped (and, across processes,
// until every descriptor of the memfd is closed).
#define VMM_MAGIC 0x7a11
struct vmm { int magic; int fd; uint64_t size; int refs; int exportable; int imported; };
struct reservation { char *p; uint64_t size; };
struct mapping { char *p; uint64_t size; struct vmm *h; };
static struct reservation reservations[256];
static int nreservations;
static struct mapping mappings[256];
static int nmappings;

struct location { int type, id; };
struct alloc_prop {
	int type, handle_types;
	struct location location;
	void *win32;
	unsigned char flags[8];
};
struct access_desc { struct location location; int flags; };

static int bad_prop(const struct alloc_prop *p) {
	return p == NULL || p->type != 1 || p->location.type != 1 || p->location.id < 0 || p->location.id >= cfg_devices ||
	       (p->handle_types & ~1) != 0;
}

static void vmm_unref(struct vmm *h) {
	if (--h->refs > 0) return;
	if (!h->imported) vmm_bytes -= (long long)h->size, used -= (long long)h->size;
	close(h->fd);
	h->magic = 0;
	vmm_handles--;
	free(h);
}

static struct vmm *vmm_of(unsigned long long handle) {
	struct vmm *h = (struct vmm *)(uintptr_t)handle;
	return h != NULL && h->magic == VMM_MAGIC ? h : NULL;
}

CUresult cuMemGetAllocationGranularity(size_t *g, const struct alloc_prop *prop, int option) {
	ENTER("cuMemGetAllocationGranularity");
	if (bad_prop(prop) || (option != 0 && option != 1)) return INVALID_VALUE;
	if (!cfg_vmm) return NOT_SUPPORTED;
	*g = (size_t)cfg_granularity;
	return OK;
}

CUresult cuMemCreate(unsigned long long *handle, size_t size, const struct alloc_prop *prop, unsigned long long flags) {
	ENTER("cuMemCreate");
	NEED_CTX();
	if (bad_prop(prop) || flags != 0 || size == 0 || size % cfg_granularity != 0) return INVALID_VALUE;
	if (!cfg_vmm) return NOT_SUPPORTED;
	pthread_mutex_lock(&mu);
	if ((long long)size > cfg_total - used) {
		pthread_mutex_unlock(&mu);
		return OUT_OF_MEMORY;
	}
	int fd = memfd_create("fakecuda-vmm", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, (off_t)size) != 0) {
		if (fd >= 0) close(fd);
		pthread_mutex_unlock(&mu);
		return OUT_OF_MEMORY;
	}
	struct vmm *h = calloc(1, sizeof *h);
	*h = (struct vmm){VMM_MAGIC, fd, size, 1, prop->handle_types & 1, 0};
	used += (long long)size;
	vmm_bytes += (long long)size;
	vmm_handles++;
	pthread_mutex_unlock(&mu);
	*handle = (unsigned long long)(uintptr_t)h;
	return OK;
}

CUresult cuMemRelease(unsigned long long handle) {
	ENTER("cuMemRelease");
	pthread_mutex_lock(&mu);
	struct vmm *h = vmm_of(handle);
	if (!h) {
		pthread_mutex_unlock(&mu);
		return INVALID_VALUE;
	}
	vmm_unref(h);
	pthread_mutex_unlock(&mu);
	return OK;
}

CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t align, CUdeviceptr addr, unsigned long long flags) {
	ENTER("cuMemAddressReserve");
	if (size == 0 || size % cfg_granularity != 0 || addr != 0 || flags != 0) return INVALID_VALUE;
	void *p = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) return OUT_OF_MEMORY;
	pthread_mutex_lock(&mu);
	if (nreservations == 256) {
		pthread_mutex_unlock(&mu);
		munmap(p, size);
		return OUT_OF_MEMORY;
	}
	reservations[nreservations++] = (struct reservation){p, size};
	vmm_reserved++;
	pthread_mutex_unlock(&mu);
	*ptr = (CUdeviceptr)(uintptr_t)p;
	return OK;
}

CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size) {
	ENTER("cuMemAddressFree");
	char *p = (char *)(uintptr_t)ptr;
	pthread_mutex_lock(&mu);
	int i;
	for (i = 0; i < nreservations; i++)
		if (reservations[i].p == p && reservations[i].size == size) break;
	int busy = 0;
	for (int j = 0; j < nmappings; j++)
		if (mappings[j].p >= p && mappings[j].p < p + size) busy = 1;
	if (i == nreservations || busy) {
		pthread_mutex_unlock(&mu);
		return INVALID_VALUE;
	}
	munmap(p, size);
	reservations[i] = reservations[--nreservations];
	vmm_reserved--;
	pthread_mutex_unlock(&mu);
	return OK;
}

CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, unsigned long long handle, unsigned long long flags) {
	ENTER("cuMemMap");
	char *p = (char *)(uintptr_t)ptr;
	pthread_mutex_lock(&mu);
	struct vmm *h = vmm_of(handle);
	int in = 0;
	for (int i = 0; i < nreservations; i++)
		if (p >= reservations[i].p && size <= reservations[i].size && (uint64_t)(p - reservations[i].p) <= reservations[i].size - size) in = 1;
	for (int j = 0; j < nmappings; j++)
		if (p < mappings[j].p + mappings[j].size && mappings[j].p < p + size) in = 0;
	if (!h || !in || flags != 0 || size == 0 || size % cfg_granularity || offset % cfg_granularity || offset > h->size ||
	    size > h->size - offset || nmappings == 256) {
		pthread_mutex_unlock(&mu);
		return INVALID_VALUE;
	}
	if (mmap(p, size, PROT_NONE, MAP_SHARED | MAP_FIXED, h->fd, (off_t)offset) == MAP_FAILED) {
		pthread_mutex_unlock(&mu);
		return OUT_OF_MEMORY;
	}
	h->refs++;
	mappings[nmappings++] = (struct mapping){p, size, h};
	vmm_maps++;
	last_map = (long long)(uintptr_t)p;
	pthread_mutex_unlock(&mu);
	return OK;
}

CUresult cuMemUnmap(CUdeviceptr ptr, size_t size) {
	ENTER("cuMemUnmap");
	char *p = (char *)(uintptr_t)ptr;
	pthread_mutex_lock(&mu);
	int i;
	for (i = 0; i < nmappings; i++)
		if (mappings[i].p == p && mappings[i].size == size) break;
	if (i == nmappings) {
		pthread_mutex_unlock(&mu);
		return INVALID_VALUE;
	}
	mmap(p, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
	int r = region_at(p, 0);
	if (r >= 0) drop_region(r);
	vmm_unref(mappings[i].h);
	mappings[i] = mappings[--nmappings];
	vmm_maps--;
	pthread_mutex_unlock(&mu);
	return OK;
}

// cuMemSetAccess: PROT_READ (1) or PROT_READWRITE (3) for one device makes
// the mapping a device region (copies, kernels, cuPointerGetAttribute);
// refuse_read_only answers PROT_READ with CUDA_ERROR_NOT_SUPPORTED.
CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const struct access_desc *desc, size_t count) {
	ENTER("cuMemSetAccess");
	char *p = (char *)(uintptr_t)ptr;
	if (count != 1 || desc == NULL || desc->location.type != 1 || desc->location.id < 0 || desc->location.id >= cfg_devices)
		return INVALID_VALUE;
	if (desc->flags != 1 && desc->flags != 3) return INVALID_VALUE;
	if (desc->flags == 1 && cfg_refuse_read_only) return NOT_SUPPORTED;
	pthread_mutex_lock(&mu);
	int i;
	for (i = 0; i < nmappings; i++)
		if (mappings[i].p == p && mappings[i].size == size) break;
	if (i == nmappings) {
		pthread_mutex_unlock(&mu);
		return INVALID_VALUE;
	}
	mprotect(p, size, desc->flags == 3 ? PROT_READ | PROT_WRITE : PROT_READ);
	int r = region_at(p, 0);
	if (r < 0) {
		add_region(p, size, 0);
		r = nregions - 1;
	}
	regions[r].readonly = desc->flags == 1;
	pthread_mutex_unlock(&mu);
	return OK;
}

// Handle type 1: CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR; the shareable
// handle is an int, a new descriptor of the memfd.
CUresult cuMemExportToShareableHandle(void *out, unsigned long long handle, int type, unsigned long long flags) {
	ENTER("cuMemExportToShareableHandle");
	pthread_mutex_lock(&mu);
	struct vmm *h = vmm_of(handle);
	int ok = h && type == 1 && flags == 0 && out != NULL;
	int exportable = ok && h->exportable;
	int fd = exportable ? fcntl(h->fd, F_DUPFD_CLOEXEC, 0) : -1;
	pthread_mutex_unlock(&mu);
	if (!ok) return INVALID_VALUE;
	if (!exportable) return NOT_PERMITTED;
	if (fd < 0) return OUT_OF_MEMORY;
	*(int *)out = fd;
	return OK;
}

// cuMemImportFromShareableHandle: os is (void *)(uintptr_t)fd. The caller
// keeps its descriptor; the handle holds its own.
CUresult cuMemImportFromShareableHandle(unsigned long long *handle, void *os, int type) {
	ENTER("cuMemImportFromShareableHandle");
	if (type != 1) return INVALID_VALUE;
	int fd = (int)(uintptr_t)os;
	struct stat st;
	if (fstat(fd, &st) != 0 || st.st_size <= 0 || st.st_size % cfg_granularity != 0) return INVALID_VALUE;
	int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (nfd < 0) return INVALID_VALUE;
	struct vmm *h = calloc(1, sizeof *h);
	*h = (struct vmm){VMM_MAGIC, nfd, (uint64_t)st.st_size, 1, 1, 1};
	pthread_mutex_lock(&mu);
	vmm_handles++;
	pthread_mutex_unlock(&mu);
	*handle = (unsigned long long)(uintptr_t)h;
	return OK;
}

// ---- legacy IPC (cuIpcGetMemHandle / cuIpcOpenMemHandle_v2) ----
// The fake's 64-byte handle names the exporting process and its descriptor
// of a VMM allocation's memfd: the opener reaches it through
// /proc/PID/fd/N, which only works within one pid namespace, as the real
// legacy IPC does.
struct ipc_handle { uint32_t magic, pid, fd, pad; uint64_t size, base_off; unsigned char rest[32]; };
#define IPC_MAGIC 0x1bcafe01u

// cuIpcGetMemHandle needs no current context here, so tests can call it
// from any thread.
CUresult cuIpcGetMemHandle(struct ipc_handle *out, CUdeviceptr ptr) {
	ENTER("cuIpcGetMemHandle");
	char *p = (char *)(uintptr_t)ptr;
	pthread_mutex_lock(&mu);
	int i;
	for (i = 0; i < nmappings; i++)
		if (p >= mappings[i].p && p < mappings[i].p + mappings[i].size) break;
	if (i == nmappings) {
		pthread_mutex_unlock(&mu);
		return INVALID_VALUE;
	}
	memset(out, 0, sizeof *out);
	out->magic = IPC_MAGIC;
	out->pid = (uint32_t)getpid();
	out->fd = (uint32_t)mappings[i].h->fd;
	out->size = mappings[i].size;
	pthread_mutex_unlock(&mu);
	return OK;
}

// cuIpcOpenMemHandle_v2 takes the handle by value: 64 bytes that the amd64
// calling convention passes on the stack.
CUresult cuIpcOpenMemHandle_v2(CUdeviceptr *ptr, struct ipc_handle h, unsigned flags) {
	ENTER("cuIpcOpenMemHandle_v2");
	NEED_CTX();
	if (h.magic != IPC_MAGIC || flags != 1) return INVALID_VALUE;
	char path[64];
	snprintf(path, sizeof path, "/proc/%u/fd/%u", h.pid, h.fd);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) return errno == ENOENT ? INVALID_HANDLE : NOT_PERMITTED;
	void *p = mmap(NULL, h.size, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED) return INVALID_VALUE;
	pthread_mutex_lock(&mu);
	add_region(p, h.size, 0);
	regions[nregions - 1].readonly = 1;
	vmm_maps++;
	pthread_mutex_unlock(&mu);
	*ptr = (CUdeviceptr)(uintptr_t)p;
	return OK;
}

CUresult cuMemGetAddressRange_v2(CUdeviceptr *base, size_t *size, CUdeviceptr ptr) {
	ENTER("cuMemGetAddressRange_v2");
	NEED_CTX();
	pthread_mutex_lock(&mu);
	int i = find_region((const char *)(uintptr_t)ptr, 1, 0);
	if (i >= 0) {
		if (base) *base = (CUdeviceptr)(uintptr_t)regions[i].p;
		if (size) *size = regions[i].size;
	}
	pthread_mutex_unlock(&mu);
	return i >= 0 ? OK : INVALID_VALUE;
}

CUresult cuIpcCloseMemHandle(CUdeviceptr ptr) {
	ENTER("cuIpcCloseMemHandle");
	NEED_CTX();
	pthread_mutex_lock(&mu);
	int r = region_at((char *)(uintptr_t)ptr, 0);
	if (r < 0) {
		pthread_mutex_unlock(&mu);
		return INVALID_VALUE;
	}
	munmap(regions[r].p, regions[r].size);
	drop_region(r);
	vmm_maps--;
	pthread_mutex_unlock(&mu);
	return OK;
}

// ---- modules and the leaf kernel ----
struct module { int magic; char *image; };
#define MODULE_MAGIC 0x7e11
static char function_token;
static int max_threads = 1024;

// cuModuleLoadDataEx honours the log options vramseal passes (info and
// error log buffers and their sizes, verbose) and writes a line into each.
CUresult cuModuleLoadDataEx(void **m, const void *image, unsigned n, const int *opts, void **vals) {
	ENTER("cuModuleLoadDataEx");
	NEED_CTX();
	char *info = NULL, *err = NULL;
	size_t info_size = 0, err_size = 0;
	for (unsigned i = 0; i < n; i++) {
		switch (opts[i]) {
		case 3: info = vals[i]; break;
		case 4: info_size = (size_t)(uintptr_t)vals[i]; break;
		case 5: err = vals[i]; break;
		case 6: err_size = (size_t)(uintptr_t)vals[i]; break;
		case 12: break;
		default: return INVALID_VALUE;
		}
	}
	const char *s = image;
	// What the JIT would refuse at once: not PTX, no version or target.
	if (strncmp(s, "//", 2) != 0 || !strstr(s, "\n.version ") || !strstr(s, "\n.target sm_") ||
	    !strstr(s, "\n.address_size 64\n")) {
		if (err && err_size) snprintf(err, err_size, "fakecuda: ptx input, line 1; error   : not a PTX module");
		return INVALID_PTX;
	}
	if (info && info_size) snprintf(info, info_size, "fakecuda: loaded %zu bytes of PTX, 0 registers", strlen(s));
	struct module *mod = malloc(sizeof *mod);
	mod->magic = MODULE_MAGIC;
	mod->image = strdup(s);
	pthread_mutex_lock(&mu);
	modules_live++;
	pthread_mutex_unlock(&mu);
	*m = mod;
	return OK;
}

CUresult cuModuleUnload(void *m) {
	ENTER("cuModuleUnload");
	NEED_CTX();
	struct module *mod = m;
	if (mod == NULL || mod->magic != MODULE_MAGIC) return INVALID_HANDLE;
	mod->magic = 0;
	free(mod->image);
	free(mod);
	pthread_mutex_lock(&mu);
	modules_live--;
	pthread_mutex_unlock(&mu);
	return OK;
}

CUresult cuModuleGetFunction(void **f, void *m, const char *name) {
	ENTER("cuModuleGetFunction");
	NEED_CTX();
	struct module *mod = m;
	if (mod == NULL || mod->magic != MODULE_MAGIC) return INVALID_HANDLE;
	char want[256];
	snprintf(want, sizeof want, ".visible .entry %s(", name);
	const char *e = strstr(mod->image, want);
	if (!e) return NOT_FOUND;
	// The host version below reads six .u64 parameters: the entry must
	// declare exactly those.
	const char *end = strchr(e, ')');
	int params = 0;
	for (const char *q = e; q && q < end; q = strstr(q + 1, ".param .u64 ")) {
		if (q != e) params++;
	}
	if (strcmp(name, "vramseal_sha256_leaves") != 0 || params != 6) return NOT_FOUND;
	// A launch may not exceed the block size the entry declares.
	const char *maxntid = strstr(end, ".maxntid ");
	const char *body = strchr(end, '{');
	max_threads = 1024;
	if (maxntid && body && maxntid < body) max_threads = atoi(maxntid + 9);
	*f = &function_token;
	return OK;
}

// SHA-256 (FIPS 180-4), plain C.
static const uint32_t K[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void compress(uint32_t h[8], const unsigned char *blk) {
	uint32_t w[64];
	for (int i = 0; i < 16; i++)
		w[i] = (uint32_t)blk[4 * i] << 24 | (uint32_t)blk[4 * i + 1] << 16 | (uint32_t)blk[4 * i + 2] << 8 | blk[4 * i + 3];
	for (int i = 16; i < 64; i++) {
		uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
	for (int i = 0; i < 64; i++) {
		uint32_t t1 = hh + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
		uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
		hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
	}
	h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

static void sha256(const unsigned char *p, uint64_t n, unsigned char out[32]) {
	uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
	uint64_t full = n / 64 * 64;
	for (uint64_t o = 0; o < full; o += 64) compress(h, p + o);
	unsigned char tail[128] = {0};
	uint64_t rem = n - full;
	memcpy(tail, p + full, rem);
	tail[rem] = 0x80;
	uint64_t tl = rem < 56 ? 64 : 128;
	uint64_t bits = n * 8;
	for (int i = 0; i < 8; i++) tail[tl - 1 - i] = (unsigned char)(bits >> (8 * i));
	compress(h, tail);
	if (tl == 128) compress(h, tail + 64);
	for (int i = 0; i < 8; i++) {
		out[4 * i] = h[i] >> 24; out[4 * i + 1] = h[i] >> 16; out[4 * i + 2] = h[i] >> 8; out[4 * i + 3] = h[i];
	}
}

// cuLaunchKernel runs the leaf kernel's work on the host, reading its six
// .u64 parameters (data, n, leaf_size, first, count, out) from params as
// the GPU would: thread g of the grid hashes leaf first+g when g < count,
// reads only inside the data allocation and writes its 32 bytes at
// out + 32*(first+g), which must lie inside a device allocation.
CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shmem, void *s, void **params, void **extra) {
	ENTER("cuLaunchKernel");
	NEED_CTX();
	if (f != &function_token) return INVALID_HANDLE;
	if (bad_stream(s)) return INVALID_HANDLE;
	if (params == NULL || extra != NULL || gy != 1 || gz != 1 || by != 1 || bz != 1 || bx == 0 || (int)bx > max_threads)
		return INVALID_VALUE;
	uint64_t a[6];
	for (int i = 0; i < 6; i++) a[i] = *(uint64_t *)params[i];
	const unsigned char *data = (const unsigned char *)(uintptr_t)a[0];
	uint64_t n = a[1], L = a[2], first = a[3], count = a[4];
	unsigned char *out = (unsigned char *)(uintptr_t)a[5];
	if (a[0] % 16 != 0 || L % 64 != 0 || L == 0) return MISALIGNED_ADDRESS;
	pthread_mutex_lock(&mu);
	launches++;
	int ok = find_region((const char *)data, n, 0) >= 0;
	pthread_mutex_unlock(&mu);
	if (!ok) return ILLEGAL_ADDRESS;
	uint64_t threads = (uint64_t)gx * bx;
	for (uint64_t g = 0; g < threads && g < count; g++) {
		uint64_t leaf = first + g, off = leaf * L;
		if (off >= n) return ILLEGAL_ADDRESS;
		uint64_t len = n - off < L ? n - off : L;
		pthread_mutex_lock(&mu);
		ok = find_region((const char *)out + 32 * leaf, 32, 0) >= 0;
		pthread_mutex_unlock(&mu);
		if (!ok) return ILLEGAL_ADDRESS;
		sha256(data + off, len, out + 32 * leaf);
		if (cfg_corrupt_kernel) out[32 * leaf] ^= 1;
	}
	return OK;
}
