// The Responses API's store of responses.
#include "serve/response_store.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/log.h"

namespace dpa::serve {

namespace json = boost::json;

ResponseStore::ResponseStore(std::size_t max_responses, std::size_t max_bytes)
    : max_responses_(max_responses), max_bytes_(max_bytes) {}

void ResponseStore::put(const std::string& id, json::object response, json::array conversation) {
  if (!keeps_any()) return;
  erase(id);
  Entry e{std::move(response), std::move(conversation), 0};
  e.bytes = id.size() + json::serialize(e.response).size() + json::serialize(e.conversation).size();
  bytes_ += e.bytes;
  lru_.emplace_front(id, std::move(e));
  index_[id] = lru_.begin();
  evict();
}

const ResponseStore::Entry* ResponseStore::find(const std::string& id) {
  auto it = index_.find(id);
  if (it == index_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);
  return &it->second->second;
}

bool ResponseStore::erase(const std::string& id) {
  auto it = index_.find(id);
  if (it == index_.end()) return false;
  bytes_ -= it->second->second.bytes;
  lru_.erase(it->second);
  index_.erase(it);
  return true;
}

// The newest entry stays even when it alone is over max_bytes: a response just made can always
// be continued once.
void ResponseStore::evict() {
  while (lru_.size() > 1 && (lru_.size() > max_responses_ || bytes_ > max_bytes_)) {
    const auto& [id, e] = lru_.back();
    log::debug("responses: evicted {} ({} bytes; {} stored, {} bytes, bounds --responses-max-stored {} and "
               "--responses-max-stored-bytes {})",
               id, e.bytes, lru_.size() - 1, bytes_ - e.bytes, max_responses_, max_bytes_);
    bytes_ -= e.bytes;
    index_.erase(id);
    lru_.pop_back();
    ++n_evicted_;
  }
}

std::string ResponseStore::not_found_message(const std::string& id) const {
  if (!keeps_any())
    return fmt::format("Response with id '{}' not found: this server stores no responses (--responses-max-stored 0).", id);
  return fmt::format("Response with id '{}' not found. It may never have been stored (store: false), been deleted, "
                     "or been evicted: this server keeps the {} most recently used responses.",
                     id, max_responses_);
}

}  // namespace dpa::serve
