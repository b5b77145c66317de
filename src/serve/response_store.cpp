// The Responses API's store of responses and the pages of their input items.
#include "serve/response_store.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

#include "core/log.h"
#include "serve/openai_request.h"

namespace dpa::serve {

namespace json = boost::json;

ResponseStore::ResponseStore(std::size_t max_responses, std::size_t max_bytes)
    : max_responses_(max_responses), max_bytes_(max_bytes) {}

void ResponseStore::put(const std::string& id, json::object response, json::array conversation, json::array input_items) {
  if (!keeps_any()) return;
  erase(id);
  Entry e{std::move(response), std::move(conversation), std::move(input_items), 0};
  e.bytes = id.size() + json::serialize(e.response).size() + json::serialize(e.conversation).size() +
            json::serialize(e.input_items).size();
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

namespace {
[[noreturn]] void bad_param(const std::string& name, const std::string& msg) {
  throw ApiError(400, msg, name, "invalid_request_error");
}
}  // namespace

json::object input_items_page(const json::array& items, const std::vector<std::pair<std::string, std::string>>& query) {
  int64_t limit = 20;
  bool asc = false;
  const std::string* after = nullptr;
  for (const auto& [key, value] : query) {
    if (key == "limit") {
      const char* end = value.data() + value.size();
      auto [p, ec] = std::from_chars(value.data(), end, limit);
      if (value.empty() || ec != std::errc() || p != end || limit < 1 || limit > 100)
        bad_param("limit", fmt::format("'limit' must be an integer from 1 to 100, got '{}'", value));
    } else if (key == "order") {
      if (value != "asc" && value != "desc") bad_param("order", fmt::format("'order' must be 'asc' or 'desc', got '{}'", value));
      asc = value == "asc";
    } else if (key == "after") {
      after = &value;
    } else if (key == "before") {
      bad_param("before", "'before' is not supported by this server: page with 'after' and 'order'");
    }
    // include / include[]: accepted, as OpenAI documents it; stored text items carry everything.
  }
  // Positions in the asked order: asc is the order the model read them in.
  const std::size_t n = items.size();
  auto at = [&](std::size_t k) -> const json::value& { return items[asc ? k : n - 1 - k]; };
  auto id_of = [](const json::value& item) -> json::value {
    const json::value* id = item.is_object() ? item.as_object().if_contains("id") : nullptr;
    return id ? *id : json::value(nullptr);
  };
  std::size_t start = 0;
  if (after) {
    while (start < n && !(id_of(at(start)).is_string() && id_of(at(start)).as_string() == *after)) ++start;
    if (start == n) bad_param("after", fmt::format("'after': no input item '{}' in this response", *after));
    ++start;
  }
  const std::size_t stop = std::min(n, start + static_cast<std::size_t>(limit));
  json::array data;
  for (std::size_t k = start; k < stop; ++k) data.push_back(at(k));
  json::value first = data.empty() ? json::value(nullptr) : id_of(data.front());
  json::value last = data.empty() ? json::value(nullptr) : id_of(data.back());
  return json::object{{"object", "list"},
                      {"data", std::move(data)},
                      {"first_id", std::move(first)},
                      {"last_id", std::move(last)},
                      {"has_more", stop < n}};
}

}  // namespace dpa::serve
