// What the JSON Schema tests share: feeding a text to the recognizer byte by byte, and whether a
// state can still be completed.
#pragma once

#include <cstddef>
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

// The order the searches below try bytes in: closers first, then digits from 9 down, then the
// rest, so that they do not wander off down a string or a run of zeros.
inline const std::string& completion_order() {
  static const std::string order = [] {
    std::string o = "\"]}9876543210";
    for (int b = 0; b < 256; ++b)
      if (o.find(static_cast<char>(b)) == std::string::npos) o += static_cast<char>(b);
    return o;
  }();
  return order;
}
// Whether some bytes from p make a complete text: a depth-first search over the bytes p takes,
// at most `budget` states visited, in completion_order(): where the recognizer is right (it takes
// a byte only with a completion after it) the search goes straight to an end.
inline bool completes(const SchemaPrefix& p, int& budget) {
  if (p.complete()) return true;
  const std::string& order = completion_order();
  for (char b : order) {
    if (budget <= 0) return false;
    SchemaPrefix q = p;
    if (!q.feed(static_cast<uint8_t>(b))) continue;
    --budget;
    if (completes(q, budget)) return true;
  }
  return false;
}
inline bool completes(const SchemaPrefix& p) {
  int budget = 5000;
  return completes(p, budget);
}
// The same search, giving the bytes it found (to be judged by a validator apart from the
// recognizer); at most 256 of them.
inline bool completion(const SchemaPrefix& p, std::string& found, int& budget) {
  if (p.complete()) return true;
  if (found.size() >= 256) return false;
  const std::string& order = completion_order();
  for (char b : order) {
    if (budget <= 0) return false;
    SchemaPrefix q = p;
    if (!q.feed(static_cast<uint8_t>(b))) continue;
    --budget;
    found += b;
    if (completion(q, found, budget)) return true;
    found.pop_back();
  }
  return false;
}

}  // namespace dpa::engine::test
