#include "tensor/tensor.h"

#include <cstdlib>

namespace ds {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::bf16: return 2;
    case DType::f16: return 2;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::u8: return 1;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::u8: return "u8";
  }
  return "?";
}

const char* dtype_safetensors_name(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::bf16: return "BF16";
    case DType::f16: return "F16";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
    case DType::u8: return "U8";
  }
  return "?";
}

bool dtype_is_float(DType t) {
  return t == DType::f32 || t == DType::f64 || t == DType::bf16 || t == DType::f16;
}

std::string Device::str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }

Device Device::parse(const std::string& s) {
  if (s == "cpu") return Device{};
  if (s == "cuda") return Device{DeviceKind::cuda, 0};
  if (s.rfind("cuda:", 0) == 0 && s.size() > 5) {
    char* end = nullptr;
    long i = std::strtol(s.c_str() + 5, &end, 10);
    if (*end == '\0' && i >= 0) return Device{DeviceKind::cuda, int(i)};
  }
  throw_usage("unknown device '" + s + "' (expected cpu, cuda or cuda:N)");
}

static void set_dims(Tensor& t, const int64_t* d, size_t n) {
  DS_CHECK(n <= size_t(kMaxDims), "too many dims");
  t.ndim = int(n);
  for (size_t i = 0; i < n; ++i) {
    DS_CHECK(d[i] >= 0, "negative dim");
    t.shape[i] = d[i];
  }
}

Tensor::Tensor(void* p, DType t, std::initializer_list<int64_t> dims, Device dev) : data(p), dtype(t), device(dev) {
  set_dims(*this, dims.begin(), dims.size());
}
Tensor::Tensor(void* p, DType t, const std::vector<int64_t>& dims, Device dev) : data(p), dtype(t), device(dev) {
  set_dims(*this, dims.data(), dims.size());
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

Tensor Tensor::view(std::initializer_list<int64_t> dims) const { return view(std::vector<int64_t>(dims)); }

Tensor Tensor::view(const std::vector<int64_t>& dims) const {
  std::vector<int64_t> d = dims;
  int64_t known = 1;
  int neg = -1;
  for (size_t i = 0; i < d.size(); ++i) {
    if (d[i] == -1) {
      DS_CHECK(neg < 0, "view: more than one -1");
      neg = int(i);
    } else {
      known *= d[i];
    }
  }
  if (neg >= 0) {
    DS_CHECK(known > 0 && numel() % known == 0, "view: cannot infer dim for " + shape_str());
    d[neg] = numel() / known;
    known *= d[neg];
  }
  DS_CHECK(known == numel(), "view: numel mismatch, " + shape_str());
  Tensor t = *this;
  set_dims(t, d.data(), d.size());
  return t;
}

Tensor Tensor::slice0(int64_t begin, int64_t end) const {
  DS_CHECK(ndim >= 1 && 0 <= begin && begin <= end && end <= shape[0], "slice0 out of range on " + shape_str());
  Tensor t = *this;
  int64_t row = numel() / (shape[0] ? shape[0] : 1);
  if (shape[0] == 0) row = 0;
  t.data = static_cast<char*>(data) + size_t(begin * row) * dtype_size(dtype);
  t.shape[0] = end - begin;
  if (data == nullptr) t.data = nullptr;
  return t;
}

Tensor Tensor::index0(int64_t i) const {
  Tensor t = slice0(i, i + 1);
  for (int d = 1; d < ndim; ++d) t.shape[d - 1] = shape[d];
  t.ndim = ndim - 1;
  return t;
}

std::string Tensor::shape_str() const {
  std::string s = "[";
  for (int i = 0; i < ndim; ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

bool same_shape(const Tensor& a, const Tensor& b) {
  if (a.ndim != b.ndim) return false;
  for (int i = 0; i < a.ndim; ++i)
    if (a.shape[i] != b.shape[i]) return false;
  return true;
}

}  // namespace ds
