// The paged KV block allocator of one replica: a free list of fixed-size pages plus, when prefix
// caching is on, a radix tree of full pages keyed by their tokens. The model owns the storage
// (one latent + rope key per token per layer); the engine owns which pages a sequence holds.
//
// Prefix cache: a full page whose KV is computed is published into the tree under its parent
// (the page before it in the same sequence; the root for the first page), keyed by its page_size
// tokens, so a tree path spells a token prefix and a node's KV depends only on that prefix.
// Pages are reference counted: a sequence reusing a cached prefix shares its pages. A cached
// page nobody holds stays in the tree (its KV intact) until memory is short: grow() then evicts
// the least recently released unreferenced leaf. A sequence always holds a root path of cached
// pages (then private ones), so an unreferenced page has only unreferenced descendants and every
// unreferenced cached page can be evicted. Everything is a pure function of the calls, so every
// rank of a replica keeps the same tree.
//
// Accounting (checked at exit): used (held by a sequence) + free (free list) + cached (in the tree,
// held by nobody) == total; free_count() reports free + cached, the pages a grow() can take.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <span>
#include <utility>
#include <vector>

namespace dpa::engine {

class BlockAllocator {
 public:
  BlockAllocator(int64_t n_blocks, int64_t page_size, bool prefix_caching = false);

  int64_t page_size() const { return page_size_; }
  int64_t total() const { return n_blocks_; }
  bool prefix_caching() const { return caching_; }
  // Pages a grow() can take: the free list plus cached pages nobody holds (evictable).
  int64_t free_count() const { return static_cast<int64_t>(free_.size()) + n_idle_cached_; }
  // Pages held by at least one sequence.
  int64_t used_count() const { return used_; }
  // Cached pages nobody holds (counted in free_count()).
  int64_t idle_cached_count() const { return n_idle_cached_; }
  // Pages in the prefix tree, held or not.
  int64_t cached_count() const { return n_cached_; }
  // Pages needed to hold `n_tokens` tokens.
  int64_t pages_for(int64_t n_tokens) const { return (n_tokens + page_size_ - 1) / page_size_; }

  // Appends pages to `table` until it holds `n_tokens`; false (and no change) when short. Takes
  // the free list first, then evicts unreferenced cached pages, least recently released first.
  bool grow(std::vector<int32_t>& table, int64_t n_tokens);
  // Drops the table's reference on each of its pages and clears it. A page nobody holds any more
  // returns to the free list, or stays cached (evictable) if it is in the tree.
  void release(std::vector<int32_t>& table);

  // Prefix cache (no-ops when off). The cached pages spelling the longest prefix of `tokens`,
  // at most `max_pages` of them. Changes nothing.
  std::vector<int32_t> match(std::span<const int32_t> tokens, int64_t max_pages) const;
  // Appends `pages` (a match() result of this step) to the empty `table`, taking a reference each.
  void share(std::vector<int32_t>& table, const std::vector<int32_t>& pages);
  // Publishes full pages [n_published, n_full) of `table`, whose KV for `tokens` is computed.
  // A page whose prefix is already cached is replaced in `table` by the cached one (the KV is the
  // same) and freed. Returns the new number of published pages (n_full; n_published when off).
  int64_t publish(std::vector<int32_t>& table, std::span<const int32_t> tokens, int64_t n_published, int64_t n_full);
  // Evicts every cached page nobody holds. Returns how many.
  int64_t flush();

  // used + free + idle cached == total, no page in two places, references and tree consistent.
  bool consistent() const;
  // For tests: the reference count of a page.
  int32_t ref_count(int32_t page) const { return nodes_[page].ref; }
  bool is_cached(int32_t page) const { return nodes_[page].cached; }

 private:
  using Children = std::map<std::vector<int32_t>, int32_t>;
  struct Node {
    int32_t ref = 0;
    bool cached = false;
    int32_t parent = -1;  // -1: the root
    std::vector<int32_t> key;
    Children children;
    uint64_t stamp = 0;  // when the last reference was dropped (LRU)
  };
  void ref(int32_t p);
  void unref(int32_t p);
  void evict_one();
  Children& children_of(int32_t parent) { return parent < 0 ? root_ : nodes_[parent].children; }
  const Children& children_of(int32_t parent) const { return parent < 0 ? root_ : nodes_[parent].children; }

  int64_t n_blocks_, page_size_;
  bool caching_;
  int64_t used_ = 0;
  int64_t n_idle_cached_ = 0, n_cached_ = 0;
  uint64_t clock_ = 0;
  std::vector<int32_t> free_;  // stack: the most recently freed page is reused first
  std::vector<Node> nodes_;    // one per page
  Children root_;
  std::set<std::pair<uint64_t, int32_t>> evictable_;  // unreferenced cached leaves by (stamp, page)
};

}  // namespace dpa::engine
