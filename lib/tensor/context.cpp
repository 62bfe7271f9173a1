#include "tensor/context.h"

#include <cblas.h>
#include <omp.h>

namespace ds {

void init_threads(Context& ctx, int threads) {
  if (threads <= 0) threads = omp_get_num_procs();
  ctx.threads = threads;
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
}

std::string blas_kernel_hint() {
  const std::string core = openblas_get_corename();
  if (core != "Prescott" && core != "prescott") return "";
  const char* better = __builtin_cpu_supports("avx512f") ? "SkylakeX" : __builtin_cpu_supports("avx2") ? "Haswell" : nullptr;
  if (!better) return "";
  return std::string("OpenBLAS uses its generic Prescott kernels on this CPU; export OPENBLAS_CORETYPE=") + better +
         " for much faster matrix products";
}

}  // namespace ds
