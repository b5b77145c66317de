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

}  // namespace dpa::fuzz
