// Argument checking and device dispatch for every op of ops.h. A failed check names the op, the argument and
// the shapes; the CPU kernels (lib/ops/cpu) then trust their arguments. "[N, E]"-style shapes below mean
// rows() x cols(), so callers may pass [B, T, E] views as well.
#include "ops/ops.h"

#include <cmath>
#include <string>

#include "ops/attention_plan.h"
#include "ops/check.h"
#include "ops/cpu/cpu_ops.h"
#include "tensor/arena.h"

namespace ds {

namespace cuda {
bool mla_attention_backward_one_call();  // kernels/attention.cu
}  // namespace cuda

using opcheck::Check;
using opcheck::desc;
using opcheck::rc;


// ---- elementwise and utility -------------------------------------------------------------------------

void fill(const Context& ctx, Tensor t, double value) {
  Check c(ctx, "fill");
  OP_CHECK(c, !t.empty(), "t is required");
  c.device("t", t);
  OP_CHECK(c, t.dtype != DType::f16 && t.dtype != DType::u8, "t " + desc(t) + ": dtype not supported");
  DS_DISPATCH(c, fill(ctx, t, value));
}

void scale(const Context& ctx, Tensor t, double alpha) {
  Check c(ctx, "scale");
  c.f("t", t);
  DS_DISPATCH(c, scale(ctx, t, alpha));
}

void axpy(const Context& ctx, Tensor y, double alpha, Tensor x) {
  Check c(ctx, "axpy");
  c.f("x", x).wide("y", y);
  OP_CHECK(c, x.numel() == y.numel(), "x " + x.shape_str() + " and y " + y.shape_str() + " differ in size");
  DS_DISPATCH(c, axpy(ctx, y, alpha, x));
}

void add(const Context& ctx, Tensor out, Tensor a, Tensor b) {
  Check c(ctx, "add");
  c.f("out", out).f("a", a).f("b", b);
  OP_CHECK(c, a.numel() == out.numel() && b.numel() == out.numel(),
           "out " + out.shape_str() + ", a " + a.shape_str() + ", b " + b.shape_str() + " differ in size");
  DS_DISPATCH(c, add(ctx, out, a, b));
}

void copy(const Context& ctx, Tensor dst, Tensor src) {
  Check c(ctx, "copy");
  OP_CHECK(c, !dst.empty() && !src.empty(), "dst and src are required");
  OP_CHECK(c, dst.numel() == src.numel(), "dst " + desc(dst) + " and src " + desc(src) + " differ in size");
  auto convertible = [](DType t) { return t == DType::f32 || t == DType::f64 || t == DType::bf16; };
  OP_CHECK(c, dst.dtype == src.dtype || (convertible(dst.dtype) && convertible(src.dtype)),
           std::string("cannot convert ") + dtype_name(src.dtype) + " to " + dtype_name(dst.dtype));
  // Either side on a GPU: the CUDA twin (conversions on the device or the host, copies on ctx's stream, done when
  // it returns). Both on the CPU: a byte copy or cpu::copy's conversion.
  if (dst.device.is_cuda() || src.device.is_cuda()) {
    opcheck::require_cuda_device("copy", dst.device.is_cuda() ? dst.device : src.device);
    if (dst.device.is_cuda() && src.device.is_cuda()) opcheck::require_cuda_device("copy", src.device);
    if constexpr (opcheck::kHaveCuda) return cuda::copy(ctx, dst, src);
  }
  if (dst.dtype == src.dtype) {
    device_copy(dst.device, dst.data, src.device, src.data, dst.nbytes());
    return;
  }
  cpu::copy(ctx, dst, src);
}

void copy_cols(const Context& ctx, Tensor dst, int64_t dst_col, Tensor src, int64_t src_col, int64_t ncols,
               Accum acc) {
  Check c(ctx, "copy_cols");
  OP_CHECK(c, !dst.empty() && !src.empty(), "dst and src are required");
  c.device("dst", dst).device("src", src);
  OP_CHECK(c, dst.dtype == src.dtype, "dst " + desc(dst) + " and src " + desc(src) + " differ in dtype");
  if (acc == Accum::add) c.f("dst", dst);
  OP_CHECK(c, dst.rows() == src.rows(), "dst " + dst.shape_str() + " and src " + src.shape_str() + " differ in rows");
  OP_CHECK(c,
           ncols >= 0 && dst_col >= 0 && src_col >= 0 && dst_col + ncols <= dst.cols() &&
               src_col + ncols <= src.cols(),
           "columns [" + std::to_string(dst_col) + ", +" + std::to_string(ncols) + ") of dst " + dst.shape_str() +
               " or [" + std::to_string(src_col) + ", +" + std::to_string(ncols) + ") of src " + src.shape_str() +
               " out of range");
  DS_DISPATCH(c, copy_cols(ctx, dst, dst_col, src, src_col, ncols, acc));
}

void copy_cols_repeat(const Context& ctx, Tensor dst, int64_t dst_col, int64_t stride, int64_t copies, Tensor src,
                      int64_t src_col, int64_t ncols) {
  Check c(ctx, "copy_cols_repeat");
  OP_CHECK(c, !dst.empty() && !src.empty(), "dst and src are required");
  c.device("dst", dst).device("src", src);
  OP_CHECK(c, dst.dtype == src.dtype, "dst " + desc(dst) + " and src " + desc(src) + " differ in dtype");
  OP_CHECK(c, dst.rows() == src.rows(), "dst " + dst.shape_str() + " and src " + src.shape_str() + " differ in rows");
  OP_CHECK(c, copies >= 1 && (copies == 1 || stride >= ncols),
           "copies " + std::to_string(copies) + " at stride " + std::to_string(stride) + " of " +
               std::to_string(ncols) + " columns would overlap");
  OP_CHECK(c,
           ncols >= 0 && dst_col >= 0 && src_col >= 0 && dst_col + (copies - 1) * stride + ncols <= dst.cols() &&
               src_col + ncols <= src.cols(),
           "columns [" + std::to_string(dst_col) + ", +" + std::to_string(ncols) + ") x " + std::to_string(copies) +
               " at stride " + std::to_string(stride) + " of dst " + dst.shape_str() + " or [" +
               std::to_string(src_col) + ", +" + std::to_string(ncols) + ") of src " + src.shape_str() +
               " out of range");
  DS_DISPATCH(c, copy_cols_repeat(ctx, dst, dst_col, stride, copies, src, src_col, ncols));
}

void sum_cols_repeat(const Context& ctx, Tensor dst, int64_t dst_col, Tensor src, int64_t src_col, int64_t stride,
                     int64_t copies, int64_t ncols, Accum acc) {
  Check c(ctx, "sum_cols_repeat");
  c.f("dst", dst).f("src", src);
  OP_CHECK(c, dst.rows() == src.rows(), "dst " + dst.shape_str() + " and src " + src.shape_str() + " differ in rows");
  OP_CHECK(c, copies >= 1 && (copies == 1 || stride >= ncols),
           "copies " + std::to_string(copies) + " at stride " + std::to_string(stride) + " of " +
               std::to_string(ncols) + " columns would overlap");
  OP_CHECK(c,
           ncols >= 0 && dst_col >= 0 && src_col >= 0 && dst_col + ncols <= dst.cols() &&
               src_col + (copies - 1) * stride + ncols <= src.cols(),
           "columns [" + std::to_string(dst_col) + ", +" + std::to_string(ncols) + ") of dst " + dst.shape_str() +
               " or [" + std::to_string(src_col) + ", +" + std::to_string(ncols) + ") x " + std::to_string(copies) +
               " at stride " + std::to_string(stride) + " of src " + src.shape_str() + " out of range");
  DS_DISPATCH(c, sum_cols_repeat(ctx, dst, dst_col, src, src_col, stride, copies, ncols, acc));
}

static void check_reducible(Check& c, const Tensor& t) {
  OP_CHECK(c, !t.empty(), "t is required");
  c.device("t", t);
  OP_CHECK(c, t.dtype == DType::f32 || t.dtype == DType::f64 || t.dtype == DType::bf16,
           "t " + desc(t) + " must be f32, f64 or bf16");
}

double sum(const Context& ctx, Tensor t) {
  Check c(ctx, "sum");
  check_reducible(c, t);
  DS_DISPATCH(c, sum(ctx, t));
}

double sum_squares(const Context& ctx, Tensor t) {
  Check c(ctx, "sum_squares");
  check_reducible(c, t);
  DS_DISPATCH(c, sum_squares(ctx, t));
}

std::vector<double> sum_squares_each(const Context& ctx, const std::vector<Tensor>& ts) {
  Check c(ctx, "sum_squares_each");
  for (const Tensor& t : ts) check_reducible(c, t);
  DS_DISPATCH(c, sum_squares_each(ctx, ts));
}

void sum_squares_into(const Context& ctx, Tensor out, const std::vector<Tensor>& ts) {
  Check c(ctx, "sum_squares_into");
  if (ts.empty()) return;
  for (const Tensor& t : ts) check_reducible(c, t);
  OP_CHECK(c, !out.empty(), "out is required");
  c.device("out", out);
  OP_CHECK(c, out.dtype == DType::f64 && out.numel() == int64_t(ts.size()),
           "out " + out.shape_str() + " must be f64 with one element a tensor (" + std::to_string(ts.size()) + ")");
  DS_DISPATCH(c, sum_squares_into(ctx, out, ts));
}

void sum_into(const Context& ctx, Tensor out, Tensor t) {
  Check c(ctx, "sum_into");
  check_reducible(c, t);
  OP_CHECK(c, !out.empty(), "out is required");
  c.device("out", out);
  OP_CHECK(c, out.dtype == DType::f64 && out.numel() == 1, "out " + desc(out) + " must be f64 [1]");
  DS_DISPATCH(c, sum_into(ctx, out, t));
}

bool all_finite(const Context& ctx, Tensor t) {
  Check c(ctx, "all_finite");
  check_reducible(c, t);
  DS_DISPATCH(c, all_finite(ctx, t));
}

// ---- embedding -----------------------------------------------------------------------------------------

void embedding_forward(const Context& ctx, Tensor out, Tensor ids, Tensor table) {
  Check c(ctx, "embedding_forward");
  c.f("out", out).f("table", table).index("ids", ids, DType::i32);
  OP_CHECK(c, table.ndim == 2, "table " + table.shape_str() + " must be [V, D]");
  OP_CHECK(c, out.rows() == ids.numel() && out.cols() == table.cols(),
           "out " + out.shape_str() + " must be [N, D] with N = ids " + ids.shape_str() + " and D from table " +
               table.shape_str());
  DS_DISPATCH(c, embedding_forward(ctx, out, ids, table));
}

void embedding_backward(const Context& ctx, Tensor d_table, Tensor d_out, Tensor ids) {
  Check c(ctx, "embedding_backward");
  c.f("d_out", d_out).wide("d_table", d_table).index("ids", ids, DType::i32);
  OP_CHECK(c, d_table.ndim == 2, "d_table " + d_table.shape_str() + " must be [V, D]");
  OP_CHECK(c, d_out.rows() == ids.numel() && d_out.cols() == d_table.cols(),
           "d_out " + d_out.shape_str() + " must be [N, D] with N = ids " + ids.shape_str() + " and D from d_table " +
               d_table.shape_str());
  DS_DISPATCH(c, embedding_backward(ctx, d_table, d_out, ids));
}

// ---- linear --------------------------------------------------------------------------------------------

void matmul_forward(const Context& ctx, Tensor out, Tensor in, Tensor weight, Accum acc, Inputs weight_written) {
  Check c(ctx, "matmul_forward");
  c.f("in", in).f("weight", weight).wide("out", out);
  OP_CHECK(c, weight.ndim == 2 && in.cols() == weight.cols(),
           "weight " + weight.shape_str() + " must be [N, K] with K = last dim of in " + in.shape_str());
  OP_CHECK(c, out.rows() == in.rows() && out.cols() == weight.rows(),
           "out " + out.shape_str() + " must be [M, N] for in " + in.shape_str() + " and weight " + weight.shape_str());
  DS_DISPATCH(c, matmul_forward(ctx, out, in, weight, acc, weight_written));
}

void matmul_backward(const Context& ctx, Tensor d_in, Tensor d_weight, Tensor d_out, Tensor in, Tensor weight,
                     Accum acc_in) {
  Check c(ctx, "matmul_backward");
  c.f("d_out", d_out).f("weight", weight).wide_opt("d_in", d_in).wide_opt("d_weight", d_weight);
  OP_CHECK(c, weight.ndim == 2 && d_out.cols() == weight.rows(),
           "weight " + weight.shape_str() + " must be [N, K] with N = last dim of d_out " + d_out.shape_str());
  if (!d_in.empty())
    OP_CHECK(c, d_in.rows() == d_out.rows() && d_in.cols() == weight.cols(),
             "d_in " + d_in.shape_str() + " must be [M, K] for d_out " + d_out.shape_str() + " and weight " +
                 weight.shape_str());
  if (!d_weight.empty()) {
    c.f("in", in);
    OP_CHECK(c, same_shape(d_weight, weight),
             "d_weight " + d_weight.shape_str() + " must match weight " + weight.shape_str());
    OP_CHECK(c, in.rows() == d_out.rows() && in.cols() == weight.cols(),
             "in " + in.shape_str() + " must be [M, K] for d_out " + d_out.shape_str() + " and weight " +
                 weight.shape_str());
  }
  DS_DISPATCH(c, matmul_backward(ctx, d_in, d_weight, d_out, in, weight, acc_in));
}

void matmul_heads_forward(const Context& ctx, Tensor out, Tensor in, Tensor weight, int64_t k, int64_t n,
                          int64_t w_row0, Inputs weight_written) {
  Check c(ctx, "matmul_heads_forward");
  c.f("in", in).f("weight", weight).wide("out", out);
  OP_CHECK(c, in.ndim == 3 && out.ndim == 3 && weight.ndim == 3,
           "in " + in.shape_str() + ", out " + out.shape_str() + " and weight " + weight.shape_str() + " must be 3-D");
  const int64_t H = in.dim(1);
  OP_CHECK(c, out.dim(0) == in.dim(0) && out.dim(1) == H && weight.dim(0) == H,
           "in " + in.shape_str() + ", out " + out.shape_str() + " and weight " + weight.shape_str() +
               " must agree on rows and heads");
  OP_CHECK(c, k >= 1 && n >= 1 && w_row0 >= 0 && k <= in.dim(2) && n <= out.dim(2) && weight.dim(2) == k &&
                  w_row0 + n <= weight.dim(1),
           "k " + std::to_string(k) + ", n " + std::to_string(n) + ", w_row0 " + std::to_string(w_row0) +
               " do not fit in " + in.shape_str() + ", out " + out.shape_str() + ", weight " + weight.shape_str());
  OP_CHECK(c, out.dtype == in.dtype || c.on_cuda(), "out must have in's dtype");
  DS_DISPATCH(c, matmul_heads_forward(ctx, out, in, weight, k, n, w_row0, weight_written));
}

// ---- RMSNorm -------------------------------------------------------------------------------------------

static void check_rmsnorm(Check& c, const Tensor& x, const char* xname, const Tensor& weight, const Tensor& rstd) {
  OP_CHECK(c, weight.numel() == x.cols(),
           "weight " + weight.shape_str() + " must be [D] with D = last dim of " + xname + " " + x.shape_str());
  if (!rstd.empty())
    OP_CHECK(c, rstd.numel() == x.rows(), "rstd " + rstd.shape_str() + " must have one entry per row of " + xname +
                                              " " + x.shape_str() + " " + rc(x));
}

void rmsnorm_forward(const Context& ctx, Tensor out, Tensor rstd, Tensor in, Tensor weight, double eps) {
  Check c(ctx, "rmsnorm_forward");
  c.f("out", out).f("in", in).f("weight", weight).stat_opt("rstd", rstd);
  OP_CHECK(c, out.numel() == in.numel() && out.cols() == in.cols(),
           "out " + out.shape_str() + " must match in " + in.shape_str());
  check_rmsnorm(c, in, "in", weight, rstd);
  OP_CHECK(c, eps >= 0, "eps must be >= 0, got " + std::to_string(eps));
  DS_DISPATCH(c, rmsnorm_forward(ctx, out, rstd, in, weight, eps));
}

void rmsnorm_backward(const Context& ctx, Tensor d_in, Tensor d_weight, Tensor d_out, Tensor in, Tensor weight,
                      Tensor rstd, Accum acc_in) {
  Check c(ctx, "rmsnorm_backward");
  c.f("d_out", d_out).f("in", in).f("weight", weight).stat("rstd", rstd).f_opt("d_in", d_in);
  c.wide_opt("d_weight", d_weight);
  OP_CHECK(c, d_out.numel() == in.numel() && d_out.cols() == in.cols(),
           "d_out " + d_out.shape_str() + " must match in " + in.shape_str());
  check_rmsnorm(c, in, "in", weight, rstd);
  if (!d_in.empty())
    OP_CHECK(c, d_in.numel() == in.numel() && d_in.cols() == in.cols(),
             "d_in " + d_in.shape_str() + " must match in " + in.shape_str());
  if (!d_weight.empty())
    OP_CHECK(c, d_weight.numel() == weight.numel(),
             "d_weight " + d_weight.shape_str() + " must match weight " + weight.shape_str());
  DS_DISPATCH(c, rmsnorm_backward(ctx, d_in, d_weight, d_out, in, weight, rstd, acc_in));
}

// A D-column block (D = weight.numel()) from column `col` of each row of t.
static void check_norm_cols(Check& c, const Tensor& t, const char* name, int64_t col, const Tensor& weight) {
  const int64_t D = weight.numel();
  OP_CHECK(c, t.ndim >= 1 && col >= 0 && col + D <= t.cols(),
           "columns [" + std::to_string(col) + ", +" + std::to_string(D) + ") of " + name + " " + t.shape_str() +
               " out of range (D = weight " + weight.shape_str() + ")");
}

void rmsnorm_cols_forward(const Context& ctx, Tensor out, Tensor rstd, Tensor in, int64_t in_col, Tensor weight,
                          double eps) {
  Check c(ctx, "rmsnorm_cols_forward");
  c.f("out", out).f("in", in).f("weight", weight).stat_opt("rstd", rstd);
  check_rmsnorm(c, out, "out", weight, rstd);
  check_norm_cols(c, in, "in", in_col, weight);
  OP_CHECK(c, in.rows() == out.rows(), "in " + in.shape_str() + " and out " + out.shape_str() + " differ in rows");
  OP_CHECK(c, in.data != out.data, "out must not alias in");
  OP_CHECK(c, eps >= 0, "eps must be >= 0, got " + std::to_string(eps));
  DS_DISPATCH(c, rmsnorm_cols_forward(ctx, out, rstd, in, in_col, weight, eps));
}

void rmsnorm_cols_backward(const Context& ctx, Tensor d_in, int64_t d_in_col, Tensor d_weight, Tensor d_out, Tensor in,
                           int64_t in_col, Tensor weight, Tensor rstd, Accum acc_in) {
  Check c(ctx, "rmsnorm_cols_backward");
  c.f("d_out", d_out).f("in", in).f("weight", weight).stat("rstd", rstd).f_opt("d_in", d_in);
  c.wide_opt("d_weight", d_weight);
  check_rmsnorm(c, d_out, "d_out", weight, rstd);
  check_norm_cols(c, in, "in", in_col, weight);
  OP_CHECK(c, in.rows() == d_out.rows(),
           "in " + in.shape_str() + " and d_out " + d_out.shape_str() + " differ in rows");
  if (!d_in.empty()) {
    check_norm_cols(c, d_in, "d_in", d_in_col, weight);
    OP_CHECK(c, d_in.rows() == d_out.rows(),
             "d_in " + d_in.shape_str() + " and d_out " + d_out.shape_str() + " differ in rows");
    OP_CHECK(c, d_in.data != d_out.data && d_in.data != in.data, "d_in must not alias d_out or in");
  }
  if (!d_weight.empty())
    OP_CHECK(c, d_weight.numel() == weight.numel(),
             "d_weight " + d_weight.shape_str() + " must match weight " + weight.shape_str());
  DS_DISPATCH(c, rmsnorm_cols_backward(ctx, d_in, d_in_col, d_weight, d_out, in, in_col, weight, rstd, acc_in));
}

void add_rmsnorm_forward(const Context& ctx, Tensor sum, Tensor out, Tensor a, Tensor b, Tensor weight, double eps,
                         Tensor rstd) {
  Check c(ctx, "add_rmsnorm_forward");
  c.f("sum", sum).f("out", out).f("a", a).f("b", b).f("weight", weight).stat_opt("rstd", rstd);
  OP_CHECK(c, a.numel() == sum.numel() && b.numel() == sum.numel() && out.numel() == sum.numel() &&
                  out.cols() == sum.cols(),
           "sum " + sum.shape_str() + ", out " + out.shape_str() + ", a " + a.shape_str() + ", b " + b.shape_str() +
               " differ in size");
  check_rmsnorm(c, sum, "sum", weight, rstd);
  OP_CHECK(c, eps >= 0, "eps must be >= 0, got " + std::to_string(eps));
  DS_DISPATCH(c, add_rmsnorm_forward(ctx, sum, out, a, b, weight, eps, rstd));
}

// ---- RoPE ----------------------------------------------------------------------------------------------

static void check_rope(Check& c, const Tensor& x, const char* xname, const Tensor& y, const char* yname,
                       const Tensor& pos, const Tensor& inv_freq) {
  c.f(xname, x).f(yname, y).stat("inv_freq", inv_freq).index("pos", pos, DType::i32);
  const int64_t N = pos.numel(), R = x.cols();
  OP_CHECK(c, R % 2 == 0, std::string(xname) + " " + x.shape_str() + ": rotary dim must be even");
  OP_CHECK(c, (N == 0 && x.numel() == 0) || (N > 0 && x.rows() % N == 0),
           std::string(xname) + " " + x.shape_str() + " must be [N, H, R] with N = pos " + pos.shape_str());
  OP_CHECK(c, same_shape(x, y) || (x.numel() == y.numel() && x.cols() == y.cols()),
           std::string(yname) + " " + y.shape_str() + " must match " + xname + " " + x.shape_str());
  OP_CHECK(c, inv_freq.numel() == R / 2,
           "inv_freq " + inv_freq.shape_str() + " must be [R/2] with R = " + std::to_string(R));
}

void rope_forward(const Context& ctx, Tensor out, Tensor in, Tensor pos, Tensor inv_freq, double attn_factor) {
  Check c(ctx, "rope_forward");
  check_rope(c, in, "in", out, "out", pos, inv_freq);
  DS_DISPATCH(c, rope_forward(ctx, out, in, pos, inv_freq, attn_factor));
}

void rope_backward(const Context& ctx, Tensor d_in, Tensor d_out, Tensor pos, Tensor inv_freq, double attn_factor,
                   Accum acc) {
  Check c(ctx, "rope_backward");
  check_rope(c, d_out, "d_out", d_in, "d_in", pos, inv_freq);
  DS_DISPATCH(c, rope_backward(ctx, d_in, d_out, pos, inv_freq, attn_factor, acc));
}

// [N, H, W] views and an R-column block of each (R = 2 * inv_freq.numel()); y may alias x only element for element.
static void check_rope_cols(Check& c, const Tensor& y, const char* yname, int64_t y_col, const Tensor& x,
                            const char* xname, int64_t x_col, const Tensor& pos, const Tensor& inv_freq) {
  c.f(yname, y).f(xname, x).stat("inv_freq", inv_freq).index("pos", pos, DType::i32);
  const int64_t N = pos.numel(), R = 2 * inv_freq.numel();
  OP_CHECK(c, x.ndim == 3 && y.ndim == 3 && x.dim(0) == N && y.dim(0) == N && x.dim(1) == y.dim(1),
           std::string(xname) + " " + x.shape_str() + " and " + yname + " " + y.shape_str() +
               " must be [N, H, *] with N = pos " + pos.shape_str());
  OP_CHECK(c, x_col >= 0 && y_col >= 0 && x_col + R <= x.dim(2) && y_col + R <= y.dim(2),
           "columns [" + std::to_string(x_col) + ", +" + std::to_string(R) + ") of " + xname + " " + x.shape_str() +
               " or [" + std::to_string(y_col) + ", +" + std::to_string(R) + ") of " + yname + " " + y.shape_str() +
               " out of range");
  OP_CHECK(c, x.data != y.data || (x_col == y_col && x.dim(2) == y.dim(2)),
           std::string(yname) + " may alias " + xname + " only in place (the same columns of the same rows)");
}

void rope_cols_forward(const Context& ctx, Tensor out, int64_t out_col, Tensor in, int64_t in_col, Tensor pos,
                       Tensor inv_freq, double attn_factor) {
  Check c(ctx, "rope_cols_forward");
  check_rope_cols(c, out, "out", out_col, in, "in", in_col, pos, inv_freq);
  DS_DISPATCH(c, rope_cols_forward(ctx, out, out_col, in, in_col, pos, inv_freq, attn_factor));
}

void rope_cols_backward(const Context& ctx, Tensor d_in, int64_t d_in_col, Tensor d_out, int64_t d_out_col, Tensor pos,
                        Tensor inv_freq, double attn_factor, Accum acc) {
  Check c(ctx, "rope_cols_backward");
  check_rope_cols(c, d_in, "d_in", d_in_col, d_out, "d_out", d_out_col, pos, inv_freq);
  DS_DISPATCH(c, rope_cols_backward(ctx, d_in, d_in_col, d_out, d_out_col, pos, inv_freq, attn_factor, acc));
}

// ---- attention -----------------------------------------------------------------------------------------

static void check_attention(Check& c, const Tensor& q, const Tensor& k, const Tensor& v) {
  c.f("q", q).f("k", k).f("v", v);
  OP_CHECK(c, q.ndim == 4, "q " + q.shape_str() + " must be [B, T, H, Dqk]");
  OP_CHECK(c, same_shape(k, q), "k " + k.shape_str() + " must match q " + q.shape_str());
  OP_CHECK(c, v.ndim == 4 && v.dim(0) == q.dim(0) && v.dim(1) == q.dim(1) && v.dim(2) == q.dim(2),
           "v " + v.shape_str() + " must be [B, T, H, Dv] for q " + q.shape_str());
}

static void check_lse(Check& c, const Tensor& lse, const Tensor& q) {
  if (lse.empty()) return;
  c.stat("lse", lse);
  OP_CHECK(c, lse.numel() == q.dim(0) * q.dim(2) * q.dim(1),
           "lse " + lse.shape_str() + " must be [B, H, T] for q " + q.shape_str());
}

void attention_forward(const Context& ctx, Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, double scale) {
  Check c(ctx, "attention_forward");
  check_attention(c, q, k, v);
  c.f("out", out);
  OP_CHECK(c, same_shape(out, v), "out " + out.shape_str() + " must match v " + v.shape_str());
  check_lse(c, lse, q);
  DS_DISPATCH_KERNEL(c, ATTENTION, attention_forward(ctx, out, lse, q, k, v, scale));
}

void attention_backward(const Context& ctx, Tensor d_q, Tensor d_k, Tensor d_v, Tensor d_out, Tensor out, Tensor lse,
                        Tensor q, Tensor k, Tensor v, double scale) {
  Check c(ctx, "attention_backward");
  check_attention(c, q, k, v);
  c.f("d_out", d_out).f("out", out).stat("lse", lse).f_opt("d_q", d_q).f_opt("d_k", d_k).f_opt("d_v", d_v);
  OP_CHECK(c, same_shape(d_out, v) && same_shape(out, v),
           "d_out " + d_out.shape_str() + " and out " + out.shape_str() + " must match v " + v.shape_str());
  check_lse(c, lse, q);
  OP_CHECK(c, d_q.empty() || same_shape(d_q, q), "d_q " + d_q.shape_str() + " must match q " + q.shape_str());
  OP_CHECK(c, d_k.empty() || same_shape(d_k, k), "d_k " + d_k.shape_str() + " must match k " + k.shape_str());
  OP_CHECK(c, d_v.empty() || same_shape(d_v, v), "d_v " + d_v.shape_str() + " must match v " + v.shape_str());
  DS_DISPATCH_KERNEL(c, ATTENTION, attention_backward(ctx, d_q, d_k, d_v, d_out, out, lse, q, k, v, scale));
}

// ---- MLA's attention with the keys and values in place ------------------------------------------------

namespace {

// Memory for one op call on the context's device: host memory, or stream-ordered device memory (no sync).
class CallScratch {
 public:
  CallScratch(const Context& ctx, size_t bytes) : ctx_(ctx) {
#if DS_HAVE_CUDA
    if (!ctx.device.is_cpu()) {
      p_ = cuda::temp_malloc(ctx.device.index, ctx.cuda_stream, bytes);
      return;
    }
#endif
    p_ = device_alloc(ctx.device, bytes);
  }
  ~CallScratch() {
#if DS_HAVE_CUDA
    if (!ctx_.device.is_cpu()) {
      cuda::temp_free(ctx_.device.index, ctx_.cuda_stream, p_);
      return;
    }
#endif
    device_free(ctx_.device, p_);
  }
  CallScratch(const CallScratch&) = delete;
  CallScratch& operator=(const CallScratch&) = delete;
  Tensor like(const Tensor& t) const { return Tensor(p_, t.dtype, t.dims(), ctx_.device); }

 private:
  const Context& ctx_;
  void* p_ = nullptr;
};

// MLA's shapes: q [B, T, H, dn + dr], kv [B, T, H, dn + Dv], k_pe [B, T, dr], out [B, T, H, Dv].
void check_mla_attention(Check& c, const Tensor& q, const Tensor& kv, const Tensor& k_pe, const Tensor& out) {
  c.f("q", q).f("kv", kv).f("k_pe", k_pe).f("out", out);
  OP_CHECK(c, q.ndim == 4 && kv.ndim == 4 && out.ndim == 4, "q " + q.shape_str() + ", kv " + kv.shape_str() +
                                                                 " and out " + out.shape_str() + " must be 4-D");
  for (int d = 0; d < 3; ++d)
    OP_CHECK(c, kv.dim(d) == q.dim(d) && out.dim(d) == q.dim(d),
             "q " + q.shape_str() + ", kv " + kv.shape_str() + " and out " + out.shape_str() + " differ in B, T, H");
  const int64_t dn = kv.dim(3) - out.dim(3), dr = q.dim(3) - dn;
  OP_CHECK(c, dn > 0 && dr > 0,
           "kv " + kv.shape_str() + " must hold [k_nope | v] with 0 < dn < Dqk " + std::to_string(q.dim(3)));
  OP_CHECK(c, k_pe.cols() == dr && k_pe.numel() == q.dim(0) * q.dim(1) * dr,
           "k_pe " + k_pe.shape_str() + " must be [B, T, " + std::to_string(dr) + "]");
}

// Each head's key [k_nope | k_pe] and value from kv and k_pe (the reference layout attention_forward reads).
void mla_expand(const Context& ctx, Tensor k, Tensor v, Tensor kv, Tensor k_pe) {
  const int64_t N = k.dim(0) * k.dim(1), H = k.dim(2), Dqk = k.dim(3), Dv = v.dim(3), dn = kv.dim(3) - Dv;
  const Tensor kv_rows = kv.view({N * H, dn + Dv});
  copy_cols(ctx, k.view({N * H, Dqk}), 0, kv_rows, 0, dn);
  copy_cols_repeat(ctx, k.view({N, H * Dqk}), dn, Dqk, H, k_pe.view({N, Dqk - dn}), 0, Dqk - dn);
  copy_cols(ctx, v.view({N * H, Dv}), 0, kv_rows, dn, Dv);
}

}  // namespace

void mla_attention_forward(const Context& ctx, Tensor out, Tensor lse, Tensor q, Tensor kv, Tensor k_pe, double scale) {
  Check c(ctx, "mla_attention_forward");
  check_mla_attention(c, q, kv, k_pe, out);
  check_lse(c, lse, q);
  if constexpr (opcheck::kHaveCuda && DS_CUDA_KERNEL_ATTENTION)
    if (c.cuda() && cuda::mla_attention_forward(ctx, out, lse, q, kv, k_pe, scale)) return;
  const CallScratch ks(ctx, q.nbytes()), vs(ctx, out.nbytes());
  const Tensor k = ks.like(q), v = vs.like(out);
  mla_expand(ctx, k, v, kv, k_pe);
  attention_forward(ctx, out, lse, q, k, v, scale);
}

bool mla_attention_backward_one_call(const Context& ctx) {
  if constexpr (opcheck::kHaveCuda && DS_CUDA_KERNEL_ATTENTION)
    if (ctx.device.is_cuda()) return cuda::mla_attention_backward_one_call();
  return false;
}

void mla_attention_backward(const Context& ctx, Tensor d_q, Tensor d_kv, Tensor d_k_pe, Tensor d_out, Tensor out,
                            Tensor lse, Tensor q, Tensor kv, Tensor k_pe, double scale) {
  Check c(ctx, "mla_attention_backward");
  check_mla_attention(c, q, kv, k_pe, out);
  c.f("d_out", d_out).f_opt("d_kv", d_kv).f_opt("d_k_pe", d_k_pe).f_opt("d_q", d_q).stat("lse", lse);
  check_lse(c, lse, q);
  const int64_t N = q.dim(0) * q.dim(1), H = q.dim(2), Dqk = q.dim(3), Dv = out.dim(3), dn = kv.dim(3) - Dv;
  OP_CHECK(c, same_shape(d_out, out), "d_out " + d_out.shape_str() + " must match out " + out.shape_str());
  OP_CHECK(c, d_q.empty() || same_shape(d_q, q), "d_q " + d_q.shape_str() + " must match q " + q.shape_str());
  OP_CHECK(c, d_kv.empty() == d_k_pe.empty(), "d_kv and d_k_pe are given together (or both left empty)");
  OP_CHECK(c, !d_q.empty() || !d_kv.empty(), "nothing to compute: d_q, d_kv and d_k_pe all empty");
  OP_CHECK(c, d_kv.empty() || same_shape(d_kv, kv), "d_kv " + d_kv.shape_str() + " must match kv " + kv.shape_str());
  OP_CHECK(c, d_k_pe.empty() || (d_k_pe.numel() == N * H * (Dqk - dn) && d_k_pe.cols() == Dqk - dn),
           "d_k_pe " + d_k_pe.shape_str() + " must be [B, T, H, " + std::to_string(Dqk - dn) + "]");
  if constexpr (opcheck::kHaveCuda && DS_CUDA_KERNEL_ATTENTION)
    if (c.cuda() && cuda::mla_attention_backward(ctx, d_q, d_kv, d_k_pe, d_out, out, lse, q, kv, k_pe, scale)) return;
  const CallScratch ks(ctx, q.nbytes()), vs(ctx, out.nbytes()), dks(ctx, q.nbytes()), dvs(ctx, out.nbytes());
  const Tensor k = ks.like(q), v = vs.like(out), d_k = dks.like(q), d_v = dvs.like(out);
  mla_expand(ctx, k, v, kv, k_pe);
  attention_backward(ctx, d_q, d_k, d_v, d_out, out, lse, q, k, v, scale);
  if (d_kv.empty()) return;
  const Tensor d_kv_rows = d_kv.view({N * H, dn + Dv}), d_k_rows = d_k.view({N * H, Dqk});
  copy_cols(ctx, d_kv_rows, 0, d_k_rows, 0, dn);
  copy_cols(ctx, d_kv_rows, dn, d_v.view({N * H, Dv}), 0, Dv);
  copy_cols(ctx, d_k_pe.view({N * H, Dqk - dn}), 0, d_k_rows, dn, Dqk - dn);
}

// ---- SwiGLU --------------------------------------------------------------------------------------------

void swiglu_forward(const Context& ctx, Tensor out, Tensor gate, Tensor up) {
  Check c(ctx, "swiglu_forward");
  c.f("out", out).f("gate", gate).f("up", up);
  OP_CHECK(c, gate.numel() == out.numel() && up.numel() == out.numel(),
           "out " + out.shape_str() + ", gate " + gate.shape_str() + ", up " + up.shape_str() + " differ in size");
  DS_DISPATCH(c, swiglu_forward(ctx, out, gate, up));
}

void swiglu_pair_forward(const Context& ctx, Tensor out, Tensor gate_up) {
  Check c(ctx, "swiglu_pair_forward");
  c.f("out", out).f("gate_up", gate_up);
  OP_CHECK(c, gate_up.rows() == out.rows() && gate_up.cols() == 2 * out.cols(),
           "gate_up " + gate_up.shape_str() + " must be [N, 2F] for out " + out.shape_str());
  DS_DISPATCH(c, swiglu_pair_forward(ctx, out, gate_up));
}

void swiglu_pair_backward(const Context& ctx, Tensor d_gate_up, Tensor d_out, Tensor gate_up) {
  Check c(ctx, "swiglu_pair_backward");
  c.f("d_gate_up", d_gate_up).f("d_out", d_out).f("gate_up", gate_up);
  OP_CHECK(c, gate_up.rows() == d_out.rows() && gate_up.cols() == 2 * d_out.cols(),
           "gate_up " + gate_up.shape_str() + " must be [N, 2F] for d_out " + d_out.shape_str());
  OP_CHECK(c, d_gate_up.rows() == gate_up.rows() && d_gate_up.cols() == gate_up.cols(),
           "d_gate_up " + d_gate_up.shape_str() + " must match gate_up " + gate_up.shape_str());
  OP_CHECK(c, d_gate_up.data != d_out.data && d_gate_up.data != gate_up.data,
           "d_gate_up must not alias d_out or gate_up");
  DS_DISPATCH(c, swiglu_pair_backward(ctx, d_gate_up, d_out, gate_up));
}

void swiglu_backward(const Context& ctx, Tensor d_gate, Tensor d_up, Tensor d_out, Tensor gate, Tensor up) {
  Check c(ctx, "swiglu_backward");
  c.f("d_out", d_out).f("gate", gate).f("up", up).f_opt("d_gate", d_gate).f_opt("d_up", d_up);
  const int64_t n = d_out.numel();
  OP_CHECK(c, gate.numel() == n && up.numel() == n && (d_gate.empty() || d_gate.numel() == n) &&
                  (d_up.empty() || d_up.numel() == n),
           "d_out " + d_out.shape_str() + ", gate " + gate.shape_str() + ", up " + up.shape_str() + ", d_gate " +
               d_gate.shape_str() + ", d_up " + d_up.shape_str() + " differ in size");
  DS_DISPATCH(c, swiglu_backward(ctx, d_gate, d_up, d_out, gate, up));
}

// MoE ops: ops_moe.cpp.

// ---- loss ----------------------------------------------------------------------------------------------

void cross_entropy_forward(const Context& ctx, Tensor loss, Tensor lse, Tensor logits, Tensor targets,
                           int ignore_index) {
  Check c(ctx, "cross_entropy_forward");
  c.f("logits", logits).stat("loss", loss).stat_opt("lse", lse).index("targets", targets, DType::i32);
  const int64_t N = logits.rows();
  OP_CHECK(c, targets.numel() == N && loss.numel() == N && (lse.empty() || lse.numel() == N),
           "targets " + targets.shape_str() + ", loss " + loss.shape_str() + ", lse " + lse.shape_str() +
               " must have one entry per row of logits " + logits.shape_str());
  DS_DISPATCH(c, cross_entropy_forward(ctx, loss, lse, logits, targets, ignore_index));
}

void cross_entropy_backward(const Context& ctx, Tensor d_logits, Tensor logits, Tensor lse, Tensor targets,
                            double d_scale, int ignore_index, Accum acc, Tensor row_scale) {
  Check c(ctx, "cross_entropy_backward");
  c.f("logits", logits).narrow("d_logits", d_logits).stat("lse", lse).index("targets", targets, DType::i32);
  c.stat_opt("row_scale", row_scale);
  OP_CHECK(c, row_scale.empty() || row_scale.numel() == logits.rows(), "row_scale must have one entry per row");
  const int64_t N = logits.rows();
  OP_CHECK(c, d_logits.numel() == logits.numel() && d_logits.cols() == logits.cols(),
           "d_logits " + d_logits.shape_str() + " must match logits " + logits.shape_str());
  OP_CHECK(c, targets.numel() == N && lse.numel() == N,
           "targets " + targets.shape_str() + " and lse " + lse.shape_str() +
               " must have one entry per row of logits " + logits.shape_str());
  DS_DISPATCH(c, cross_entropy_backward(ctx, d_logits, logits, lse, targets, d_scale, ignore_index, acc, row_scale));
}

void cross_entropy_fused(const Context& ctx, Tensor loss, Tensor lse, Tensor d_logits, Tensor logits, Tensor targets,
                         double d_scale, int ignore_index) {
  Check c(ctx, "cross_entropy_fused");
  c.f("logits", logits).narrow("d_logits", d_logits).stat("loss", loss).stat("lse", lse);
  c.index("targets", targets, DType::i32);
  const int64_t N = logits.rows();
  OP_CHECK(c, d_logits.numel() == logits.numel() && d_logits.cols() == logits.cols(),
           "d_logits " + d_logits.shape_str() + " must match logits " + logits.shape_str());
  OP_CHECK(c, targets.numel() == N && loss.numel() == N && lse.numel() == N,
           "targets " + targets.shape_str() + ", loss " + loss.shape_str() + ", lse " + lse.shape_str() +
               " must have one entry per row of logits " + logits.shape_str());
  DS_DISPATCH(c, cross_entropy_fused(ctx, loss, lse, d_logits, logits, targets, d_scale, ignore_index));
}

// ---- logit distillation -------------------------------------------------------------------------------

namespace {
void check_kl_args(Check& c, const Tensor& logits, const Tensor& teacher, const Tensor& targets) {
  c.f("logits", logits).f("teacher", teacher).index("targets", targets, DType::i32);
  OP_CHECK(c, teacher.rows() == logits.rows() && teacher.cols() == logits.cols(),
           "teacher " + teacher.shape_str() + " must match logits " + logits.shape_str() + " (same vocabulary)");
  OP_CHECK(c, targets.numel() == logits.rows(),
           "targets " + targets.shape_str() + " must have one entry per row of logits " + logits.shape_str());
}
}  // namespace

void kl_div_forward(const Context& ctx, Tensor loss, Tensor logits, Tensor teacher, Tensor targets, int ignore_index) {
  Check c(ctx, "kl_div_forward");
  check_kl_args(c, logits, teacher, targets);
  c.stat("loss", loss);
  OP_CHECK(c, loss.numel() == logits.rows(), "loss " + loss.shape_str() + " must have one entry per row");
  DS_DISPATCH(c, kl_div_forward(ctx, loss, logits, teacher, targets, ignore_index));
}

void kl_div_backward(const Context& ctx, Tensor d_logits, Tensor logits, Tensor teacher, Tensor targets, double d_scale,
                     int ignore_index, Accum acc) {
  Check c(ctx, "kl_div_backward");
  check_kl_args(c, logits, teacher, targets);
  c.f("d_logits", d_logits);
  OP_CHECK(c, d_logits.numel() == logits.numel() && d_logits.cols() == logits.cols(),
           "d_logits " + d_logits.shape_str() + " must match logits " + logits.shape_str());
  DS_DISPATCH(c, kl_div_backward(ctx, d_logits, logits, teacher, targets, d_scale, ignore_index, acc));
}

// ---- optimizer -----------------------------------------------------------------------------------------

void grad_clip_verdict(const Context& ctx, Tensor verdict, Tensor ssq, Tensor finite, double grad_scale,
                       double max_norm, bool force_skip) {
  Check c(ctx, "grad_clip_verdict");
  OP_CHECK(c, !verdict.empty(), "verdict is required");
  c.verdict_opt(verdict);
  OP_CHECK(c, !ssq.empty(), "ssq is required");
  c.device("ssq", ssq);
  OP_CHECK(c, ssq.dtype == DType::f64, "ssq " + desc(ssq) + " must be f64");
  if (!finite.empty()) {
    c.device("finite", finite);
    OP_CHECK(c, finite.dtype == DType::f64, "finite " + desc(finite) + " must be f64");
  }
  OP_CHECK(c, std::isfinite(grad_scale) && grad_scale >= 0, "grad_scale must be finite and >= 0, got " +
                                                                  std::to_string(grad_scale));
  OP_CHECK(c, std::isfinite(max_norm) && max_norm >= 0, "max_norm must be finite and >= 0 (0: no clipping), got " +
                                                             std::to_string(max_norm));
  DS_DISPATCH(c, grad_clip_verdict(ctx, verdict, ssq, finite, grad_scale, max_norm, force_skip));
}

static void check_adamw(Check& c, const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                        const AdamWOptions& opt, const Tensor& compute) {
  c.f("grad", grad).stat("param", param);
  if (m.dtype == DType::bf16 || v.dtype == DType::bf16) {  // DeepSeek-V3's bf16 optimizer state
    OP_CHECK(c, m.dtype == DType::bf16 && v.dtype == DType::bf16 && param.dtype == DType::f32,
             "bf16 moments need m and v both bf16 and an f32 param; got param " + desc(param) + ", m " + desc(m) +
                 ", v " + desc(v));
    c.device("m", m).device("v", v);
  } else {
    c.stat("m", m).stat("v", v);
  }
  const int64_t n = param.numel();
  OP_CHECK(c, grad.numel() == n && m.numel() == n && v.numel() == n,
           "param " + param.shape_str() + ", grad " + grad.shape_str() + ", m " + m.shape_str() + ", v " +
               v.shape_str() + " differ in size");
  OP_CHECK(c, opt.step >= 1, "step is 1-based, got " + std::to_string(opt.step));
  OP_CHECK(c, opt.beta1 >= 0 && opt.beta1 < 1 && opt.beta2 >= 0 && opt.beta2 < 1,
           "betas must lie in [0, 1), got " + std::to_string(opt.beta1) + ", " + std::to_string(opt.beta2));
  c.verdict_opt(opt.verdict);
  if (!compute.empty()) {
    c.device("compute", compute);
    OP_CHECK(c, compute.dtype == DType::bf16 || compute.dtype == param.dtype,
             "compute " + desc(compute) + " must be bf16 or the param's dtype");
    OP_CHECK(c, compute.numel() == n, "compute " + compute.shape_str() + " must match param " + param.shape_str());
  }
}

void adamw_update(const Context& ctx, Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWOptions& opt,
                  Tensor compute) {
  Check c(ctx, "adamw_update");
  check_adamw(c, param, grad, m, v, opt, compute);
  DS_DISPATCH(c, adamw_update(ctx, param, grad, m, v, opt, compute));
}

void adamw_update_many(const Context& ctx, const std::vector<AdamWSlot>& slots, const AdamWOptions& opt) {
  Check c(ctx, "adamw_update_many");
  for (const AdamWSlot& s : slots) {  // each slot its own dtypes (a check a slot)
    Check cs(ctx, "adamw_update_many");
    check_adamw(cs, s.param, s.grad, s.m, s.v, opt, s.compute);
    OP_CHECK(cs, s.weight_decay >= 0, "weight decay must be >= 0, got " + std::to_string(s.weight_decay));
  }
  if (c.cuda()) {
    if constexpr (opcheck::kHaveCuda) return cuda::adamw_update_many(ctx, slots, opt);
  }
  for (const AdamWSlot& s : slots) {
    AdamWOptions o = opt;
    o.weight_decay = s.weight_decay;
    cpu::adamw_update(ctx, s.param, s.grad, s.m, s.v, o, s.compute);
  }
}

// ---- token sampling (CUDA only) -------------------------------------------------------------------------------

void sample_tokens(const Context& ctx, Tensor tokens, Tensor logprobs, Tensor logits, Tensor params) {
  Check c(ctx, "sample_tokens");
  OP_CHECK(c, c.on_cuda(), "runs on CUDA only (the CPU engine samples with lib/infer/sampler.h)");
  c.wide("logits", logits);
  OP_CHECK(c, logits.ndim == 2 && logits.cols() >= 1, "logits " + logits.shape_str() + " must be [n, V]");
  const int64_t n = logits.rows();
  c.index("tokens", tokens, DType::i32).index("logprobs", logprobs, DType::f64).index("params", params, DType::f64);
  OP_CHECK(c, tokens.numel() == n && logprobs.numel() == n && params.numel() == 4 * n,
           "tokens " + tokens.shape_str() + ", logprobs " + logprobs.shape_str() + ", params " + params.shape_str() +
               " must hold n, n and 4n values for logits " + logits.shape_str());
  if (c.cuda()) {
    if constexpr (opcheck::kHaveCuda) return cuda::sample_tokens(ctx, tokens, logprobs, logits, params);
  }
}

}  // namespace ds
