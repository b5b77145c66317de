// Streaming text that may still turn into a marker (a stop string, a tool-call or </think> tag)
// is held back until the next piece decides it.
#pragma once

#include <algorithm>
#include <string_view>

namespace dpa::serve {

// The length of the longest tail of `s` that is a proper prefix of `marker` (0 when none).
inline std::size_t held_prefix(std::string_view s, std::string_view marker) {
  if (marker.empty()) return 0;
  for (std::size_t k = std::min(marker.size() - 1, s.size()); k > 0; --k)
    if (s.substr(s.size() - k) == marker.substr(0, k)) return k;
  return 0;
}

}  // namespace dpa::serve
