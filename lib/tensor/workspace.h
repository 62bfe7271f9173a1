#pragma once
// Workspace: a bump allocator for activations and backward temporaries. alloc() hands out zero-filled,
// 64-byte aligned views (or, after set_zero_fill(false), views whose contents are whatever the last pass left:
// for workspaces whose every tensor is written before it is read); reset() invalidates them all. It grows by chunks on its first pass and merges them
// into one block at the next reset, so a steady training loop allocates nothing after the first step.
// Every tensor carries a stable name ("l3.attn.kv_latent"); with recording on, the names and views are kept
// so a debug dump can show which layer diverged.
#include <string>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace ds {

class Workspace {
 public:
  explicit Workspace(Device device = {}) : device_(device) {}
  ~Workspace();
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  Tensor alloc(const std::string& name, DType dtype, const std::vector<int64_t>& shape);
  void reset();
  // Off: alloc() and reset() zero nothing. A training step's workspaces held ~16 GB at the bench shape, whose
  // zeroing was ~6 ms of a ~92 ms step on the H200 (bench/README.md, 11th session). With DS_WORKSPACE_POISON=1 in
  // the environment such views are filled with all-ones bytes instead (NaN in every float dtype), so a read before
  // the first write shows up as NaN; the test suite runs that way.
  void set_zero_fill(bool on) { zero_fill_ = on; }
  size_t capacity() const;  // bytes held
  // After reset(): zeroes every chunk whole, so alloc() issues no memset until the capacity is exceeded (a CUDA
  // graph capture replays the last pass's allocations without any call outside the captured stream).
  void zero_all();
  // The chunks' (base, size), e.g. to zero them on a stream inside a captured graph.
  std::vector<std::pair<void*, size_t>> blocks() const;
  void set_recording(bool on) { recording_ = on; }
  const std::vector<std::pair<std::string, Tensor>>& recorded() const { return recorded_; }

 private:
  struct Chunk {
    void* base;
    size_t size;
    size_t used;
    size_t zero_to;  // [0, zero_to) is known to be zero and not handed out since the last reset
  };
  Device device_;
  bool zero_fill_ = true;
  std::vector<Chunk> chunks_;
  size_t high_water_ = 0;  // bytes handed out since the last reset
  bool recording_ = false;
  std::vector<std::pair<std::string, Tensor>> recorded_;
};

}  // namespace ds
