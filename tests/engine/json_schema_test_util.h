// What the JSON Schema tests share: feeding a text to the recognizer byte by byte, and whether a
// state can still be completed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
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

// A search order: the bytes of `first`, then every other byte.
inline std::string search_order(std::string_view first) {
  std::string o(first);
  for (int b = 0; b < 256; ++b)
    if (o.find(static_cast<char>(b)) == std::string::npos) o += static_cast<char>(b);
  return o;
}
// The order the searches below try bytes in by default: closers first, then digits from 9 down,
// then the rest, so that they do not wander off down a string or a run of zeros.
inline const std::string& completion_order() {
  static const std::string order = search_order("\"]}9876543210");
  return order;
}
// Whether some bytes from p make a complete text, and which (appended to `found`, at most
// `max_bytes` of them: to be judged by a validator apart from the recognizer): a depth-first
// search over the bytes p takes, at most `budget` states visited, in `order`. Where the
// recognizer is right (it takes a byte only with a completion after it) the search goes
// straight to an end.
inline bool completion(const SchemaPrefix& p, std::string& found, int& budget, std::size_t max_bytes = 256,
                       const std::string& order = completion_order()) {
  if (p.complete()) return true;
  if (found.size() >= max_bytes) return false;
  for (char b : order) {
    if (budget <= 0) return false;
    SchemaPrefix q = p;
    if (!q.feed(static_cast<uint8_t>(b))) continue;
    --budget;
    found += b;
    if (completion(q, found, budget, max_bytes, order)) return true;
    found.pop_back();
  }
  return false;
}
// The same, the bytes unbounded but by the budget, only whether.
inline bool completes(const SchemaPrefix& p, int& budget) {
  std::string found;
  return completion(p, found, budget, SIZE_MAX);
}
inline bool completes(const SchemaPrefix& p) {
  int budget = 5000;
  return completes(p, budget);
}

}  // namespace dpa::engine::test
