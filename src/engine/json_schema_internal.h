// What the two halves of json_schema.h share: json_schema_compile.cpp (the compiler, which sets
// a node's type bits and number bounds) and json_schema.cpp (the recognizer, which reads them).
#pragma once

#include <cstdint>
#include <string>

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
  };
  Side side[2];  // [0]: numbers written without '-', [1]: with it
};

}  // namespace dpa::engine::schema_detail
