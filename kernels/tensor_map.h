#pragma once
// TMA tensor maps (cuTensorMapEncodeTiled) for the kernels that load tiles with the TMA unit (kernels/tma_copy.cuh):
// the grouped GEMM's tma:: kernels and the attention backward's dK/dV kernel. Internal to kernels/.
#include <cuda.h>  // CUtensorMap (types only: the encoder comes through cudaGetDriverEntryPointByVersion)

#include <cstdint>

namespace ds::cuda {

// A 2D tensor map, rows x cols elements of esize bytes (cols contiguous, rows pitch bytes apart), boxes of box_rows x
// box_cols, zero fill out of bounds. False when TMA cannot describe it or the driver lacks the encoder (the caller
// falls back to kernels without TMA).
bool encode_tensor_map_2d(CUtensorMap& map, CUtensorMapDataType type, int esize, const void* base, int64_t rows,
                          int64_t cols, int64_t pitch, uint32_t box_rows, uint32_t box_cols,
                          CUtensorMapSwizzle swizzle);

// The wgmma kernels' operand boxes: box_rows rows x 128 bytes of columns in the 128-byte swizzle, the layout
// kernels/wgmma.cuh's descriptors describe (one 64-column block of bf16).
bool encode_sw128_2d(CUtensorMap& map, CUtensorMapDataType type, int esize, const void* base, int64_t rows,
                     int64_t cols, int64_t pitch, uint32_t box_rows);
inline bool encode_bf16_sw128(CUtensorMap& map, const void* base, int64_t rows, int64_t cols, int64_t pitch,
                              uint32_t box_rows) {
  return encode_sw128_2d(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, base, rows, cols, pitch, box_rows);
}

}  // namespace ds::cuda
