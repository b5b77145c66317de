// The paged KV block allocator of one replica: a free list of fixed-size pages. The model owns
// the storage (one latent + rope key per token per layer); the engine owns which pages a
// sequence holds. Accounting must balance: free + used == total at all times (checked at exit).
#pragma once

#include <cstdint>
#include <vector>

namespace dpa::engine {

class BlockAllocator {
 public:
  BlockAllocator(int64_t n_blocks, int64_t page_size);

  int64_t page_size() const { return page_size_; }
  int64_t total() const { return n_blocks_; }
  int64_t free_count() const { return static_cast<int64_t>(free_.size()); }
  int64_t used_count() const { return used_; }
  // Pages needed to hold `n_tokens` tokens.
  int64_t pages_for(int64_t n_tokens) const { return (n_tokens + page_size_ - 1) / page_size_; }

  // Appends pages to `table` until it holds `n_tokens`; false (and no change) when short.
  bool grow(std::vector<int32_t>& table, int64_t n_tokens);
  // Returns every page of `table` and clears it.
  void release(std::vector<int32_t>& table);
  // free + used == total and no page is free twice.
  bool consistent() const;

 private:
  int64_t n_blocks_, page_size_;
  int64_t used_ = 0;
  std::vector<int32_t> free_;  // stack: the most recently freed page is reused first
};

}  // namespace dpa::engine
