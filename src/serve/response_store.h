// The stored responses of OpenAI's Responses API (rank 0's memory): what GET /v1/responses/{id}
// returns, the conversation a previous_response_id continues, and the input items that
// GET /v1/responses/{id}/input_items lists, a page at a time. Bounded by count and bytes.
#pragma once

#include <boost/json.hpp>
#include <cstddef>
#include <cstdint>
#include <list>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace dpa::serve {

// Responses kept for retrieval and previous_response_id: the least recently used go first once
// there are more than max_responses or they hold more than max_bytes (their JSON text). With
// max_responses 0 nothing is kept.
class ResponseStore {
 public:
  static constexpr std::size_t kDefaultMaxResponses = 4096;
  static constexpr std::size_t kDefaultMaxBytes = std::size_t{256} << 20;
  struct Entry {
    boost::json::object response;      // what GET /v1/responses/{id} returns
    boost::json::array conversation;   // chat messages, the output's included (not the instructions)
    boost::json::array input_items;    // the Responses items the model read, with their ids, in order
    std::size_t bytes = 0;
  };
  explicit ResponseStore(std::size_t max_responses = kDefaultMaxResponses, std::size_t max_bytes = kDefaultMaxBytes);
  // Keeps the response as the most recent (a no-op when the store keeps nothing), then evicts.
  void put(const std::string& id, boost::json::object response, boost::json::array conversation,
           boost::json::array input_items = {});
  // nullptr when unknown (never stored, deleted or evicted); a hit becomes the most recent.
  const Entry* find(const std::string& id);
  bool erase(const std::string& id);
  // False with max_responses 0: store: true is then answered as store: false.
  bool keeps_any() const { return max_responses_ > 0; }
  std::size_t size() const { return index_.size(); }
  std::size_t bytes() const { return bytes_; }
  uint64_t n_evicted() const { return n_evicted_; }
  // The 404 for an id not found here, the same whether it never existed or was evicted.
  std::string not_found_message(const std::string& id) const;

 private:
  using List = std::list<std::pair<std::string, Entry>>;  // most recent first
  void evict();
  std::size_t max_responses_, max_bytes_;
  std::size_t bytes_ = 0;
  uint64_t n_evicted_ = 0;
  List lru_;
  std::unordered_map<std::string, List::iterator> index_;
};

// One page of GET /v1/responses/{id}/input_items over a stored response's `items`, as OpenAI's
// list object ({"object": "list", "data", "first_id", "last_id", "has_more"}). `query` holds the
// request's decoded query parameters: limit (1 to 100, default 20), order ("asc" or "desc", the
// default: newest first), after (an item id: the page starts past it, in that order), include
// (accepted: these items have nothing more to include); `before` is refused (a page it asked for
// would silently differ), others are ignored. Throws ApiError 400 naming the parameter for a bad
// value or an unknown `after`.
boost::json::object input_items_page(const boost::json::array& items,
                                     const std::vector<std::pair<std::string, std::string>>& query);

}  // namespace dpa::serve
