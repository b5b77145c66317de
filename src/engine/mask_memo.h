// Token masks of a compiled pattern's DFA states, shared by every request that uses the pattern.
// A mask is a function of (vocabulary, DFA state) alone, so the first row to reach a state walks
// the trie and the rows that reach it later (of the same request or another) copy the mask. With
// a pattern the frontend's compile cache shares, a counted repeat such as `[a-z]{1,1000}`, whose
// state moves on every step, costs a walk per state once per process instead of a walk per row
// and step. Thread-safe (the engine walks rows on several threads). Masks are kept up to a cap a
// pattern (32 MiB: 2,000 masks of DeepSeek-V3's vocabulary, so one pattern cannot take it all)
// and while a process-wide budget (256 MiB) lasts; they are given back when their pattern is
// freed (when no request holds it and the compile cache let it go).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace dpa::engine {

class MaskMemo {
 public:
  using Mask = std::vector<uint32_t>;
  static constexpr std::size_t kBudgetBytes = std::size_t{256} << 20;  // all memos of the process
  static constexpr std::size_t kMaxBytesEach = std::size_t{32} << 20;

  explicit MaskMemo(std::size_t max_bytes = kMaxBytesEach) : max_bytes_(max_bytes) {}
  MaskMemo(const MaskMemo&) = delete;
  MaskMemo& operator=(const MaskMemo&) = delete;
  ~MaskMemo() { total_ -= bytes_; }

  // The mask kept for `state` under `vocab` (the id of the trie that walked it), or null.
  std::shared_ptr<const Mask> find(uint64_t vocab, int32_t state) const {
    std::lock_guard<std::mutex> lock(mu_);
    if (vocab != vocab_) return nullptr;
    const auto it = masks_.find(state);
    return it == masks_.end() ? nullptr : it->second;
  }

  // Keeps `mask` for `state` under `vocab` while the budget lasts (another vocabulary's masks are
  // dropped first: a process serves one, tests walk several).
  void keep(uint64_t vocab, int32_t state, std::shared_ptr<const Mask> mask) {
    const std::size_t size = mask->size() * sizeof(uint32_t) + kEntryOverhead;
    std::lock_guard<std::mutex> lock(mu_);
    if (vocab != vocab_) total_ -= bytes_, bytes_ = 0, masks_.clear(), vocab_ = vocab;
    if (masks_.count(state) || bytes_ + size > max_bytes_) return;
    if (total_.fetch_add(size) + size > kBudgetBytes) {
      total_ -= size;
      return;
    }
    bytes_ += size;
    masks_.emplace(state, std::move(mask));
  }

  std::size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return masks_.size();
  }
  static std::size_t total_bytes() { return total_; }

 private:
  static constexpr std::size_t kEntryOverhead = 64;
  const std::size_t max_bytes_;
  mutable std::mutex mu_;
  uint64_t vocab_ = 0;  // TokenTrie::id() of the masks kept
  std::unordered_map<int32_t, std::shared_ptr<const Mask>> masks_;
  std::size_t bytes_ = 0;
  static inline std::atomic<std::size_t> total_{0};
};

}  // namespace dpa::engine
