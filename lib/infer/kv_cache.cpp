#include "infer/kv_cache.h"

#include <algorithm>

namespace ds {

PagedKvCache::PagedKvCache(const ModelConfig& cfg, int64_t n_layers, int64_t n_pages, int64_t page_size,
                           Device device, DType dtype)
    : arena_(device), n_layers_(n_layers), n_pages_(n_pages), page_size_(page_size),
      width_(cfg.kv_lora_rank + cfg.qk_rope_head_dim) {
  DS_CHECK(n_pages > 0 && page_size > 0, "kv cache needs pages");
  for (int64_t l = 0; l < n_layers; ++l)
    arena_.add("kv_cache.l" + std::to_string(l), dtype, {n_pages, page_size, width_});
  arena_.allocate();
  refcount_.assign(size_t(n_pages), 0);
  for (int64_t p = n_pages - 1; p >= 0; --p) free_.push_back(int32_t(p));
}

size_t PagedKvCache::bytes_per_token() const {
  return size_t(width_ * n_layers_) * (n_layers_ ? dtype_size(arena_[0].dtype) : 0);
}

int32_t PagedKvCache::take_page() {
  int32_t p = free_.back();
  free_.pop_back();
  refcount_[size_t(p)] = 1;
  return p;
}

bool PagedKvCache::reserve(SeqCache& seq, int64_t from, int64_t to) {
  const int64_t have = int64_t(seq.pages.size());
  const int64_t need = std::max(pages_needed(to), have);
  std::vector<size_t> cow;  // existing shared pages that [from, to) writes into
  for (int64_t i = from / page_size_; i < std::min(have, pages_needed(to)); ++i)
    if (refcount_[size_t(seq.pages[size_t(i)])] > 1) cow.push_back(size_t(i));
  if (need - have + int64_t(cow.size()) > free_pages()) return false;
  for (size_t i : cow) {
    const int32_t old = seq.pages[i], fresh = take_page();
    for (int64_t l = 0; l < n_layers_; ++l) {
      Tensor pool = arena_[size_t(l)];
      device_copy(pool.device, pool.index0(fresh).data, pool.device, pool.index0(old).data, pool.index0(old).nbytes());
    }
    --refcount_[size_t(old)];
    seq.pages[i] = fresh;
  }
  while (int64_t(seq.pages.size()) < need) seq.pages.push_back(take_page());
  return true;
}

void PagedKvCache::fork(const SeqCache& src, SeqCache& dst) {
  DS_CHECK(dst.pages.empty(), "fork into a non-empty sequence");
  dst = src;
  for (int32_t p : dst.pages) ++refcount_[size_t(p)];
}

void PagedKvCache::release(SeqCache& seq) {
  for (int32_t p : seq.pages)
    if (--refcount_[size_t(p)] == 0) free_.push_back(p);
  seq.pages.clear();
  seq.len = 0;
}

int32_t PagedKvCache::slot_row(const SeqCache& seq, int64_t t) const {
  DS_CHECK(t / page_size_ < int64_t(seq.pages.size()), "slot_row beyond the reserved pages");
  return int32_t(int64_t(seq.pages[size_t(t / page_size_)]) * page_size_ + t % page_size_);
}

}  // namespace ds
