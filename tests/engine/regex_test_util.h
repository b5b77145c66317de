// What the regex tests share: feeding texts to a compiled pattern, and a pattern's compile error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "core/error.h"
#include "engine/regex.h"

namespace dpa::engine::test {

inline bool full_match(const Regex& re, std::string_view text) {
  RegexPrefix p(re);
  return p.feed(text) && p.complete();
}

// How many leading bytes of text feed() takes, one by one.
inline std::size_t taken(const Regex& re, std::string_view text) {
  RegexPrefix p(re);
  std::size_t k = 0;
  while (k < text.size() && p.feed(static_cast<uint8_t>(text[k]))) ++k;
  return k;
}

inline bool matches(const std::shared_ptr<const Regex>& re, std::string_view text) {
  return full_match(*re, text);
}

inline std::string compile_error(std::string_view pattern) {
  try {
    Regex::compile(pattern);
  } catch (const dpa::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace dpa::engine::test
