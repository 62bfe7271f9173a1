#pragma once
// The step verdict's arithmetic (grad_clip_verdict, ops.h): one function for the CPU op, the CUDA kernel and the
// optimizer's host path (lib/train/optimizer.cpp), so that the three give the same bits.
#include <cmath>

#if defined(__CUDACC__)
#define DS_HOST_DEVICE __host__ __device__
#else
#define DS_HOST_DEVICE
#endif

namespace ds {

struct StepVerdict {
  double scale = 0, skip = 0, norm = 0;  // skip: 1 or 0 (a double: the verdict tensor is f64 [3] in this order)
};

// The pre-clip gradient norm from the gradients' sum of squares ss (summed in order by the caller).
DS_HOST_DEVICE inline double grad_norm_of(double ss, double grad_scale) {
#if defined(__CUDA_ARCH__)
  return ::sqrt(ss) * grad_scale;
#else
  return std::sqrt(ss) * grad_scale;
#endif
}

// The clip rule: grad_scale, times max_norm / norm when max_norm > 0 and the norm exceeds it.
DS_HOST_DEVICE inline double clip_scale(double norm, double grad_scale, double max_norm) {
  double scale = grad_scale;
  if (max_norm > 0 && norm > max_norm) scale *= max_norm / norm;
  return scale;
}

// others_finite: whether every other value the step needs finite (the losses) is.
DS_HOST_DEVICE inline StepVerdict step_verdict(double ss, bool others_finite, double grad_scale, double max_norm) {
  const double norm = grad_norm_of(ss, grad_scale);
#if defined(__CUDA_ARCH__)
  const bool finite = others_finite && ::isfinite(norm);
#else
  const bool finite = others_finite && std::isfinite(norm);
#endif
  if (!finite) return {0.0, 1.0, norm};
  return {clip_scale(norm, grad_scale, max_norm), 0.0, norm};
}

}  // namespace ds
