#pragma once
// CUDA device primitives used by lib/tensor (memory) and --version (build facts). Built only with nvcc.
#include <cstddef>
#include <string>

namespace ds::cuda {

int device_count();  // 0 when no usable GPU or driver
std::string describe();  // runtime, cuBLAS versions and visible devices, one line
void* device_malloc(int device, size_t bytes);
void device_free(int device, void* p);
void device_memset0(int device, void* p, size_t bytes);
void copy_bytes(void* dst, bool dst_on_device, const void* src, bool src_on_device, size_t bytes);

}  // namespace ds::cuda
