#pragma once
// Finite-difference gradient check, header-only, for f64 CPU tensors.
//
// Give it (tensor, analytic gradient) pairs and a function returning the scalar loss computed from the
// current tensor values. For each checked element x_i it evaluates the central difference
//     g_num = (L(x_i + h) - L(x_i - h)) / (2h)
// and compares it with the analytic g_i:  rel = |g_num - g_i| / max(|g_num|, |g_i|, floor).
// The floor keeps elements whose true gradient is ~0 from reporting huge "relative" errors caused by the
// O(eps * |L| / h) rounding noise of the difference itself. Big tensors can be sampled (max_elements).
// Perturbed elements are restored bit-exactly, so the caller's tensors are unchanged afterwards.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace ds::test {

struct GradParam {
  std::string name;
  Tensor x;     // f64 on the CPU: the input being perturbed
  Tensor grad;  // f64, same numel: the analytic dLoss/dx
};

struct GradCheckOptions {
  double step = 1e-5;         // h; ~1e-5 balances truncation (h^2) and rounding (eps/h) error in double
  double floor = 1e-3;        // denominator floor of the relative error
  int64_t max_elements = 0;   // per tensor: 0 checks every element, otherwise a random subset of this size
  uint64_t seed = 0x5eed;     // for the subset
};

struct GradCheckEntry {
  std::string name;
  int64_t index = -1;
  double analytic = 0, numeric = 0, rel_err = 0;
};

struct GradCheckResult {
  double max_rel_err = 0;               // over every checked element of every tensor
  GradCheckEntry worst;                 // where it occurred
  std::vector<GradCheckEntry> per_tensor;  // the worst element of each tensor
  int64_t checked = 0;                  // elements checked

  std::string summary() const {
    char buf[256];
    std::string s;
    std::snprintf(buf, sizeof buf, "max rel err %.3e over %lld elements", max_rel_err, (long long)checked);
    s = buf;
    for (const GradCheckEntry& e : per_tensor) {
      std::snprintf(buf, sizeof buf, "; %s: %.3e (at %lld: analytic %.9g, numeric %.9g)", e.name.c_str(), e.rel_err,
                    (long long)e.index, e.analytic, e.numeric);
      s += buf;
    }
    return s;
  }
};

// The element indices to check in a tensor of n elements: all, or a reproducible random subset (sorted).
inline std::vector<int64_t> gradcheck_indices(int64_t n, int64_t max_elements, uint64_t seed) {
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), int64_t(0));
  if (max_elements <= 0 || n <= max_elements) return idx;
  std::mt19937_64 rng(seed);
  for (int64_t i = 0; i < max_elements; ++i) {  // partial Fisher-Yates
    std::uniform_int_distribution<int64_t> pick(i, n - 1);
    std::swap(idx[size_t(i)], idx[size_t(pick(rng))]);
  }
  idx.resize(size_t(max_elements));
  std::sort(idx.begin(), idx.end());
  return idx;
}

inline GradCheckResult gradcheck(const std::vector<GradParam>& params, const std::function<double()>& loss,
                                 const GradCheckOptions& opt = {}) {
  GradCheckResult res;
  for (size_t p = 0; p < params.size(); ++p) {
    const GradParam& gp = params[p];
    DS_CHECK(gp.x.dtype == DType::f64 && gp.grad.dtype == DType::f64 && gp.x.device.is_cpu() &&
                 gp.grad.device.is_cpu(),
             "gradcheck: " + gp.name + " and its gradient must be f64 CPU tensors");
    DS_CHECK(gp.x.numel() == gp.grad.numel(), "gradcheck: " + gp.name + " and its gradient differ in size");
    double* x = static_cast<double*>(gp.x.data);
    const double* g = static_cast<const double*>(gp.grad.data);
    GradCheckEntry worst{gp.name, -1, 0, 0, 0};
    for (int64_t i : gradcheck_indices(gp.x.numel(), opt.max_elements, opt.seed + p)) {
      const double saved = x[i];
      x[i] = saved + opt.step;
      const double lp = loss();
      x[i] = saved - opt.step;
      const double lm = loss();
      x[i] = saved;
      const double num = (lp - lm) / (2 * opt.step);
      const double denom = std::max({std::abs(num), std::abs(g[i]), opt.floor});
      const double rel = std::abs(num - g[i]) / denom;
      ++res.checked;
      if (worst.index < 0 || rel > worst.rel_err || std::isnan(rel)) worst = {gp.name, i, g[i], num, rel};
    }
    res.per_tensor.push_back(worst);
    if (worst.rel_err > res.max_rel_err || std::isnan(worst.rel_err) || res.worst.index < 0) {
      res.max_rel_err = worst.rel_err;
      res.worst = worst;
    }
  }
  return res;
}

}  // namespace ds::test
