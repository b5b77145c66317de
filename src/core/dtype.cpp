// DType names, sizes and the half-precision conversions.
#include "core/dtype.h"

#include <cmath>

namespace dpa {

std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f16: return 2;
    case DType::bf16: return 2;
    case DType::f64: return 8;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::u8: return 1;
    case DType::i8: return 1;
    case DType::f8_e4m3: return 1;
  }
  return 0;
}

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::f64: return "f64";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::u8: return "u8";
    case DType::i8: return "i8";
    case DType::f8_e4m3: return "f8_e4m3";
  }
  return "?";
}

bool parse_dtype(std::string_view n, DType* out) {
  struct Entry {
    std::string_view a, b;
    DType t;
  };
  static constexpr Entry table[] = {
      {"f32", "F32", DType::f32},   {"f16", "F16", DType::f16},
      {"bf16", "BF16", DType::bf16}, {"f64", "F64", DType::f64},
      {"i32", "I32", DType::i32},   {"i64", "I64", DType::i64},
      {"u8", "U8", DType::u8},      {"i8", "I8", DType::i8},
      {"f8_e4m3", "F8_E4M3", DType::f8_e4m3},
  };
  for (const auto& e : table)
    if (n == e.a || n == e.b) {
      *out = e.t;
      return true;
    }
  return false;
}

uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t absx = x & 0x7fffffffu;
  if (absx > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (absx >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (absx < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    float a;
    std::memcpy(&a, &absx, 4);
    // a * 2^24 is exact; nearbyint rounds to nearest even. 1024 encodes the smallest normal.
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(a * 16777216.0f)));
  }
  uint32_t r = absx - 0x38000000u;  // rebias exponent 127 -> 15
  r += 0xfffu + ((r >> 13) & 1u);
  return static_cast<uint16_t>(sign | (r >> 13));
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu;
  const uint32_t m = h & 0x3ffu;
  float f;
  if (e == 0) {
    f = std::ldexp(static_cast<float>(m), -24);
    if (sign) f = -f;
    return f;
  }
  uint32_t u;
  if (e == 31)
    u = sign | 0x7f800000u | (m << 13);
  else
    u = sign | ((e + 112) << 23) | (m << 13);
  std::memcpy(&f, &u, 4);
  return f;
}

float f8e4m3_to_f32(uint8_t v) {
  const bool neg = v & 0x80;
  const int e = (v >> 3) & 0xf;
  const int m = v & 0x7;
  float f;
  if (e == 15 && m == 7)
    f = std::nanf("");
  else if (e == 0)
    f = std::ldexp(static_cast<float>(m), -9);  // subnormal: m/8 * 2^-6
  else
    f = std::ldexp(1.0f + m / 8.0f, e - 7);
  return neg ? -f : f;
}

}  // namespace dpa
