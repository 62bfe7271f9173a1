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

}  // namespace ds
