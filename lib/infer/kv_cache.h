#pragma once
// Paged latent KV cache (MLA): per cached layer a pool [pages, page_size, Rkv + dr] holding, per token, only the
// normalised latent c and the rotated rope key — (kv_lora_rank + qk_rope_head_dim) x layers x element size bytes
// per token. Sequences own lists of pages; pages are reference-counted so G samples of one prompt share the
// prompt's pages, and a shared page is copied before a sequence writes into it (copy on write).
#include <cstdint>
#include <vector>

#include "model/config.h"
#include "tensor/arena.h"

namespace ds {

struct SeqCache {
  std::vector<int32_t> pages;
  int64_t len = 0;  // tokens written (valid)
};

class PagedKvCache {
 public:
  // n_layers: cached layers (main layers + MTP blocks that decode). 
  PagedKvCache(const ModelConfig& cfg, int64_t n_layers, int64_t n_pages, int64_t page_size, Device device,
               DType dtype);
  int64_t page_size() const { return page_size_; }
  int64_t n_pages() const { return n_pages_; }
  int64_t free_pages() const { return int64_t(free_.size()); }
  int64_t slot_width() const { return width_; }  // Rkv + dr
  Tensor pool(int64_t layer) const { return arena_[size_t(layer)]; }
  // Bytes per cached token over all cached layers.
  size_t bytes_per_token() const;

  // Makes room to write tokens [from, to): allocates pages up to `to` and copies every shared page in that range
  // first (copy on write). Returns false (and changes nothing) when the pool is out of pages.
  bool reserve(SeqCache& seq, int64_t from, int64_t to);
  // dst shares every page of src (dst must be empty).
  void fork(const SeqCache& src, SeqCache& dst);
  void release(SeqCache& seq);
  // The pool row (page * page_size + offset) of token t of a sequence.
  int32_t slot_row(const SeqCache& seq, int64_t t) const;
  int64_t pages_needed(int64_t tokens) const { return (tokens + page_size_ - 1) / page_size_; }

 private:
  int32_t take_page();
  Arena arena_;
  int64_t n_layers_, n_pages_, page_size_, width_;
  std::vector<int32_t> refcount_;
  std::vector<int32_t> free_;
};

}  // namespace ds
