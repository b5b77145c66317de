// Paged latent cache storage and its simple page free list.
#include "model/kv_cache.h"

#include <fmt/format.h>

#include "core/error.h"

namespace dpa::model {

KvCache::KvCache(backend::Backend& be, int64_t n_layers, int64_t n_pages, int64_t page_size,
                 int64_t kv_lora, int64_t rope_dim, DType dtype)
    : n_layers_(n_layers), n_pages_(n_pages), page_size_(page_size), kv_lora_(kv_lora),
      rope_dim_(rope_dim), dtype_(dtype) {
  if (n_layers <= 0 || n_pages <= 0 || page_size <= 0)
    throw Error(fmt::format("kv cache: {} layers, {} pages of {} tokens", n_layers, n_pages, page_size));
  if (!be.supports_kv(dtype))
    throw Error(fmt::format("kv cache: the {} backend keeps no {} cache", be.name(), dtype_name(dtype)));
  data_ = backend::Buffer<unsigned char>(
      be, static_cast<std::size_t>(n_layers * n_pages * page_size * token_width()) * dtype_size(dtype));
  be.fill_zero(data_.data(), bytes());
  for (int64_t p = n_pages - 1; p >= 0; --p) free_.push_back(static_cast<int32_t>(p));
}

backend::PagedLatent KvCache::view(int64_t layer, const int32_t* pages) const {
  if (layer < 0 || layer >= n_layers_) throw Error(fmt::format("kv cache: layer {} of {}", layer, n_layers_));
  backend::PagedLatent v;
  v.base = data_.data() + static_cast<std::size_t>(layer * n_pages_ * page_size_ * token_width()) * dtype_size(dtype_);
  v.dtype = dtype_;
  v.pages = pages;
  v.page_size = page_size_;
  v.kv_lora = kv_lora_;
  v.rope_dim = rope_dim_;
  return v;
}

void KvCache::grow(std::vector<int32_t>& table, int64_t n_tokens) {
  const int64_t need = (n_tokens + page_size_ - 1) / page_size_ - static_cast<int64_t>(table.size());
  if (need > static_cast<int64_t>(free_.size()))
    throw Error(fmt::format("kv cache: {} more pages needed, {} free", need, free_.size()));
  for (int64_t i = 0; i < need; ++i) {
    table.push_back(free_.back());
    free_.pop_back();
  }
}

void KvCache::release(std::vector<int32_t>& table) {
  for (auto it = table.rbegin(); it != table.rend(); ++it) free_.push_back(*it);
  table.clear();
}

}  // namespace dpa::model
