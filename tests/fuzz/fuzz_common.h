// Shared helpers of the libFuzzer harnesses: test data from the source tree, and the rule that a
// documented exception is a fine outcome while anything else (a crash, a sanitizer report, a
// hang, unbounded memory) is a finding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace dpa::fuzz {

inline std::string source_path(const std::string& rel) { return std::string(DPA_SOURCE_DIR) + "/" + rel; }

inline std::string read_source_file(const std::string& rel) {
  std::ifstream in(source_path(rel), std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + source_path(rel));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs f; every std::exception (dpa::Error, ApiError, boost::system errors...) is an accepted
// outcome of bad input. Anything else escapes and libFuzzer reports it.
template <class F>
void expect_clean(F&& f) {
  try {
    f();
  } catch (const std::exception&) {
  }
}

// Whether s is valid UTF-8 (RFC 3629: no overlong forms, surrogates or values past U+10FFFF),
// written out independently of the engine's recognizers, which the harnesses check against it.
inline bool valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<uint8_t>(s[i]);
    const std::size_t n = c < 0x80 ? 1 : c < 0xc2 ? 0 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : c < 0xf5 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    uint32_t cp = n == 1 ? c : c & (0x7fu >> n);
    for (std::size_t k = 1; k < n; ++k) {
      const auto b = static_cast<uint8_t>(s[i + k]);
      if ((b & 0xc0) != 0x80) return false;
      cp = cp << 6 | (b & 0x3f);
    }
    static const uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n;
  }
  return true;
}

}  // namespace dpa::fuzz
