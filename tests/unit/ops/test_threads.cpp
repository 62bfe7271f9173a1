// Every op gives bit-identical results with 1 and 2 threads (sizes above the parallel threshold).
#include "helpers.h"

using namespace ds;
using namespace ds::test;

namespace {

// Runs every op on fixed f32 inputs; returns all outputs (and the host scalars as a tensor).
std::vector<Owned> run_all(const Context& ctx) {
  const DType f = DType::f32;
  std::vector<Owned> keep;
  std::vector<double> scalars;
  // elementwise, reductions, conversions
  Owned a = rand(f, {64, 512}, 1), b = rand(f, {64, 512}, 2), c = zeros(f, {64, 512});
  add(ctx, c, a, b);
  axpy(ctx, c, 0.3, a);
  scale(ctx, c, 1.7);
  Owned c64 = zeros(DType::f64, {64, 512}), cb = zeros(DType::bf16, {64, 512});
  copy(ctx, c64, c);
  copy(ctx, cb, c64);
  scalars.push_back(sum(ctx, c));
  scalars.push_back(sum_squares(ctx, c));
  Owned sw = zeros(f, {64, 512}), dg = zeros(f, {64, 512}), du = zeros(f, {64, 512});
  swiglu_forward(ctx, sw, a, b);
  swiglu_backward(ctx, dg, du, c, a, b);
  keep.insert(keep.end(), {c, c64, cb, sw, dg, du});
  // embedding
  std::vector<int32_t> ids(64);
  for (int i = 0; i < 64; ++i) ids[size_t(i)] = (i * 37) % 100;
  Owned table = rand(f, {100, 512}, 3), emb = zeros(f, {64, 512}), dtable = zeros(f, {100, 512});
  embedding_forward(ctx, emb, ints({64}, ids), table);
  embedding_backward(ctx, dtable, c, ints({64}, ids));
  keep.insert(keep.end(), {emb, dtable});
  // rmsnorm
  Owned w = rand(f, {512}, 4), out = zeros(f, {64, 512}), rstd = zeros(f, {64});
  Owned dx = zeros(f, {64, 512}), dw = zeros(f, {512});
  rmsnorm_forward(ctx, out, rstd, a, w, 1e-6);
  rmsnorm_backward(ctx, dx, dw, b, a, w, rstd);
  keep.insert(keep.end(), {out, rstd, dx, dw});
  // rope
  std::vector<int32_t> pos(64);
  for (int i = 0; i < 64; ++i) pos[size_t(i)] = 3 * i;
  Owned freq = rand(f, {32}, 5, 0, 1), ry = zeros(f, {64, 8, 64}), rdx = zeros(f, {64, 8, 64});
  rope_forward(ctx, ry, a.t.view({64, 8, 64}), ints({64}, pos), freq, 1.1);
  rope_backward(ctx, rdx, ry, ints({64}, pos), freq, 1.1);
  keep.insert(keep.end(), {ry, rdx});
  // attention
  const int64_t B = 2, T = 48, H = 4, Dqk = 24, Dv = 16;
  Owned q = rand(f, {B, T, H, Dqk}, 6), k = rand(f, {B, T, H, Dqk}, 7), v = rand(f, {B, T, H, Dv}, 8);
  Owned ao = zeros(f, {B, T, H, Dv}), lse = zeros(f, {B, H, T}), R = rand(f, {B, T, H, Dv}, 9);
  Owned dq = zeros(f, {B, T, H, Dqk}), dk = zeros(f, {B, T, H, Dqk}), dv = zeros(f, {B, T, H, Dv});
  attention_forward(ctx, ao, lse, q, k, v, 0.2);
  attention_backward(ctx, dq, dk, dv, R, ao, lse, q, k, v, 0.2);
  keep.insert(keep.end(), {ao, lse, dq, dk, dv});
  // gate + balance loss + dispatch
  const int64_t N = 512, E = 32, K = 4, D = 16;
  GateOptions o;
  o.n_group = 4;
  o.topk_group = 2;
  o.top_k = int(K);
  o.routed_scaling_factor = 2.5;
  Owned logits = rand(f, {N, E}, 10, -3, 3), bias = rand(f, {E}, 11, -0.1, 0.1);
  Owned idx = zeros(DType::i32, {N, K}), tw = zeros(f, {N, K}), scores = zeros(f, {N, E});
  moe_gate_forward(ctx, idx, tw, scores, logits, bias, o);
  Owned dscores = zeros(f, {N, E}), dlogits = zeros(f, {N, E});
  scalars.push_back(moe_balance_loss_forward(ctx, scores, idx, 64, 0.01));
  moe_balance_loss_backward(ctx, dscores, 1.0, scores, idx, 64, 0.01);
  moe_gate_backward(ctx, dlogits, tw, dscores, scores, idx, o);
  Owned row_of = zeros(DType::i32, {N, K}), offsets = zeros(DType::i64, {E + 1}), counts = zeros(DType::i64, {E});
  moe_route(ctx, row_of, offsets, counts, idx, E);
  Owned tok = rand(f, {N, D}, 12), perm = zeros(f, {N * K, D}), back = zeros(f, {N, D}), dtok = zeros(f, {N, D});
  Owned deo = zeros(f, {N * K, D}), dtw = zeros(f, {N, K});
  moe_permute_forward(ctx, perm, tok, row_of);
  moe_unpermute_forward(ctx, back, perm, row_of, tw);
  moe_unpermute_backward(ctx, deo, dtw, tok, perm, row_of, tw);
  moe_permute_backward(ctx, dtok, deo, row_of);
  moe_bias_update(ctx, bias, counts, 0.001);
  keep.insert(keep.end(), {idx, tw, scores, dscores, dlogits, row_of, offsets, counts});
  keep.insert(keep.end(), {perm, back, dtok, deo, dtw, bias});
  // loss
  Owned loss = zeros(f, {64}), clse = zeros(f, {64}), dlog = zeros(f, {64, 512});
  std::vector<int32_t> tg(64);
  for (int i = 0; i < 64; ++i) tg[size_t(i)] = i % 7 == 0 ? -100 : (i * 13) % 512;
  cross_entropy_forward(ctx, loss, clse, a, ints({64}, tg), -100);
  cross_entropy_backward(ctx, dlog, a, clse, ints({64}, tg), 1.0 / 64, -100);
  keep.insert(keep.end(), {loss, clse, dlog});
  // optimizer
  Owned p = rand(f, {64, 512}, 13), m = zeros(f, {64, 512}), vv = zeros(f, {64, 512});
  AdamWOptions ao_;
  ao_.weight_decay = 0.1;
  adamw_update(ctx, p, b, m, vv, ao_);
  keep.insert(keep.end(), {p, m, vv});
  keep.push_back(from(DType::f64, {int64_t(scalars.size())}, scalars));
  return keep;
}

}  // namespace

TEST_CASE("results are identical with threads=1 and threads=2", "[ops][threads]") {
  std::vector<Owned> one = run_all(cpu_ctx(1)), two = run_all(cpu_ctx(2));
  REQUIRE(one.size() == two.size());
  for (size_t i = 0; i < one.size(); ++i) {
    INFO("output #" << i << " " << one[i].t.shape_str());
    CHECK(bitwise_equal(one[i], two[i]));
  }
}
