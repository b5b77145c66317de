// What every benchmark shares, GPU or not: the median of its timings, the error measure of its
// check, its list options.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

namespace dpa::perf {

inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// max |got - ref| / max |ref| (max |got - ref| when ref is all zeros; a NaN counts as infinite):
// how the benches check a result before timing it.
inline double max_rel_error(const float* got, const float* ref, std::size_t n) {
  double scale = 0, err = 0;
  for (std::size_t i = 0; i < n; ++i) {
    scale = std::max(scale, std::fabs(static_cast<double>(ref[i])));
    const double e = std::fabs(static_cast<double>(got[i]) - ref[i]);
    err = std::isnan(e) ? INFINITY : std::max(err, e);
  }
  return scale > 0 ? err / scale : err;
}

// "a,b,c" -> {"a", "b", "c"} (empty items dropped): the benches' list options.
inline std::vector<std::string> split_list(const std::string& list) {
  std::vector<std::string> out;
  for (std::size_t p = 0; p <= list.size();) {
    const std::size_t q = std::min(list.find(',', p), list.size());
    if (q > p) out.push_back(list.substr(p, q - p));
    p = q + 1;
  }
  return out;
}

}  // namespace dpa::perf
