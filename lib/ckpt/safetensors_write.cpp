// Safetensors writing: Hugging Face layout (header order, 8-byte padding, shards + index), atomic files.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>

#include "ckpt/ckpt_dir.h"
#include "ckpt/convert.h"
#include "ckpt/safetensors.h"
#include "core/json.h"
#include "tensor/arena.h"

namespace fs = std::filesystem;

namespace ds {

namespace {

struct Item {
  const std::string* name;
  const Tensor* tensor;
  DType stored;     // dtype in the file
  uint64_t nbytes;  // in the file
};

std::vector<Item> plan(const NamedTensors& tensors, DType file_dtype) {
  DS_CHECK(dtype_is_float(file_dtype), std::string("file dtype must be a float type, got ") + dtype_name(file_dtype));
  std::vector<Item> items;
  std::set<std::string_view> seen;
  for (const auto& [name, t] : tensors) {
    DS_CHECK(!name.empty() && name != "__metadata__", "invalid tensor name '" + name + "'");
    DS_CHECK(seen.insert(name).second, "tensor '" + name + "' given twice");
    DS_CHECK(t.numel() == 0 || !t.empty(), "tensor '" + name + "' has no data");
    DType stored = dtype_is_float(t.dtype) ? file_dtype : t.dtype;
    items.push_back({&name, &t, stored, uint64_t(t.numel()) * dtype_size(stored)});
  }
  return items;
}

std::map<std::string, std::string> with_format(const std::map<std::string, std::string>& metadata) {
  auto m = metadata;
  m.emplace("format", "pt");  // transformers refuses safetensors files whose metadata lacks a known format
  return m;
}

// Streams one tensor into the file, converting in bounded chunks so memory stays small.
void write_tensor_data(AtomicFile& f, const Item& it) {
  const Tensor& t = *it.tensor;
  const size_t n = size_t(t.numel());
  if (n == 0) return;
  const unsigned char* src = static_cast<const unsigned char*>(t.data);
  std::vector<unsigned char> host;
  if (!t.device.is_cpu()) {
    host.resize(t.nbytes());
    device_copy(Device{}, host.data(), t.device, t.data, t.nbytes());
    src = host.data();
  }
  if (t.dtype == it.stored) {
    f.write(src, it.nbytes);
    return;
  }
  const size_t chunk = size_t(1) << 20;
  std::vector<unsigned char> buf(std::min(n, chunk) * dtype_size(it.stored));
  for (size_t i = 0; i < n; i += chunk) {
    size_t m = std::min(chunk, n - i);
    convert_elements(buf.data(), it.stored, src + i * dtype_size(t.dtype), t.dtype, m);
    f.write(buf.data(), m * dtype_size(it.stored));
  }
}

void write_file(const std::string& path, std::vector<Item> items, const std::map<std::string, std::string>& meta) {
  // Like the safetensors reference writer: larger elements first, then by name, so every tensor starts at a
  // multiple of its element size (the data section itself starts 8-aligned).
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    size_t sa = dtype_size(a.stored), sb = dtype_size(b.stored);
    return sa != sb ? sa > sb : *a.name < *b.name;
  });
  JsonWriter w;
  w.begin_object();
  w.key("__metadata__").begin_object();
  for (const auto& [k, v] : meta) w.kv(k, v);
  w.end_object();
  uint64_t offset = 0;
  for (const Item& it : items) {
    w.key(*it.name).begin_object();
    w.kv("dtype", dtype_safetensors_name(it.stored));
    w.key("shape").begin_array();
    for (int d = 0; d < it.tensor->ndim; ++d) w.value(int64_t(it.tensor->shape[d]));
    w.end_array();
    w.key("data_offsets").begin_array().value(offset).value(offset + it.nbytes).end_array();
    w.end_object();
    offset += it.nbytes;
  }
  w.end_object();
  std::string header = w.take();
  header.append((8 - header.size() % 8) % 8, ' ');

  AtomicFile f(path);
  uint64_t hlen = header.size();
  unsigned char len_le[8];
  for (int i = 0; i < 8; ++i) len_le[i] = static_cast<unsigned char>(hlen >> (8 * i));
  f.write(len_le, 8);
  f.write(header);
  for (const Item& it : items) write_tensor_data(f, it);
  f.commit();
}

std::string shard_name(size_t k, size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", k, n);
  return buf;
}

void remove_if_exists(const fs::path& p) {
  std::error_code ec;
  fs::remove(p, ec);
}

}  // namespace

void write_safetensors_file(const std::string& path, const NamedTensors& tensors, DType file_dtype,
                            const std::map<std::string, std::string>& metadata) {
  write_file(path, plan(tensors, file_dtype), with_format(metadata));
}

void write_safetensors(const std::string& dir, const NamedTensors& tensors, DType file_dtype,
                       size_t max_shard_bytes, const std::map<std::string, std::string>& metadata) {
  std::vector<Item> items = plan(tensors, file_dtype);
  const auto meta = with_format(metadata);
  const fs::path d(dir);
  uint64_t total = 0;
  for (const Item& it : items) total += it.nbytes;
  if (max_shard_bytes == 0 || total <= max_shard_bytes) {
    write_file((d / kSafetensorsFile).string(), std::move(items), meta);
    remove_if_exists(d / kSafetensorsIndexFile);
    return;
  }

  // The split of huggingface_hub's split_state_dict_into_shards: fill shards in order, start a new one when the
  // next tensor would overflow, a tensor above the limit alone in its own shard (here kept in order, so the
  // shards follow the tensor order).
  std::vector<std::vector<Item>> shards;
  std::vector<Item> cur;
  uint64_t cur_bytes = 0;
  for (const Item& it : items) {
    const bool alone = it.nbytes > max_shard_bytes;
    if (!cur.empty() && (alone || cur_bytes + it.nbytes > max_shard_bytes)) {
      shards.push_back(std::move(cur));
      cur.clear();
      cur_bytes = 0;
    }
    if (alone) {
      shards.push_back({it});
      continue;
    }
    cur.push_back(it);
    cur_bytes += it.nbytes;
  }
  if (!cur.empty()) shards.push_back(std::move(cur));

  std::map<std::string, std::string> weight_map;
  for (size_t k = 0; k < shards.size(); ++k) {
    std::string name = shard_name(k + 1, shards.size());
    for (const Item& it : shards[k]) weight_map[*it.name] = name;
    write_file((d / name).string(), shards[k], meta);
  }
  // The index is written last: until it exists, readers do not see the new shards.
  JsonWriter w(true);
  w.begin_object();
  w.key("metadata").begin_object().kv("total_size", total).end_object();
  w.key("weight_map").begin_object();
  for (const auto& [name, file] : weight_map) w.kv(name, file);
  w.end_object();
  w.end_object();
  write_text_file(dir, kSafetensorsIndexFile, w.str() + "\n");
  remove_if_exists(d / kSafetensorsFile);
}

}  // namespace ds
