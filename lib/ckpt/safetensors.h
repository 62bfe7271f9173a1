#pragma once
// Safetensors I/O, independent of any model (https://huggingface.co/docs/safetensors).
//
// File layout: 8-byte little-endian header length N, N bytes of JSON header
//   {"__metadata__": {str: str}, "NAME": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...}
// then the data section; offsets are relative to its start. A checkpoint directory holds model.safetensors, or
// shards model-0000K-of-0000N.safetensors listed in model.safetensors.index.json
//   {"metadata": {"total_size": BYTES}, "weight_map": {"NAME": "model-00001-of-00002.safetensors", ...}}.
//
// Reading memory-maps the files and validates every header field up front; a malformed or truncated file is
// a bad-input error naming the file and the tensor. Writing goes through temporary files + fsync + rename.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace ds {

inline constexpr const char* kSafetensorsFile = "model.safetensors";
inline constexpr const char* kSafetensorsIndexFile = "model.safetensors.index.json";

struct TensorInfo {
  DType dtype = DType::f32;       // as stored in the file
  std::vector<int64_t> shape;
  std::string file;               // path of the file holding the tensor
  uint64_t offset = 0;            // absolute byte offset of the data in that file
  uint64_t nbytes = 0;
  int64_t numel() const;
  std::string shape_str() const;  // "[4, 16]"
};

// DType for a safetensors dtype name ("F32", "BF16", "F16", "F64", "I32", "I64", "U8"); false when unsupported.
bool dtype_from_safetensors_name(std::string_view name, DType* out);

class SafetensorsReader {
 public:
  // A directory (model.safetensors.index.json preferred, else model.safetensors), a .safetensors file, or an
  // index .json file. Bad-input errors for missing files and for any inconsistency in the headers.
  static SafetensorsReader open(const std::string& dir_or_file);

  SafetensorsReader(SafetensorsReader&&) noexcept;
  SafetensorsReader& operator=(SafetensorsReader&&) noexcept;
  ~SafetensorsReader();

  bool has(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  // Bad-input error "missing tensor 'NAME' in SOURCE" when absent.
  const TensorInfo& info(const std::string& name) const;
  // Copies the tensor into dst (any device), converting F32/BF16/F16/F64 to dst's float dtype (integers to
  // integers). A shape mismatch is a bad-input error naming the tensor and both shapes.
  void read_into(const std::string& name, const Tensor& dst) const;
  // The stored bytes (file dtype), valid while the reader lives.
  std::string_view raw(const std::string& name) const;
  // "__metadata__" of the files (merged over shards, first file wins on a conflicting key).
  std::map<std::string, std::string> metadata() const;
  const std::string& source() const;  // what open() was given

 private:
  struct Impl;
  explicit SafetensorsReader(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// Writes DIR/model.safetensors, or, when the data exceed max_shard_bytes (0 = never shard), Hugging Face style
// shards model-0000K-of-0000N.safetensors plus model.safetensors.index.json (shards are cut in the given tensor
// order; a tensor larger than the limit gets a shard of its own). A stale file of the other layout in DIR is
// removed so readers cannot pick it up. Float tensors are stored as file_dtype (f32, bf16, f16 or f64), integer
// tensors in their own dtype. Tensors may live on any device. DIR must exist.
// `metadata` goes to every file's "__metadata__"; "format": "pt" is added unless given (transformers checks it).
void write_safetensors(const std::string& dir, const NamedTensors& tensors, DType file_dtype,
                       size_t max_shard_bytes, const std::map<std::string, std::string>& metadata = {});

// One file at an arbitrary path (e.g. optimizer.safetensors), same rules as above.
void write_safetensors_file(const std::string& path, const NamedTensors& tensors, DType file_dtype,
                            const std::map<std::string, std::string>& metadata = {});

}  // namespace ds
