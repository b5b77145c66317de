// /v1/responses pieces without a server: the store's LRU bounds (sizes from the JSON text, the
// rule it documents), the translation of Responses bodies into chat bodies and input items, and
// the input_items pages, against expectations written out by hand.
#include <gtest/gtest.h>

#include <string>

#include "serve/http_server.h"
#include "serve/responses.h"

namespace {

namespace json = boost::json;
using dpa::serve::ApiError;
using dpa::serve::input_items_page;
using dpa::serve::query_params;
using dpa::serve::ResponseStore;
using dpa::serve::translate_responses_request;

json::object body(const char* text) { return json::parse(text).as_object(); }

// The rule the store documents: the id and the JSON texts of what it keeps.
std::size_t entry_bytes(const std::string& id, const json::object& r, const json::array& c, const json::array& items = {}) {
  return id.size() + json::serialize(r).size() + json::serialize(c).size() + json::serialize(items).size();
}

TEST(ResponseStore, EvictsTheLeastRecentlyUsedByCount) {
  ResponseStore store(2, 1 << 20);
  store.put("a", {{"n", 1}}, {});
  store.put("b", {{"n", 2}}, {});
  ASSERT_NE(store.find("a"), nullptr);  // a is now the most recent
  store.put("c", {{"n", 3}}, {});
  EXPECT_EQ(store.size(), 2u);
  EXPECT_EQ(store.find("b"), nullptr);
  ASSERT_NE(store.find("a"), nullptr);
  EXPECT_EQ(store.find("a")->response.at("n"), 1);
  EXPECT_NE(store.find("c"), nullptr);
}

TEST(ResponseStore, EvictsByBytesButKeepsTheNewest) {
  const json::object r{{"text", std::string(100, 'x')}};
  const json::array conv{json::object{{"role", "user"}, {"content", "hi"}}};
  const std::size_t one = entry_bytes("r1", r, conv);
  ResponseStore store(100, 2 * one + one / 2);
  store.put("r1", r, conv);
  store.put("r2", r, conv);
  EXPECT_EQ(store.bytes(), 2 * one);
  store.put("r3", r, conv);
  EXPECT_EQ(store.size(), 2u);
  EXPECT_EQ(store.bytes(), 2 * one);
  EXPECT_EQ(store.find("r1"), nullptr);
  const json::object big{{"text", std::string(10 * one, 'y')}};
  store.put("huge", big, conv);  // over the cap alone: it stays, the others go
  EXPECT_EQ(store.size(), 1u);
  EXPECT_NE(store.find("huge"), nullptr);
  EXPECT_TRUE(store.erase("huge"));
  EXPECT_FALSE(store.erase("huge"));
  EXPECT_EQ(store.bytes(), 0u);
}

TEST(ResponseStore, CountsEvictionsOldestUseFirst) {
  ResponseStore store(3, 1 << 20);
  for (const char* id : {"r1", "r2", "r3"}) store.put(id, {}, {});
  EXPECT_EQ(store.n_evicted(), 0u);
  ASSERT_NE(store.find("r1"), nullptr);  // use order now r2, r3, r1
  store.put("r4", {}, {});
  store.put("r5", {}, {});
  EXPECT_EQ(store.n_evicted(), 2u);
  EXPECT_EQ(store.find("r2"), nullptr);
  EXPECT_EQ(store.find("r3"), nullptr);
  for (const char* id : {"r1", "r4", "r5"}) EXPECT_NE(store.find(id), nullptr) << id;
  store.put("r5", {{"again", true}}, {});  // a put under a stored id replaces it: no eviction
  EXPECT_EQ(store.size(), 3u);
  EXPECT_EQ(store.n_evicted(), 2u);
  EXPECT_TRUE(store.erase("r1"));  // a delete is no eviction either
  EXPECT_EQ(store.n_evicted(), 2u);
  // The 404's message says that an evicted id reads as an unknown one.
  EXPECT_NE(store.not_found_message("r2").find("evicted"), std::string::npos) << store.not_found_message("r2");
}

TEST(ResponseStore, ZeroKeepsNothing) {
  ResponseStore store(0, 1 << 20);
  EXPECT_FALSE(store.keeps_any());
  store.put("r1", {{"n", 1}}, {});
  EXPECT_EQ(store.size(), 0u);
  EXPECT_EQ(store.bytes(), 0u);
  EXPECT_EQ(store.find("r1"), nullptr);
  EXPECT_EQ(store.n_evicted(), 0u);  // never kept, so never evicted
  EXPECT_NE(store.not_found_message("r1").find("--responses-max-stored 0"), std::string::npos);
  // store: true is answered as store: false, in the settings the response repeats too; a
  // previous_response_id is a 404 that says why.
  const auto r = translate_responses_request(body(R"({"input": "x", "store": true})"), store);
  EXPECT_FALSE(r.store);
  EXPECT_EQ(r.echo.at("store"), false);
  try {
    translate_responses_request(body(R"({"input": "x", "previous_response_id": "r1"})"), store);
    ADD_FAILURE() << "no error";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 404);
    EXPECT_EQ(e.param, "previous_response_id");
    EXPECT_NE(std::string(e.what()).find("stores no responses"), std::string::npos) << e.what();
  }
  // A store that keeps one keeps store: true as sent.
  ResponseStore one(1, 1 << 20);
  EXPECT_TRUE(translate_responses_request(body(R"({"input": "x"})"), one).store);
  EXPECT_FALSE(translate_responses_request(body(R"({"input": "x", "store": false})"), one).store);
}

TEST(ResponsesRequest, InputItemsBecomeChatMessages) {
  ResponseStore store;
  const auto r = translate_responses_request(body(R"({
    "instructions": "Be brief.", "max_output_tokens": 7, "stream": true,
    "input": [
      {"role": "developer", "content": "Use tools."},
      {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
      {"type": "reasoning", "id": "rs_1", "summary": []},
      {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me look."}]},
      {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{\"city\":\"Paris\"}"},
      {"type": "function_call", "call_id": "c2", "name": "w", "arguments": "{\"city\":\"Rome\"}"},
      {"type": "function_call_output", "call_id": "c1", "output": "sunny"}],
    "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}, "strict": true}],
    "tool_choice": {"type": "function", "name": "w"},
    "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}}})"),
                                             store);
  const json::value want_messages = json::parse(R"([
    {"role": "system", "content": "Be brief."},
    {"role": "system", "content": "Use tools."},
    {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "Let me look."}], "tool_calls": [
      {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{\"city\":\"Paris\"}"}},
      {"id": "c2", "type": "function", "function": {"name": "w", "arguments": "{\"city\":\"Rome\"}"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "sunny"}])");
  EXPECT_EQ(r.chat.at("messages"), want_messages) << json::serialize(r.chat.at("messages"));
  EXPECT_EQ(r.conversation.size(), 4u);  // the instructions are not part of it
  EXPECT_EQ(r.chat.at("max_completion_tokens"), 7);
  EXPECT_EQ(r.chat.at("stream"), true);
  EXPECT_EQ(r.chat.at("tools"), json::parse(R"([{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}])"));
  EXPECT_EQ(r.chat.at("tool_choice"), json::parse(R"({"type": "function", "function": {"name": "w"}})"));
  EXPECT_EQ(r.chat.at("response_format"),
            json::parse(R"({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}})"));
  EXPECT_EQ(r.echo.at("instructions"), "Be brief.");
}

TEST(ResponsesRequest, PreviousResponseComesFirst) {
  ResponseStore store;
  store.put("resp_1", {}, json::parse(R"([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])").as_array());
  const auto r = translate_responses_request(body(R"({"input": "c", "previous_response_id": "resp_1"})"), store);
  EXPECT_EQ(r.chat.at("messages"),
            json::parse(R"([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}])"));
  EXPECT_EQ(r.echo.at("previous_response_id"), "resp_1");
}

TEST(ResponsesRequest, InputItemsAreListedWithIds) {
  ResponseStore store;
  const auto r = translate_responses_request(body(R"({"input": [
      {"role": "developer", "content": "Use tools."},
      {"type": "message", "id": "msg_mine", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
      {"role": "assistant", "content": "Looking."},
      {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "w", "arguments": {"city": "Paris"}},
      {"type": "function_call_output", "call_id": "c1", "output": "sunny", "status": "incomplete"}]})"),
                                             store);
  ASSERT_EQ(r.input_items.size(), 5u);
  // Ids the client sent are kept; the others are made, with OpenAI's prefixes.
  std::vector<std::string> ids;
  for (const auto& item : r.input_items) ids.emplace_back(item.at("id").as_string());
  EXPECT_EQ(ids[0].rfind("msg_", 0), 0u) << ids[0];
  EXPECT_EQ(ids[1], "msg_mine");
  EXPECT_EQ(ids[2].rfind("msg_", 0), 0u) << ids[2];
  EXPECT_NE(ids[0], ids[2]);
  EXPECT_EQ(ids[3], "fc_1");
  EXPECT_EQ(ids[4].rfind("fco_", 0), 0u) << ids[4];
  json::array want = json::parse(R"([
      {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Use tools."}], "status": "completed"},
      {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}], "status": "completed"},
      {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Looking.", "annotations": []}],
       "status": "completed"},
      {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{\"city\":\"Paris\"}", "status": "completed"},
      {"type": "function_call_output", "call_id": "c1", "output": "sunny", "status": "incomplete"}])").as_array();
  for (std::size_t k = 0; k < want.size(); ++k) {
    json::object got = r.input_items[k].as_object();
    got.erase("id");
    EXPECT_EQ(json::value(got), want[k]) << k << ": " << json::serialize(got);
  }
  // A string input is one user message.
  const auto one = translate_responses_request(body(R"({"input": "hi"})"), store);
  ASSERT_EQ(one.input_items.size(), 1u);
  json::object item = one.input_items[0].as_object();
  EXPECT_EQ(std::string(item.at("id").as_string()).rfind("msg_", 0), 0u);
  item.erase("id");
  EXPECT_EQ(json::value(item), json::parse(R"({"type": "message", "role": "user",
      "content": [{"type": "input_text", "text": "hi"}], "status": "completed"})"));
}

TEST(ResponsesRequest, PreviousResponseItemsComeFirst) {
  ResponseStore store;
  const json::value earlier_input = json::parse(R"([{"id": "msg_a", "type": "message", "role": "user", "content": "a"}])");
  const json::value earlier_output = json::parse(R"([{"id": "rs_b", "type": "reasoning"}, {"id": "msg_b", "type": "message"}])");
  store.put("resp_1", {{"output", earlier_output}}, json::array{}, earlier_input.as_array());
  const auto r = translate_responses_request(body(R"({"input": [{"id": "msg_c", "role": "user", "content": "c"}],
                                                      "previous_response_id": "resp_1"})"),
                                             store);
  std::vector<std::string> ids;
  for (const auto& item : r.input_items) ids.emplace_back(item.at("id").as_string());
  EXPECT_EQ(ids, (std::vector<std::string>{"msg_a", "rs_b", "msg_b", "msg_c"}));
}

// The ids of a page's items.
std::vector<std::string> page_ids(const json::object& page) {
  std::vector<std::string> ids;
  for (const auto& item : page.at("data").as_array()) ids.emplace_back(item.at("id").as_string());
  return ids;
}

TEST(InputItemsPage, OrderLimitAfter) {
  const json::array items = json::parse(R"([{"id": "i1"}, {"id": "i2"}, {"id": "i3"}, {"id": "i4"}, {"id": "i5"}])").as_array();
  using Q = std::vector<std::pair<std::string, std::string>>;
  using V = std::vector<std::string>;
  // The default: newest first, 20 at most.
  json::object all = input_items_page(items, {});
  EXPECT_EQ(all.at("object"), "list");
  EXPECT_EQ(page_ids(all), (V{"i5", "i4", "i3", "i2", "i1"}));
  EXPECT_EQ(all.at("first_id"), "i5");
  EXPECT_EQ(all.at("last_id"), "i1");
  EXPECT_EQ(all.at("has_more"), false);
  // Pages of 2, each after the last id of the one before, as the SDK's cursor asks.
  json::object p1 = input_items_page(items, Q{{"limit", "2"}});
  EXPECT_EQ(page_ids(p1), (V{"i5", "i4"}));
  EXPECT_EQ(p1.at("has_more"), true);
  json::object p2 = input_items_page(items, Q{{"limit", "2"}, {"after", "i4"}});
  EXPECT_EQ(page_ids(p2), (V{"i3", "i2"}));
  EXPECT_EQ(p2.at("first_id"), "i3");
  EXPECT_EQ(p2.at("last_id"), "i2");
  EXPECT_EQ(p2.at("has_more"), true);
  json::object p3 = input_items_page(items, Q{{"limit", "2"}, {"after", "i2"}});
  EXPECT_EQ(page_ids(p3), (V{"i1"}));
  EXPECT_EQ(p3.at("has_more"), false);
  // asc: the order the model read them in; include is accepted and changes nothing.
  json::object a = input_items_page(items, Q{{"order", "asc"}, {"after", "i2"}, {"limit", "2"}, {"include[]", "x"}});
  EXPECT_EQ(page_ids(a), (V{"i3", "i4"}));
  EXPECT_EQ(a.at("has_more"), true);
  EXPECT_EQ(page_ids(input_items_page(items, Q{{"order", "desc"}, {"limit", "100"}})), (V{"i5", "i4", "i3", "i2", "i1"}));
  // Past the end: an empty page with null ids.
  json::object end = input_items_page(items, Q{{"order", "asc"}, {"after", "i5"}});
  EXPECT_TRUE(end.at("data").as_array().empty());
  EXPECT_TRUE(end.at("first_id").is_null());
  EXPECT_TRUE(end.at("last_id").is_null());
  EXPECT_EQ(end.at("has_more"), false);
  EXPECT_EQ(page_ids(input_items_page(items, Q{{"limit", "1"}})), (V{"i5"}));
}

TEST(InputItemsPage, BadParametersAreNamed) {
  const json::array items = json::parse(R"([{"id": "i1"}, {"id": "i2"}])").as_array();
  auto param_of = [&](std::vector<std::pair<std::string, std::string>> q) -> std::string {
    try {
      input_items_page(items, q);
    } catch (const ApiError& e) {
      return e.status == 400 ? e.param : "status " + std::to_string(e.status);
    }
    return "";
  };
  for (const char* limit : {"0", "101", "-1", "x", "2x", "", "1.5", " 2", "99999999999999999999"})
    EXPECT_EQ(param_of({{"limit", limit}}), "limit") << limit;
  EXPECT_EQ(param_of({{"order", "newest"}}), "order");
  EXPECT_EQ(param_of({{"order", "ASC"}}), "order");
  EXPECT_EQ(param_of({{"after", "i9"}}), "after");
  EXPECT_EQ(param_of({{"before", "i2"}}), "before");
  EXPECT_EQ(param_of({{"limit", "1"}, {"order", "asc"}, {"after", "i1"}, {"include", "message.input_image.image_url"}}), "");
}

TEST(QueryParams, DecodesInOrder) {
  using Q = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(query_params("/v1/responses/r/input_items"), Q{});
  EXPECT_EQ(query_params("/p?limit=2&order=asc&include%5B%5D=a+b%2Fc&flag&&after="),
            (Q{{"limit", "2"}, {"order", "asc"}, {"include[]", "a b/c"}, {"flag", ""}, {"after", ""}}));
  EXPECT_EQ(query_params("/p?a=%zz"), std::nullopt);
  EXPECT_EQ(query_params("/p?a=%4"), std::nullopt);
  EXPECT_EQ(query_params("/p?%=1"), std::nullopt);
}

// status and param of the error a body raises (0 when none).
std::pair<int, std::string> error_of(const char* text) {
  ResponseStore store;
  try {
    translate_responses_request(body(text), store);
  } catch (const ApiError& e) {
    return {e.status, e.param};
  }
  return {0, ""};
}

TEST(ResponsesRequest, RefusesWhatItCannotAnswer) {
  using P = std::pair<int, std::string>;
  EXPECT_EQ(error_of(R"({"input": "x", "previous_response_id": "resp_nope"})"), P(404, "previous_response_id"));
  EXPECT_EQ(error_of(R"({"input": "x", "tools": [{"type": "web_search"}]})"), P(400, "tools"));
  EXPECT_EQ(error_of(R"({"input": "x", "tool_choice": {"type": "file_search"}})"), P(400, "tool_choice"));
  EXPECT_EQ(error_of(R"({"input": "x", "background": true})"), P(400, "background"));
  EXPECT_EQ(error_of(R"({"input": "x", "include": ["reasoning.encrypted_content"]})"), P(400, "include"));
  EXPECT_EQ(error_of(R"({"input": "x", "truncation": "auto"})"), P(400, "truncation"));
  EXPECT_EQ(error_of(R"({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]})"), P(400, "input"));
  EXPECT_EQ(error_of(R"({"input": [{"type": "item_reference", "id": "msg_1"}]})"), P(400, "input"));
  EXPECT_EQ(error_of(R"({"input": []})"), P(400, "input"));
  EXPECT_EQ(error_of(R"({"input": "x", "text": {"format": {"type": "grammar"}}})"), P(400, "text.format"));
  EXPECT_EQ(error_of(R"({"input": "x", "metadata": {"k": 1}})"), P(400, "metadata"));
  EXPECT_EQ(error_of(R"({"input": "x", "stream_options": {}})"), P(400, "stream_options"));
  EXPECT_EQ(error_of(R"({"input": "x", "background": false, "truncation": "disabled", "include": []})"), P(0, ""));
}

}  // namespace
