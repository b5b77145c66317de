// Free-list page allocator.
#include "engine/kv_blocks.h"

#include <algorithm>

#include "core/error.h"

namespace dpa::engine {

BlockAllocator::BlockAllocator(int64_t n_blocks, int64_t page_size) : n_blocks_(n_blocks), page_size_(page_size) {
  if (n_blocks <= 0) throw Error("KV cache has no pages: raise --max-total-tokens or --gpu-memory-utilization");
  if (page_size <= 0) throw ConfigError("page-size", "must be positive");
  free_.resize(n_blocks);
  for (int64_t i = 0; i < n_blocks; ++i) free_[i] = static_cast<int32_t>(n_blocks - 1 - i);
}

bool BlockAllocator::grow(std::vector<int32_t>& table, int64_t n_tokens) {
  const int64_t need = pages_for(n_tokens) - static_cast<int64_t>(table.size());
  if (need <= 0) return true;
  if (need > free_count()) return false;
  for (int64_t i = 0; i < need; ++i) {
    table.push_back(free_.back());
    free_.pop_back();
  }
  used_ += need;
  return true;
}

void BlockAllocator::release(std::vector<int32_t>& table) {
  for (int32_t p : table) free_.push_back(p);
  used_ -= static_cast<int64_t>(table.size());
  table.clear();
}

bool BlockAllocator::consistent() const {
  if (used_ + free_count() != n_blocks_) return false;
  std::vector<int32_t> f = free_;
  std::sort(f.begin(), f.end());
  return std::adjacent_find(f.begin(), f.end()) == f.end() && (f.empty() || (f.front() >= 0 && f.back() < n_blocks_));
}

}  // namespace dpa::engine
