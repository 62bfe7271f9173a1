// Argument checks name the op and the shapes; CUDA tensors need a CUDA build and an existing device.
#include "helpers.h"

using namespace ds;
using namespace ds::test;

namespace {

// Runs f, expects a ds::Error of the given kind whose message contains every fragment.
template <class F> void expect_error(F f, ErrorKind kind, std::initializer_list<const char*> fragments) {
  try {
    f();
    FAIL("no error thrown");
  } catch (const Error& e) {
    INFO(e.what());
    CHECK(e.kind() == kind);
    for (const char* s : fragments) CHECK(std::string(e.what()).find(s) != std::string::npos);
  }
}

}  // namespace

TEST_CASE("shape and dtype errors name the op and the shapes", "[ops][checks]") {
  const Context ctx = cpu_ctx();
  Owned in = zeros(DType::f32, {4, 8}), w = zeros(DType::f32, {3, 7}), out = zeros(DType::f32, {4, 3});
  expect_error([&] { matmul_forward(ctx, out, in, w); }, ErrorKind::runtime, {"matmul_forward", "[3, 7]", "[4, 8]"});
  Owned w64 = zeros(DType::f64, {3, 8});
  expect_error([&] { matmul_forward(ctx, out, in, w64); }, ErrorKind::runtime, {"matmul_forward", "weight", "f64"});
  Owned rw = zeros(DType::f32, {9}), rstd = zeros(DType::f32, {4});
  expect_error([&] { rmsnorm_forward(ctx, in, rstd, in, rw, 1e-6); }, ErrorKind::runtime, {"rmsnorm_forward", "[9]"});
  Owned q = zeros(DType::f32, {1, 2, 2, 4}), v = zeros(DType::f32, {1, 3, 2, 4});
  expect_error([&] { attention_forward(ctx, v, Tensor{}, q, q, v, 1.0); }, ErrorKind::runtime,
               {"attention_forward", "[1, 3, 2, 4]"});
  Owned logits = zeros(DType::f32, {2, 6}), idx = zeros(DType::i32, {2, 2}), tw = zeros(DType::f32, {2, 2});
  GateOptions o;
  o.n_group = 4;  // does not divide 6
  o.top_k = 2;
  expect_error([&] { moe_gate_forward(ctx, idx, tw, logits, logits, Tensor{}, o); }, ErrorKind::runtime,
               {"moe_gate_forward", "n_group"});
  Owned scores = zeros(DType::f32, {6, 4}), tk = zeros(DType::i32, {6, 1});
  expect_error([&] { moe_balance_loss_forward(ctx, scores, tk, 4, 1.0); }, ErrorKind::runtime,
               {"moe_balance_loss_forward", "seq_len"});
  Owned f32ids = zeros(DType::f32, {4});
  expect_error([&] { embedding_forward(ctx, in, f32ids, in); }, ErrorKind::runtime, {"embedding_forward", "i32"});
}

TEST_CASE("CUDA tensors: usage error without CUDA or without the device, device mismatch is caught", "[ops][checks]") {
  Context cuda;
  // A CUDA build dispatches to the kernels, so point at a device no machine has (usage error before any launch);
  // a CPU-only build refuses every CUDA tensor.
#if DS_HAVE_CUDA
  cuda.device = Device{DeviceKind::cuda, 1000};
#else
  cuda.device = Device{DeviceKind::cuda, 0};
#endif
  static float fake[64];
  Tensor a(fake, DType::f32, {4, 4}, cuda.device), b(fake + 16, DType::f32, {4, 4}, cuda.device);
#if DS_HAVE_CUDA
  expect_error([&] { add(cuda, a, a, b); }, ErrorKind::usage, {"op add: no CUDA device cuda:1000"});
#else
  expect_error([&] { add(cuda, a, a, b); }, ErrorKind::usage, {"op add: CUDA kernels not built yet"});
#endif
  expect_error([&] { rmsnorm_forward(cuda, a, Tensor{}, b, Tensor(fake, DType::f32, {4}, cuda.device), 1e-6); },
               ErrorKind::usage, {"rmsnorm_forward", "CUDA"});
  Owned host = zeros(DType::f32, {4, 4});
  expect_error([&] { add(cuda, a, host, b); }, ErrorKind::runtime, {"add", "cpu", "cuda:"});
  // f64 is CPU-only; stats (rstd) must be f32 on CUDA even when the call is bf16.
  Tensor a64(fake, DType::f64, {4, 2}, cuda.device);
  expect_error([&] { scale(cuda, a64, 2.0); }, ErrorKind::runtime, {"scale", "f32 or bf16 on CUDA"});
  Tensor x16(fake, DType::bf16, {4, 4}, cuda.device), w16(fake, DType::bf16, {4}, cuda.device),
      r16(fake, DType::bf16, {4}, cuda.device);
  expect_error([&] { rmsnorm_forward(cuda, x16, r16, x16, w16, 1e-6); }, ErrorKind::runtime,
               {"rmsnorm_forward", "rstd", "must be f32 on CUDA"});
}
