// Free-list page allocator with reference counts and the per-replica prefix tree.
#include "engine/kv_blocks.h"

#include <algorithm>

#include "core/error.h"

namespace dpa::engine {

BlockAllocator::BlockAllocator(int64_t n_blocks, int64_t page_size, bool prefix_caching)
    : n_blocks_(n_blocks), page_size_(page_size), caching_(prefix_caching) {
  if (n_blocks <= 0) throw Error("KV cache has no pages: raise --max-total-tokens or --gpu-memory-utilization");
  if (page_size <= 0) throw ConfigError("page-size", "must be positive");
  free_.resize(n_blocks);
  for (int64_t i = 0; i < n_blocks; ++i) free_[i] = static_cast<int32_t>(n_blocks - 1 - i);
  nodes_.resize(n_blocks);
}

void BlockAllocator::ref(int32_t p) {
  Node& n = nodes_[p];
  if (n.ref++ > 0) return;
  ++used_;
  if (n.cached) {
    --n_idle_cached_;
    evictable_.erase({n.stamp, p});
  }
}

void BlockAllocator::unref(int32_t p) {
  Node& n = nodes_[p];
  DPA_ASSERT(n.ref > 0, "KV page released more often than taken");
  if (--n.ref > 0) return;
  --used_;
  if (n.cached) {
    ++n_idle_cached_;
    n.stamp = clock_;
    if (n.children.empty()) evictable_.insert({n.stamp, p});
  } else {
    free_.push_back(p);
  }
}

void BlockAllocator::evict_one() {
  DPA_ASSERT(!evictable_.empty(), "no evictable KV page although the count said so");
  const int32_t p = evictable_.begin()->second;
  evictable_.erase(evictable_.begin());
  Node& n = nodes_[p];
  const int32_t parent = n.parent;
  children_of(parent).erase(n.key);
  n.cached = false;
  n.parent = -1;
  n.key.clear();
  --n_idle_cached_;
  --n_cached_;
  free_.push_back(p);
  if (parent >= 0) {
    Node& q = nodes_[parent];
    if (q.cached && q.ref == 0 && q.children.empty()) evictable_.insert({q.stamp, parent});
  }
}

bool BlockAllocator::grow(std::vector<int32_t>& table, int64_t n_tokens) {
  const int64_t need = pages_for(n_tokens) - static_cast<int64_t>(table.size());
  if (need <= 0) return true;
  if (need > free_count()) return false;
  for (int64_t i = 0; i < need; ++i) {
    if (free_.empty()) evict_one();
    const int32_t p = free_.back();
    free_.pop_back();
    table.push_back(p);
    ref(p);
  }
  return true;
}

void BlockAllocator::release(std::vector<int32_t>& table) {
  ++clock_;
  for (int32_t p : table) unref(p);
  table.clear();
}

std::vector<int32_t> BlockAllocator::match(std::span<const int32_t> tokens, int64_t max_pages) const {
  std::vector<int32_t> out;
  if (!caching_) return out;
  const int64_t n = std::min<int64_t>(max_pages, static_cast<int64_t>(tokens.size()) / page_size_);
  std::vector<int32_t> key(page_size_);
  int32_t at = -1;
  for (int64_t i = 0; i < n; ++i) {
    std::copy_n(tokens.begin() + i * page_size_, page_size_, key.begin());
    const Children& ch = children_of(at);
    auto it = ch.find(key);
    if (it == ch.end()) break;
    at = it->second;
    out.push_back(at);
  }
  return out;
}

void BlockAllocator::share(std::vector<int32_t>& table, const std::vector<int32_t>& pages) {
  DPA_ASSERT(table.empty(), "a shared prefix goes into an empty page table");
  for (int32_t p : pages) {
    DPA_ASSERT(nodes_[p].cached, "only cached pages are shared");
    ref(p);
    table.push_back(p);
  }
}

int64_t BlockAllocator::publish(std::vector<int32_t>& table, std::span<const int32_t> tokens, int64_t n_published,
                                int64_t n_full) {
  if (!caching_) return n_published;
  n_full = std::min<int64_t>({n_full, static_cast<int64_t>(table.size()), static_cast<int64_t>(tokens.size()) / page_size_});
  for (int64_t i = n_published; i < n_full; ++i) {
    const int32_t parent = i == 0 ? -1 : table[i - 1];
    DPA_ASSERT(parent < 0 || nodes_[parent].cached, "a published page's parent is cached");
    std::vector<int32_t> key(tokens.begin() + i * page_size_, tokens.begin() + (i + 1) * page_size_);
    Children& ch = children_of(parent);
    const int32_t mine = table[i];
    DPA_ASSERT(!nodes_[mine].cached && nodes_[mine].ref == 1, "an unpublished page is private");
    auto it = ch.find(key);
    if (it != ch.end()) {  // computed twice (sequences that ran side by side): keep the cached one
      ref(it->second);
      table[i] = it->second;
      unref(mine);
      continue;
    }
    Node& n = nodes_[mine];
    n.cached = true;
    n.parent = parent;
    n.key = key;
    ch.emplace(std::move(key), mine);
    ++n_cached_;
  }
  return std::max(n_published, n_full);
}

int64_t BlockAllocator::flush() {
  int64_t n = 0;
  while (!evictable_.empty()) {
    evict_one();
    ++n;
  }
  return n;
}

bool BlockAllocator::consistent() const {
  if (used_ + static_cast<int64_t>(free_.size()) + n_idle_cached_ != n_blocks_) return false;
  std::vector<int32_t> f = free_;
  std::sort(f.begin(), f.end());
  if (std::adjacent_find(f.begin(), f.end()) != f.end()) return false;
  if (!f.empty() && (f.front() < 0 || f.back() >= n_blocks_)) return false;
  for (int32_t p : f)
    if (nodes_[p].ref != 0 || nodes_[p].cached) return false;
  int64_t held = 0, idle = 0, cached = 0;
  for (int64_t p = 0; p < n_blocks_; ++p) {
    const Node& n = nodes_[p];
    if (n.ref < 0) return false;
    held += n.ref > 0;
    cached += n.cached;
    idle += n.cached && n.ref == 0;
    if (n.cached) {
      const Children& ch = children_of(n.parent);
      auto it = ch.find(n.key);
      if (it == ch.end() || it->second != p) return false;
      if (n.parent >= 0 && !nodes_[n.parent].cached) return false;
      // A held page's ancestors are held (sequences hold root paths).
      if (n.ref > 0 && n.parent >= 0 && nodes_[n.parent].ref == 0) return false;
    }
    const bool leaf_idle = n.cached && n.ref == 0 && n.children.empty();
    if (leaf_idle != (evictable_.count({n.stamp, static_cast<int32_t>(p)}) > 0)) return false;
  }
  return held == used_ && idle == n_idle_cached_ && cached == n_cached_ &&
         static_cast<int64_t>(evictable_.size()) <= n_idle_cached_;
}

}  // namespace dpa::engine
