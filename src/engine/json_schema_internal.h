// What the two halves of json_schema.h share: json_schema_compile.cpp (the compiler, which sets
// a node's type bits) and json_schema.cpp (the recognizer, which reads them).
#pragma once

#include <cstdint>

namespace dpa::engine::schema_detail {

using i128 = __int128;

// Type bits of JsonSchema::Node::types. kNumber admits every JSON number, kInteger those with
// neither fraction nor exponent.
enum Type : uint8_t { kNull = 1, kBool = 2, kObject = 4, kArray = 8, kStr = 16, kInteger = 32, kNumber = 64 };
constexpr uint8_t kAllTypes = 127;

}  // namespace dpa::engine::schema_detail
