#pragma once
// Element-wise dtype conversion between host buffers, for checkpoint I/O (files may hold F32/BF16/F16/F64
// while the model wants f32/bf16/f64). Float <-> float converts with round-to-nearest-even; integer <-> integer
// converts by value; float <-> integer is refused. Pointers need no alignment (mmap'd data may be unaligned).
#include <cstddef>

#include "tensor/tensor.h"

namespace ds {

// Whether convert_elements supports src -> dst.
bool dtype_convertible(DType src, DType dst);

// dst[i] = convert(src[i]) for i < n. src and dst must not overlap. Runtime error when not convertible.
void convert_elements(void* dst, DType dst_dtype, const void* src, DType src_dtype, size_t n);

// IEEE half precision <-> float (round-to-nearest-even, NaN and Inf preserved, subnormals handled).
float f16_bits_to_f32(uint16_t h);
uint16_t f32_to_f16_bits(float f);

}  // namespace ds
