// Safetensors reading: mmap + header validation (see safetensors.h for the format).
#include "ckpt/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <simdjson.h>

#include "ckpt/convert.h"
#include "core/error.h"
#include "tensor/arena.h"

namespace fs = std::filesystem;

namespace ds {

static_assert(std::endian::native == std::endian::little, "safetensors data are little-endian");

// The safetensors reference implementation refuses headers above 100 MB; so do we (a corrupt length field
// must not make us allocate gigabytes).
static constexpr uint64_t kMaxHeaderBytes = 100'000'000;

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorInfo::shape_str() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

bool dtype_from_safetensors_name(std::string_view name, DType* out) {
  static const std::pair<const char*, DType> table[] = {
      {"F32", DType::f32}, {"F64", DType::f64}, {"BF16", DType::bf16}, {"F16", DType::f16},
      {"I32", DType::i32}, {"I64", DType::i64}, {"U8", DType::u8}};
  for (const auto& [n, t] : table)
    if (name == n) {
      *out = t;
      return true;
    }
  return false;
}

namespace {

std::string shape_to_string(const std::vector<int64_t>& shape) {
  TensorInfo t;
  t.shape = shape;
  return t.shape_str();
}

// A read-only memory map of a whole file.
struct MappedFile {
  std::string path;
  const unsigned char* base = nullptr;
  size_t size = 0;

  explicit MappedFile(const std::string& p) : path(p) {
    int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw_bad_input(std::string("cannot open: ") + std::strerror(errno), p);
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      throw_bad_input("not a regular file", p);
    }
    size = size_t(st.st_size);
    if (size < 8) {
      ::close(fd);
      throw_bad_input("file is too short to be safetensors (" + std::to_string(size) + " bytes)", p);
    }
    void* m = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int saved = errno;
    ::close(fd);
    if (m == MAP_FAILED) throw_runtime("cannot mmap '" + p + "': " + std::strerror(saved));
    base = static_cast<const unsigned char*>(m);
  }
  ~MappedFile() {
    if (base) ::munmap(const_cast<unsigned char*>(base), size);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
};

struct Entry {
  TensorInfo info;
  const unsigned char* data = nullptr;
};

}  // namespace

struct SafetensorsReader::Impl {
  std::string source;
  std::vector<std::unique_ptr<MappedFile>> files;
  std::map<std::string, Entry> tensors;
  std::map<std::string, std::string> meta;

  void add_file(const std::string& path);
  void parse_tensor(const MappedFile& f, uint64_t data_start, std::string_view name, simdjson::dom::element v);
};

namespace {

[[noreturn]] void bad_tensor(const std::string& name, const std::string& what, const std::string& file) {
  throw_bad_input("tensor '" + name + "': " + what, file);
}

}  // namespace

void SafetensorsReader::Impl::parse_tensor(const MappedFile& f, uint64_t data_start, std::string_view key,
                                           simdjson::dom::element v) {
  const std::string name(key);
  simdjson::dom::object obj;
  if (v.get_object().get(obj)) bad_tensor(name, "header entry is not an object", f.path);

  std::string_view dtype_name;
  if (obj["dtype"].get_string().get(dtype_name)) bad_tensor(name, "missing or non-string \"dtype\"", f.path);
  Entry e;
  if (!dtype_from_safetensors_name(dtype_name, &e.info.dtype))
    bad_tensor(name, "unsupported dtype '" + std::string(dtype_name) + "'", f.path);

  simdjson::dom::array shape;
  if (obj["shape"].get_array().get(shape)) bad_tensor(name, "missing or non-array \"shape\"", f.path);
  uint64_t numel = 1;
  for (simdjson::dom::element d : shape) {
    uint64_t dim;
    if (d.get_uint64().get(dim) || dim > (uint64_t(1) << 48))
      bad_tensor(name, "shape entries must be non-negative integers", f.path);
    e.info.shape.push_back(int64_t(dim));
    numel *= dim;
    if (numel > (uint64_t(1) << 48)) bad_tensor(name, "shape " + e.info.shape_str() + " is too large", f.path);
  }
  if (e.info.shape.size() > size_t(kMaxDims))
    bad_tensor(name, "has " + std::to_string(e.info.shape.size()) + " dims; at most " +
                         std::to_string(kMaxDims) + " are supported", f.path);

  simdjson::dom::array offs;
  uint64_t begin = 0, end = 0;
  if (obj["data_offsets"].get_array().get(offs) || offs.size() != 2 || offs.at(0).get_uint64().get(begin) ||
      offs.at(1).get_uint64().get(end))
    bad_tensor(name, "\"data_offsets\" must be two non-negative integers", f.path);
  if (end < begin)
    bad_tensor(name, "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] are reversed",
               f.path);
  const uint64_t need = numel * dtype_size(e.info.dtype);
  if (end - begin != need)
    bad_tensor(name, "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] hold " +
                         std::to_string(end - begin) + " bytes but " + std::string(dtype_name) + " " +
                         e.info.shape_str() + " needs " + std::to_string(need), f.path);
  if (data_start + end > f.size)
    bad_tensor(name, "data ends at byte " + std::to_string(data_start + end) + " but the file has " +
                         std::to_string(f.size), f.path);

  e.info.file = f.path;
  e.info.offset = data_start + begin;
  e.info.nbytes = need;
  e.data = f.base + e.info.offset;
  if (!tensors.emplace(name, std::move(e)).second)
    bad_tensor(name, "appears twice (in " + tensors.at(name).info.file + ")", f.path);
}

void SafetensorsReader::Impl::add_file(const std::string& path) {
  files.push_back(std::make_unique<MappedFile>(path));
  const MappedFile& f = *files.back();
  uint64_t hlen;
  std::memcpy(&hlen, f.base, 8);
  if (hlen > f.size - 8)
    throw_bad_input("corrupted header: header length " + std::to_string(hlen) + " exceeds the file size " +
                        std::to_string(f.size), path);
  if (hlen > kMaxHeaderBytes)
    throw_bad_input("corrupted header: header length " + std::to_string(hlen) + " is above the 100 MB limit",
                    path);
  const uint64_t data_start = 8 + hlen;

  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (auto err = parser.parse(reinterpret_cast<const char*>(f.base + 8), size_t(hlen)).get(root))
    throw_bad_input(std::string("corrupted header: ") + simdjson::error_message(err), path);
  simdjson::dom::object obj;
  if (root.get_object().get(obj)) throw_bad_input("corrupted header: not a JSON object", path);

  std::vector<std::pair<uint64_t, std::string>> starts;  // (offset, name) for the overlap check
  for (auto field : obj) {
    if (field.key == "__metadata__") {
      simdjson::dom::object m;
      if (field.value.get_object().get(m)) throw_bad_input("corrupted header: __metadata__ is not an object", path);
      for (auto kv : m) {
        std::string_view s;
        if (kv.value.get_string().get(s))
          throw_bad_input("corrupted header: __metadata__ value of '" + std::string(kv.key) + "' is not a string",
                          path);
        meta.emplace(std::string(kv.key), std::string(s));  // first file wins
      }
      continue;
    }
    parse_tensor(f, data_start, field.key, field.value);
    const TensorInfo& ti = tensors.at(std::string(field.key)).info;
    if (ti.nbytes) starts.emplace_back(ti.offset, std::string(field.key));
  }
  std::sort(starts.begin(), starts.end());
  for (size_t i = 1; i < starts.size(); ++i) {
    const TensorInfo& prev = tensors.at(starts[i - 1].second).info;
    if (prev.offset + prev.nbytes > starts[i].first)
      throw_bad_input("corrupted header: tensors '" + starts[i - 1].second + "' and '" + starts[i].second +
                          "' overlap", path);
  }
}

SafetensorsReader::SafetensorsReader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SafetensorsReader::SafetensorsReader(SafetensorsReader&&) noexcept = default;
SafetensorsReader& SafetensorsReader::operator=(SafetensorsReader&&) noexcept = default;
SafetensorsReader::~SafetensorsReader() = default;

namespace {

// Shard file names from an index's "weight_map", in order of first appearance, plus name -> file.
void read_index(const std::string& index_path, std::vector<std::string>* shards,
                std::map<std::string, std::string>* weight_map) {
  simdjson::padded_string json;
  if (simdjson::padded_string::load(index_path).get(json)) throw_bad_input("cannot read the index file", index_path);
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (auto err = parser.parse(json).get(root))
    throw_bad_input(std::string("malformed index: ") + simdjson::error_message(err), index_path);
  simdjson::dom::object wm;
  if (root["weight_map"].get_object().get(wm))
    throw_bad_input("malformed index: \"weight_map\" is missing or not an object", index_path);
  for (auto kv : wm) {
    std::string_view file;
    if (kv.value.get_string().get(file) || file.empty())
      throw_bad_input("malformed index: the file of tensor '" + std::string(kv.key) + "' is not a string",
                      index_path);
    std::string f(file);
    if (std::find(shards->begin(), shards->end(), f) == shards->end()) shards->push_back(f);
    (*weight_map)[std::string(kv.key)] = f;
  }
  if (shards->empty()) throw_bad_input("malformed index: \"weight_map\" is empty", index_path);
}

}  // namespace

SafetensorsReader SafetensorsReader::open(const std::string& dir_or_file) {
  auto impl = std::make_unique<Impl>();
  impl->source = dir_or_file;
  std::error_code ec;
  std::string index_path, single_path;
  if (fs::is_directory(dir_or_file, ec)) {
    fs::path dir(dir_or_file);
    if (fs::exists(dir / kSafetensorsIndexFile, ec)) index_path = (dir / kSafetensorsIndexFile).string();
    else if (fs::exists(dir / kSafetensorsFile, ec)) single_path = (dir / kSafetensorsFile).string();
    else
      throw_bad_input(std::string("no ") + kSafetensorsFile + " or " + kSafetensorsIndexFile + " in the directory",
                      dir_or_file);
  } else if (!fs::exists(dir_or_file, ec)) {
    throw_bad_input("no such file or directory", dir_or_file);
  } else if (dir_or_file.size() >= 5 && dir_or_file.compare(dir_or_file.size() - 5, 5, ".json") == 0) {
    index_path = dir_or_file;
  } else {
    single_path = dir_or_file;
  }

  if (!single_path.empty()) {
    impl->add_file(single_path);
    return SafetensorsReader(std::move(impl));
  }
  std::vector<std::string> shards;
  std::map<std::string, std::string> weight_map;
  read_index(index_path, &shards, &weight_map);
  const fs::path base = fs::path(index_path).parent_path();
  for (const auto& s : shards) {
    std::string p = (base / s).string();
    if (!fs::exists(p, ec)) throw_bad_input("shard '" + s + "' listed in the index does not exist", index_path);
    impl->add_file(p);
  }
  for (const auto& [name, file] : weight_map) {
    auto it = impl->tensors.find(name);
    std::string expect = (base / file).string();
    if (it == impl->tensors.end() || it->second.info.file != expect)
      throw_bad_input("tensor '" + name + "' is listed for " + file + " but that file does not hold it",
                      index_path);
  }
  return SafetensorsReader(std::move(impl));
}

bool SafetensorsReader::has(const std::string& name) const { return impl_->tensors.count(name) != 0; }

std::vector<std::string> SafetensorsReader::names() const {
  std::vector<std::string> out;
  out.reserve(impl_->tensors.size());
  for (const auto& kv : impl_->tensors) out.push_back(kv.first);
  return out;
}

const TensorInfo& SafetensorsReader::info(const std::string& name) const {
  auto it = impl_->tensors.find(name);
  if (it == impl_->tensors.end()) throw_bad_input("missing tensor '" + name + "' in " + impl_->source);
  return it->second.info;
}

std::string_view SafetensorsReader::raw(const std::string& name) const {
  const TensorInfo& ti = info(name);
  return {reinterpret_cast<const char*>(impl_->tensors.at(name).data), size_t(ti.nbytes)};
}

void SafetensorsReader::read_into(const std::string& name, const Tensor& dst) const {
  const TensorInfo& ti = info(name);
  if (ti.shape != dst.dims())
    bad_tensor(name, "the checkpoint has shape " + ti.shape_str() + " but " + shape_to_string(dst.dims()) +
                         " is expected", ti.file);
  if (!dtype_convertible(ti.dtype, dst.dtype))
    bad_tensor(name, std::string("stored as ") + dtype_safetensors_name(ti.dtype) + ", which cannot be read into " +
                         dtype_name(dst.dtype), ti.file);
  const size_t n = size_t(ti.numel());
  if (n == 0) return;
  DS_CHECK(!dst.empty(), "read_into an empty tensor");
  const unsigned char* src = impl_->tensors.at(name).data;
  if (dst.device.is_cpu()) {
    convert_elements(dst.data, dst.dtype, src, ti.dtype, n);
  } else if (ti.dtype == dst.dtype) {
    device_copy(dst.device, dst.data, Device{}, src, dst.nbytes());
  } else {
    std::vector<unsigned char> host(dst.nbytes());
    convert_elements(host.data(), dst.dtype, src, ti.dtype, n);
    device_copy(dst.device, dst.data, Device{}, host.data(), host.size());
  }
}

std::map<std::string, std::string> SafetensorsReader::metadata() const { return impl_->meta; }

const std::string& SafetensorsReader::source() const { return impl_->source; }

}  // namespace ds
