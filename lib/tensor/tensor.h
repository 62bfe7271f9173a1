#pragma once
// Tensor: a view (pointer, dtype, shape, device). It owns nothing; arenas own memory (arena.h).
// Shapes are row-major and contiguous. Linear weights use the Hugging Face layout [out, in].
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

#include "core/error.h"

namespace ds {

// f64 exists for the double-precision gradient checks of the CPU reference; checkpoints hold f32/bf16.
enum class DType : uint8_t { f32, f64, bf16, f16, i32, i64, u8 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);           // "f32", "bf16", ...
const char* dtype_safetensors_name(DType t);  // "F32", "BF16", ... (safetensors header spelling)
bool dtype_is_float(DType t);

// bfloat16 storage (round-to-nearest-even on conversion).
struct bf16 {
  uint16_t bits = 0;
};
inline float bf16_to_f32(bf16 h) {
  uint32_t u = uint32_t(h.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline bf16 f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{uint16_t((u >> 16) | 0x40)};  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{uint16_t(u >> 16)};
}

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<bf16>() { return DType::bf16; }
template <> constexpr DType dtype_of<int32_t>() { return DType::i32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::i64; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::u8; }

enum class DeviceKind : uint8_t { cpu, cuda };

struct Device {
  DeviceKind kind = DeviceKind::cpu;
  int index = 0;
  bool is_cpu() const { return kind == DeviceKind::cpu; }
  bool is_cuda() const { return kind == DeviceKind::cuda; }
  bool operator==(const Device& o) const { return kind == o.kind && (kind == DeviceKind::cpu || index == o.index); }
  std::string str() const;               // "cpu", "cuda:0"
  static Device parse(const std::string& s);  // "cpu" | "cuda" | "cuda:N"; usage error otherwise
};

constexpr int kMaxDims = 5;

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::f32;
  Device device{};
  int ndim = 0;
  int64_t shape[kMaxDims] = {};

  Tensor() = default;
  Tensor(void* p, DType t, std::initializer_list<int64_t> dims, Device dev = {});
  Tensor(void* p, DType t, const std::vector<int64_t>& dims, Device dev = {});

  // An empty tensor stands for "absent" (an optional output or input).
  bool empty() const { return data == nullptr; }
  int64_t numel() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
  int64_t dim(int i) const { return shape[i < 0 ? ndim + i : i]; }
  int64_t cols() const { return ndim ? shape[ndim - 1] : 1; }  // last dim
  int64_t rows() const { return ndim ? numel() / cols() : 1; }  // product of the others
  std::vector<int64_t> dims() const { return std::vector<int64_t>(shape, shape + ndim); }

  template <class T> T* ptr() const {
    DS_CHECK(dtype == dtype_of<T>(), std::string("tensor dtype is ") + dtype_name(dtype));
    return static_cast<T*>(data);
  }
  // Same memory, new shape (same numel). One dim may be -1.
  Tensor view(std::initializer_list<int64_t> dims) const;
  Tensor view(const std::vector<int64_t>& dims) const;
  // Rows [begin, end) of dim 0, and element i of dim 0 (drops the dim).
  Tensor slice0(int64_t begin, int64_t end) const;
  Tensor index0(int64_t i) const;
  std::string shape_str() const;  // "[4, 16]"
};

bool same_shape(const Tensor& a, const Tensor& b);

}  // namespace ds
