// WeightView slicing and element access, shared by every backend.
#include <fmt/format.h>

#include "backend/backend.h"
#include "core/error.h"

namespace dpa::backend {

WeightView WeightView::slice(int64_t r0, int64_t r1, int64_t c0, int64_t c1) const {
  if (r0 < 0 || r1 < r0 || r1 > rows || c0 < 0 || c1 < c0 || c1 > cols)
    throw Error(fmt::format("weight slice rows [{}, {}) cols [{}, {}) outside [{} x {}]", r0, r1,
                            c0, c1, rows, cols));
  const auto* base = static_cast<const uint8_t*>(data);
  const int64_t offset = (r0 * ld + c0) * static_cast<int64_t>(dtype_size(dtype));
  return WeightView{base + offset, dtype, r1 - r0, c1 - c0, ld};
}

float WeightView::at(int64_t r, int64_t c) const {
  const int64_t i = r * ld + c;
  switch (dtype) {
    case DType::f32: return static_cast<const float*>(data)[i];
    case DType::bf16: return bf16_to_f32(static_cast<const uint16_t*>(data)[i]);
    default: throw Error(fmt::format("weight dtype {} not supported", dtype_name(dtype)));
  }
}

}  // namespace dpa::backend
