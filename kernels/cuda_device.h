#pragma once
// CUDA device primitives used by lib/tensor (memory) and --version (build facts). Built only with nvcc.
#include <cstddef>
#include <string>

namespace ds::cuda {

int device_count();  // 0 when no usable GPU or driver
std::string describe();  // runtime, cuBLAS versions and visible devices, one line
void* device_malloc(int device, size_t bytes);
void device_free(int device, void* p);
// Stream-ordered scratch for one op call (cudaMallocAsync / cudaFreeAsync on the stream, from the pool
// keep_async_pool keeps): no synchronisation either way.
void* temp_malloc(int device, void* stream, size_t bytes);
void temp_free(int device, void* stream, void* p);
void device_memset0(int device, void* p, size_t bytes);
void device_memset(int device, void* p, int byte, size_t bytes);
void copy_bytes(void* dst, bool dst_on_device, const void* src, bool src_on_device, size_t bytes);

// Streams and CUDA graphs (the engine's captured decode step). Handles are opaque cudaStream_t / cudaGraphExec_t.
void* stream_create(int device);  // a blocking stream: it still orders with the legacy stream's copies
// A stream of the given kind: blocking or not (a non-blocking stream does not order with the legacy stream), and
// of the device's highest priority or its lowest (the default's): pending blocks of a higher-priority stream are
// scheduled first.
void* stream_create_with(int device, bool blocking, bool high_priority);
void stream_destroy(int device, void* stream);
void stream_sync(void* stream);
void copy_to_device_async(void* dst, const void* src, size_t bytes, void* stream);
void copy_to_host_async(void* dst, const void* src, size_t bytes, void* stream);
void* host_alloc_pinned(size_t bytes);
void host_free_pinned(void* p);
void memset0_async(void* p, size_t bytes, void* stream);
void capture_begin(void* stream);  // thread-local mode: an unsafe call in this thread fails the capture
// Ends the capture and instantiates it; nullptr (and the CUDA error cleared) when the capture was invalidated.
void* capture_end(void* stream, bool ok);
void graph_launch(void* exec, void* stream);
void graph_destroy(void* exec);
void* event_create();  // timing off: a pure ordering event
void event_destroy(void* event);
void event_record(void* event, void* stream);
void event_sync(void* event);  // the host waits for the event's work
void stream_wait(void* stream, void* event);

// Scratch device memory per (device, stream, use) for kernels whose graphs must keep their addresses: at least
// `want` bytes when possible, `have` getting the size. It grows (geometrically) only while the stream is not
// capturing; under a capture that needs more, the smaller buffer comes back (have < want). A buffer is never
// freed: a graph captured earlier may still point at it (process lifetime; growth is rare).
enum class ScratchUse { mla_split, sample_truncation, grouped_split };
void* stream_scratch(void* stream, ScratchUse use, size_t want, size_t& have);

}  // namespace ds::cuda
