// What the two halves of json_schema.h share: json_schema_compile.cpp (the compiler, which sets
// a node's type bits and number bounds) and json_schema.cpp (the recognizer, which reads them);
// and the compiler's `format` DFAs (json_schema_formats.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace dpa::engine {
class Regex;  // regex.h
}

namespace dpa::engine::schema_detail {

using i128 = __int128;

// Type bits of JsonSchema::Node::types. kNumber admits every JSON number, kInteger those with
// neither fraction nor exponent.
enum Type : uint8_t { kNull = 1, kBool = 2, kObject = 4, kArray = 8, kStr = 16, kInteger = 32, kNumber = 64 };
constexpr uint8_t kAllTypes = 127;

// A bound on a number's magnitude, kept exactly as a decimal: its digits in place are `lead`
// zeros after the point (a magnitude below 1), then `sig` (no leading or trailing zeros; empty
// for 0), then zeros for ever; the first `ints` of them are the integer part.
struct Magnitude {
  std::string sig;
  uint32_t lead = 0, ints = 0;
  bool exclusive = false;
  bool none = false;  // a greatest magnitude only: there is none
  uint64_t end() const { return lead + sig.size(); }  // the digits from here on are zeros
  uint64_t frac() const { return end() > ints ? end() - ints : 0; }  // fraction digits, trailing zeros aside
  int digit(uint64_t at) const { return at < lead || at >= end() ? 0 : sig[at - lead] - '0'; }
};

// minimum / maximum / exclusiveMinimum / exclusiveMaximum of a schema admitting non-integer
// numbers. The recognizer reads a number as its sign and its magnitude's digits, so the bounds
// are kept per sign as the least and greatest magnitude ("-0" is 0: the side of '-' holds
// magnitude 0 where 0 is in range).
struct NumberBounds {
  struct Side {
    Magnitude lo, hi;
    bool open = false;  // some magnitude lies within [lo, hi]
    bool point = false;  // open, and hi is the only magnitude within (lo and hi equal, inclusive)
    uint64_t hi_hash = 0;  // hi's value with the side's sign, by value_hash's number_hash (uniqueItems)
  };
  Side side[2];  // [0]: numbers written without '-', [1]: with it
};

// The items of a uniqueItems array are told apart by a 64-bit hash of their value as JSON Schema
// compares values: strings by their code points (the UTF-8 of the decoded string, escapes
// resolved), numbers by value (1, 1.0, 1e0 and 10e-1 alike; -0 is 0), null and the booleans as
// themselves. Equal values always hash equal, so a duplicate is never taken; two different values
// that collide (odds about 2^-64 a pair) are taken as equal. The compiler hashes enum values and
// the values of small item domains with these; the recognizer hashes what it reads, byte by byte.
namespace value_hash {

inline uint64_t mix(uint64_t x) {  // splitmix64's finalizer
  x ^= x >> 30, x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27, x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
inline uint64_t combine(uint64_t a, uint64_t b) { return mix(a ^ mix(b + 0x9e3779b97f4a7c15ull)); }
enum Tag : uint64_t { kNullTag = 1, kTrueTag, kFalseTag, kStringTag, kNumberTag, kNegativeTag, kZeroTag };

// Strings: FNV-1a over the decoded string's UTF-8, then tagged.
constexpr uint64_t kFnvBasis = 14695981039346656037ull, kFnvPrime = 1099511628211ull;
inline uint64_t fnv(uint64_t h, uint8_t b) { return (h ^ b) * kFnvPrime; }
inline uint64_t fnv_code_point(uint64_t h, uint32_t cp) {
  if (cp < 0x80) return fnv(h, static_cast<uint8_t>(cp));
  if (cp < 0x800) return fnv(fnv(h, static_cast<uint8_t>(0xc0 | (cp >> 6))), static_cast<uint8_t>(0x80 | (cp & 0x3f)));
  if (cp < 0x10000) {
    h = fnv(h, static_cast<uint8_t>(0xe0 | (cp >> 12)));
  } else {
    h = fnv(h, static_cast<uint8_t>(0xf0 | (cp >> 18)));
    h = fnv(h, static_cast<uint8_t>(0x80 | ((cp >> 12) & 0x3f)));
  }
  return fnv(fnv(h, static_cast<uint8_t>(0x80 | ((cp >> 6) & 0x3f))), static_cast<uint8_t>(0x80 | (cp & 0x3f)));
}
inline uint64_t string_hash(uint64_t fnv_of_bytes) { return combine(kStringTag, fnv_of_bytes); }
inline uint64_t string_hash(std::string_view utf8) {
  uint64_t h = kFnvBasis;
  for (char c : utf8) h = fnv(h, static_cast<uint8_t>(c));
  return string_hash(h);
}

// Numbers as 0.sig × 10^point (sig: the significant digits, no leading or trailing zeros; empty
// for 0): sig by a polynomial hash mod 2^61 - 1 (digit by digit, so the recognizer can extend it
// as digits come), point mod 2^64 (an exponent's digits may be any many).
constexpr uint64_t kMod = (uint64_t{1} << 61) - 1, kBase = 0x0a3c59d2e6b1f4c7ull % kMod;
inline uint64_t digit(uint64_t h, int d) {  // h·base + d
  const unsigned __int128 p = static_cast<unsigned __int128>(h) * kBase + static_cast<unsigned>(d);
  uint64_t r = static_cast<uint64_t>(p & kMod) + static_cast<uint64_t>(p >> 61);
  while (r >= kMod) r -= kMod;
  return r;
}
inline uint64_t zero_hash() { return mix(kZeroTag); }
inline uint64_t number_hash(bool neg, uint64_t sig_hash, uint64_t point) {  // a nonzero sig's
  return combine(combine(neg ? kNegativeTag : kNumberTag, sig_hash), point);
}
inline uint64_t decimal_hash(bool neg, std::string_view sig, int64_t point) {
  if (sig.empty()) return zero_hash();
  uint64_t h = 0;
  for (char c : sig) h = digit(h, c - '0');
  return number_hash(neg, h, static_cast<uint64_t>(point));
}
inline uint64_t int_hash(__int128 v) {
  if (v == 0) return zero_hash();
  const bool neg = v < 0;
  unsigned __int128 m = neg ? static_cast<unsigned __int128>(-v) : static_cast<unsigned __int128>(v);
  char buf[48];
  std::size_t n = sizeof buf;
  for (; m > 0; m /= 10) buf[--n] = static_cast<char>('0' + static_cast<int>(m % 10));
  const auto point = static_cast<int64_t>(sizeof buf - n);
  std::size_t end = sizeof buf;
  while (buf[end - 1] == '0') --end;
  return decimal_hash(neg, std::string_view(buf + n, end - n), point);
}
inline uint64_t literal_hash(int lit) {  // kLiterals' order: true, false, null
  return mix(lit == 0 ? kTrueTag : lit == 1 ? kFalseTag : kNullTag);
}

}  // namespace value_hash

// The DFA of a `format` the module asserts (json_schema_formats.cpp: date, time, date-time,
// duration, uuid, ipv4, ipv6, hostname, email, uri), over the string's JSON-escaped bytes, built
// once per process; null for any other name (an annotation).
std::shared_ptr<const Regex> format_regex(std::string_view name);

}  // namespace dpa::engine::schema_detail
