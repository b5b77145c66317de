// What the JSON Schema tests share: feeding a text to the recognizer byte by byte.
#pragma once

#include <cstddef>
#include <memory>
#include <string_view>

#include "engine/json_schema.h"

namespace dpa::engine::test {

struct Fed {
  std::size_t taken = 0;
  bool complete = false;
};
inline Fed feed_bytes(const JsonSchema& s, std::string_view text) {
  SchemaPrefix p(s);
  Fed f;
  for (char c : text) {
    if (!p.feed(static_cast<uint8_t>(c))) return f;
    ++f.taken;
  }
  f.complete = p.complete();
  return f;
}
inline bool accepts(const JsonSchema& s, std::string_view text) {
  const Fed f = feed_bytes(s, text);
  return f.taken == text.size() && f.complete;
}
inline std::shared_ptr<const JsonSchema> compile(std::string_view text) { return JsonSchema::compile(text); }

}  // namespace dpa::engine::test
