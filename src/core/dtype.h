// Element types and the host-side conversions between them (bf16 and fp16 stored as uint16).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace dpa {

enum class DType : uint8_t { f32, f16, bf16, f64, i32, i64, u8, i8, f8_e4m3 };

// Bytes per element.
std::size_t dtype_size(DType t);
// "f32", "bf16", ...
std::string_view dtype_name(DType t);
// Parses the names above and safetensors' names ("F32", "BF16", "F8_E4M3", ...); false if unknown.
bool parse_dtype(std::string_view name, DType* out);

// bf16 <-> f32: round to nearest even, NaN kept quiet.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// IEEE half <-> f32 (round to nearest even; subnormals, infinities and NaN handled).
uint16_t f32_to_f16(float f);
float f16_to_f32(uint16_t h);
// FP8 E4M3 (fn variant: no infinities, 0x7f/0xff are NaN) -> f32.
float f8e4m3_to_f32(uint8_t v);

}  // namespace dpa
