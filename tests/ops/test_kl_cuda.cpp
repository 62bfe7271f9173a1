// CPU-vs-CUDA parity of the logit-distillation loss (kernels/kl_div.cu against lib/ops/cpu/loss.cpp).
#include <string>
#include <vector>

#include "tests/ops/parity.h"

using namespace ds;
using namespace ds::parity;

namespace {
const DType kF32 = DType::f32, kBF16 = DType::bf16;
const char* kBf16Reason = "bf16 output rounding: half an ulp <= 2^-8 of the value";
std::string tag(const char* op, DType dt, int64_t N, int64_t V) {
  return std::string(op) + " " + dtype_name(dt) + " [" + std::to_string(N) + "," + std::to_string(V) + "]";
}
}

TEST_CASE("parity: kl_div forward and backward", "[loss][kl]") {
  struct Shape {
    int64_t N, V;
  };
  const int kIgnore = -100;
  for (const Shape& s : {Shape{7, 1000}, Shape{33, 7}, Shape{5, 50000}, Shape{3, 129280}}) {
    std::vector<int32_t> tg = rand_ints(s.N, 211, 0, int32_t(s.V));
    tg[1 % s.N] = kIgnore;  // one ignored row
    for (DType dt : {kF32, kBF16}) {
      Twin logits = twin(dt, randn({s.N, s.V}, 212, 3.0)), teacher = twin(dt, randn({s.N, s.V}, 213, 3.0));
      Twin targets = twin_ints({s.N}, tg), loss = twin_out(kF32, {s.N});
      run_both([&](const Context& c, Pick p) { kl_div_forward(c, p(loss), p(logits), p(teacher), p(targets), kIgnore); });
      expect_close(tag("kl_div_forward", dt, s.N, s.V), loss, 2e-5, "two logsumexps and an f32 sum over V (CPU f64)");
      Twin d = twin_out(dt, {s.N, s.V});
      run_both([&](const Context& c, Pick p) {
        kl_div_backward(c, p(d), p(logits), p(teacher), p(targets), 1.0 / double(s.N), kIgnore);
      });
      expect_close(tag("kl_div_backward", dt, s.N, s.V), d, dt == kBF16 ? 5e-3 : 1e-5,
                   dt == kBF16 ? kBf16Reason : "f32 expf(x - lse)");
      Twin d_acc = twin(dt, randu({s.N, s.V}, 214, -0.01, 0.01));
      run_both([&](const Context& c, Pick p) {
        kl_div_backward(c, p(d_acc), p(logits), p(teacher), p(targets), 0.5, kIgnore, Accum::add);
      });
      expect_close(tag("kl_div_backward add", dt, s.N, s.V), d_acc, dt == kBF16 ? 8e-3 : 1e-5,
                   dt == kBF16 ? kBf16Reason : "f32 expf(x - lse)");
    }
  }
}
