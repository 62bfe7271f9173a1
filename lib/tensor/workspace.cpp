#include "tensor/workspace.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "tensor/arena.h"

namespace ds {

namespace {
constexpr size_t kAlign = 64;
constexpr size_t kMinChunk = size_t(1) << 20;
size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
bool poison_on() {
  static const bool on = [] {
    const char* v = std::getenv("DS_WORKSPACE_POISON");
    return v && *v && std::string(v) != "0";
  }();
  return on;
}
}  // namespace

Workspace::~Workspace() {
  for (Chunk& c : chunks_) device_free(device_, c.base);
}

Tensor Workspace::alloc(const std::string& name, DType dtype, const std::vector<int64_t>& shape) {
  Tensor t(nullptr, dtype, shape, device_);
  const size_t need = align_up(t.nbytes());
  Chunk* chunk = nullptr;
  for (Chunk& c : chunks_)
    if (c.size - c.used >= need) {
      chunk = &c;
      break;
    }
  if (!chunk) {
    // A quarter of the pass's bytes so far: the first pass's chunks then sum to at most ~1.25x what it uses (a new
    // chunk of all of them, as before, could double it: the training step's first-pass peak moved by GBs with the
    // order of its allocations); reset() merges them into one block of what was used.
    const size_t size = std::max(need, std::max(kMinChunk, high_water_ / 4));
    chunks_.push_back(Chunk{device_alloc(device_, size), size, 0, 0});
    chunk = &chunks_.back();
  }
  t.data = static_cast<char*>(chunk->base) + chunk->used;
  if (!zero_fill_) {
    if (poison_on()) device_memset(device_, t.data, 0xFF, need);
  } else if (chunk->used + need > chunk->zero_to) {
    // bytes below zero_to were zeroed by reset() and not handed out since: no memset (one per step instead of one
    // per tensor, which on a GPU was a launch per activation)
    device_memset0(device_, t.data, need);
  }
  chunk->used += need;
  high_water_ += need;
  if (recording_) recorded_.emplace_back(name, t);
  return t;
}

void Workspace::reset() {
  if (chunks_.size() > 1) {
    // Merge into one block of what the last pass used. (Its chunks' sum, taken before, was up to ~2x that: each new
    // chunk is at least the pass's bytes so far; a CPU small-preset run merged 224 MB for 175 used, 125 for 65.)
    for (Chunk& c : chunks_) device_free(device_, c.base);
    chunks_.clear();
    const size_t size = high_water_;
    chunks_.push_back(Chunk{device_alloc(device_, size), size, 0, 0});
  }
  for (Chunk& c : chunks_) {
    // what the last pass handed out is zeroed here in one call; alloc() then skips the memset below zero_to
    if (zero_fill_) {
      if (c.used > 0) device_memset0(device_, c.base, c.used);
      c.zero_to = std::max(c.zero_to, c.used);
    } else {
      c.zero_to = 0;  // nothing is known to be zero (if zero fill is turned back on, alloc() zeroes again)
    }
    c.used = 0;
  }
  high_water_ = 0;
  recorded_.clear();
}

void Workspace::zero_all() {
  for (Chunk& c : chunks_) {
    if (c.zero_to < c.size) device_memset0(device_, static_cast<char*>(c.base) + c.zero_to, c.size - c.zero_to);
    c.zero_to = c.size;
  }
}

std::vector<std::pair<void*, size_t>> Workspace::blocks() const {
  std::vector<std::pair<void*, size_t>> b;
  for (const Chunk& c : chunks_) b.emplace_back(c.base, c.size);
  return b;
}

size_t Workspace::capacity() const {
  size_t n = 0;
  for (const Chunk& c : chunks_) n += c.size;
  return n;
}

}  // namespace ds
