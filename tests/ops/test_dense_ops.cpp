// CPU-vs-CUDA parity of the dense ops (kernels/elementwise.cu, embedding.cu, matmul.cu, norm_rope.cu, loss.cu,
// adamw.cu). Every case prints one "parity ..." line with the measured error, its tolerance and the reason.
// Tags: [big] marks the DeepSeek-V3-sized cases (skipped under compute-sanitizer: `~[big]`).
#include "tests/ops/parity.h"

using namespace ds;
using namespace ds::parity;

TEST_CASE("parity harness: guards catch out-of-bounds writes, uploads round like the reference", "[harness]") {
  for (DType dt : {DType::f32, DType::bf16}) {
    const Values x = randu({3, 5}, 7);
    Twin t = twin(dt, x);
    expect_close(std::string("harness round trip ") + name(dt), t, 0.0, "upload rounds exactly like round_to");
    CHECK(t.dev.guard_damage() == 0);
    // One byte past the end: the guard must notice.
    unsigned char b = 0;
    device_copy(t.dev.t.device, static_cast<char*>(t.dev.t.data) + t.dev.t.nbytes(), Device{}, &b, 1);
    CHECK(t.dev.guard_damage() == 1);
    device_copy(t.dev.t.device, static_cast<char*>(t.dev.t.data) - 1, Device{}, &b, 1);
    CHECK(t.dev.guard_damage() == 2);
  }
  DevTensor p = dev_poisoned(DType::f32, {4});
  for (double v : p.values()) CHECK(std::isnan(v));
}
