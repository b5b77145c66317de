// The paged MLA cache of one replica: per layer, n_pages pages of page_size tokens, each token
// one normalized latent (kv_lora_rank) followed by its rotated rope key (qk_rope_head_dim),
// shared by all heads, in the backend's memory, as f32 or bf16 elements. A sequence is a list of page ids. The engine
// owns the real allocator; a simple free list is here for tests and the standalone forward.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/backend.h"

namespace dpa::model {

class KvCache {
 public:
  KvCache(backend::Backend& be, int64_t n_layers, int64_t n_pages, int64_t page_size,
          int64_t kv_lora, int64_t rope_dim, DType dtype = DType::f32);

  int64_t n_pages() const { return n_pages_; }
  int64_t page_size() const { return page_size_; }
  int64_t token_width() const { return kv_lora_ + rope_dim_; }
  DType dtype() const { return dtype_; }
  std::size_t bytes() const { return data_.size(); }
  // Layer `layer`'s view for one sequence's page table (in backend memory); throws for a layer
  // outside [0, n_layers).
  backend::PagedLatent view(int64_t layer, const int32_t* pages) const;

  // Simple allocator: pages for n_tokens more tokens appended to `table`; throws when full.
  void grow(std::vector<int32_t>& table, int64_t n_tokens);
  void release(std::vector<int32_t>& table);
  int64_t free_pages() const { return static_cast<int64_t>(free_.size()); }

 private:
  int64_t n_layers_, n_pages_, page_size_, kv_lora_, rope_dim_;
  DType dtype_;
  backend::Buffer<unsigned char> data_;  // [n_layers, n_pages, page_size, kv_lora + rope_dim] elements
  std::vector<int32_t> free_;
};

}  // namespace dpa::model
