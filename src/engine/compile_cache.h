// Compiled output structures (JSON schemas, regex DFAs) kept by their text. Clients send the same
// schema or pattern with request after request; without this the frontend compiles it for the 400
// and then every rank again at admission, on the engine thread, inside the lockstep loop (tens of
// ms for the largest patterns, a stall every replica waits out). Thread-safe; the least recently
// used entries leave past a byte budget or an entry count. A text that failed is kept with its
// message, so a hostile text sent again costs no second compile either.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

#include "core/error.h"

namespace dpa::engine {

template <class T>
class CompileCache {
 public:
  struct Stats {
    int64_t hits = 0, misses = 0;
    std::size_t entries = 0, bytes = 0;
  };

  CompileCache(std::size_t max_entries, std::size_t max_bytes) : max_entries_(max_entries), max_bytes_(max_bytes) {}

  // The compiled object for `key`: kept, or make()'s (run outside the lock; two threads that miss
  // the same key at once both compile, and the later result is kept). make() throws dpa::Error
  // for a text it refuses; the message is kept and thrown again (as dpa::Error) on a hit. Any
  // other exception (bad_alloc) passes through and is not kept. bytes(obj) sizes a result.
  template <class Make, class Bytes>
  std::shared_ptr<const T> get(const std::string& key, Make&& make, Bytes&& bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (auto it = index_.find(key); it != index_.end()) {
        lru_.splice(lru_.begin(), lru_, it->second);
        ++stats_.hits;
        const Entry& e = *it->second;
        if (!e.value) throw Error(e.error);
        return e.value;
      }
      ++stats_.misses;
    }
    std::shared_ptr<const T> value;
    std::string error;
    try {
      value = make();
    } catch (const Error& e) {
      error = e.what();
    }
    const std::size_t size = kEntryOverhead + 2 * key.size() + (value ? bytes(*value) : error.size());
    put(key, value, error, size);
    if (!value) throw Error(error);
    return value;
  }

  Stats stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

 private:
  static constexpr std::size_t kEntryOverhead = 128;  // list node, index node, shared_ptr block
  struct Entry {
    std::string key;
    std::shared_ptr<const T> value;  // null: the text was refused with `error`
    std::string error;
    std::size_t bytes = 0;
  };

  void put(const std::string& key, std::shared_ptr<const T> value, std::string error, std::size_t size) {
    if (size > max_bytes_ || max_entries_ == 0) return;  // larger than the whole budget: not kept
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = index_.find(key); it != index_.end()) erase(it->second);
    lru_.push_front(Entry{key, std::move(value), std::move(error), size});
    index_.emplace(key, lru_.begin());
    stats_.bytes += size, ++stats_.entries;
    while (stats_.entries > max_entries_ || stats_.bytes > max_bytes_) erase(std::prev(lru_.end()));
  }

  void erase(typename std::list<Entry>::iterator it) {
    stats_.bytes -= it->bytes, --stats_.entries;
    index_.erase(it->key);
    lru_.erase(it);
  }

  const std::size_t max_entries_, max_bytes_;
  mutable std::mutex mu_;
  std::list<Entry> lru_;  // most recently used first
  std::unordered_map<std::string, typename std::list<Entry>::iterator> index_;
  Stats stats_;
};

}  // namespace dpa::engine
