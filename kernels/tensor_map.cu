// TMA tensor maps (kernels/tensor_map.h).
#include "kernels/tensor_map.h"

#include <cudaTypedefs.h>
#include <cuda_runtime.h>

namespace ds::cuda {

namespace {

// cuTensorMapEncodeTiled from the driver through the runtime (no link against libcuda); null when unavailable.
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();
      p = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

}  // namespace

bool encode_tensor_map_2d(CUtensorMap& map, CUtensorMapDataType type, int esize, const void* base, int64_t rows,
                          int64_t cols, int64_t pitch, uint32_t box_rows, uint32_t box_cols,
                          CUtensorMapSwizzle swizzle) {
  const PFN_cuTensorMapEncodeTiled_v12000 enc = tensor_map_encoder();
  // TMA: 16-byte aligned base, a row pitch a multiple of 16 bytes below 2^40, dimensions in [1, 2^32].
  if (enc == nullptr || reinterpret_cast<uintptr_t>(base) % 16 != 0 || pitch % 16 != 0 ||
      pitch >= (int64_t(1) << 40) || rows < 1 || cols < 1 || rows > (int64_t(1) << 32) || cols > (int64_t(1) << 32))
    return false;
  const cuuint64_t dim[2] = {cuuint64_t(cols), cuuint64_t(rows)};
  const cuuint64_t stride[1] = {cuuint64_t(pitch)};
  const cuuint32_t box[2] = {box_cols, box_rows}, estride[2] = {1, 1};
  return enc(&map, type, 2, const_cast<void*>(base), dim, stride, box, estride, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
             CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

bool encode_sw128_2d(CUtensorMap& map, CUtensorMapDataType type, int esize, const void* base, int64_t rows,
                     int64_t cols, int64_t pitch, uint32_t box_rows) {
  return encode_tensor_map_2d(map, type, esize, base, rows, cols, pitch, box_rows, uint32_t(128 / esize),
                              CU_TENSOR_MAP_SWIZZLE_128B);
}

}  // namespace ds::cuda
