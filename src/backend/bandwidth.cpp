// The default copy-bandwidth measurement: host memory, std::memcpy.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <new>
#include <vector>

#include "backend/backend.h"

namespace dpa::backend {

double Backend::copy_bandwidth_gbs() {
  static const double gbs = [] {
    constexpr std::size_t kBytes = std::size_t{256} << 20;
    std::vector<char> a, b;
    try {
      a.assign(kBytes, 1);
      b.assign(kBytes, 0);
    } catch (const std::bad_alloc&) {
      return 0.0;
    }
    std::vector<double> s;
    for (int r = 0; r < 5; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      std::memcpy(b.data(), a.data(), kBytes);
      s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(s.begin(), s.end());
    return s[s.size() / 2] > 0 ? 2.0 * static_cast<double>(kBytes) / s[s.size() / 2] / 1e9 : 0.0;
  }();
  return gbs;
}

}  // namespace dpa::backend
