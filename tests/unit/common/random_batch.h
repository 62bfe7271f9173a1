#pragma once
// A batch of B rows of T + 1 seeded random token ids below the config's vocabulary, for the model tests (CPU and
// GPU); mask_every > 0 leaves every mask_every-th target out of the loss.
#include <cstddef>
#include <cstdint>

#include "core/rng.h"
#include "model/model.h"

namespace ds::test {

inline Batch random_batch(const ModelConfig& c, int64_t B, int64_t T, uint64_t seed, size_t mask_every = 0) {
  Batch b;
  b.B = B;
  b.T = T;
  Rng rng{seed, 1, 0};
  for (int64_t i = 0; i < B * (T + 1); ++i) b.tokens.push_back(int32_t(rng.next_below(uint64_t(c.vocab_size))));
  if (mask_every > 0) {
    b.loss_mask.assign(b.tokens.size(), 1);
    for (size_t i = 0; i < b.loss_mask.size(); i += mask_every) b.loss_mask[i] = 0;
  }
  return b;
}

}  // namespace ds::test
