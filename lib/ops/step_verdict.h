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

// ss: the gradients' sum of squares (summed in order by the caller); others_finite: whether every other value the
// step needs finite (the losses) is.
DS_HOST_DEVICE inline StepVerdict step_verdict(double ss, bool others_finite, double grad_scale, double max_norm) {
#if defined(__CUDA_ARCH__)
  const double norm = ::sqrt(ss) * grad_scale;
  const bool finite = others_finite && ::isfinite(norm);
#else
  const double norm = std::sqrt(ss) * grad_scale;
  const bool finite = others_finite && std::isfinite(norm);
#endif
  if (!finite) return {0.0, 1.0, norm};
  double scale = grad_scale;
  if (max_norm > 0 && norm > max_norm) scale *= max_norm / norm;
  return {scale, 0.0, norm};
}

}  // namespace ds
