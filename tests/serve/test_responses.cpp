// /v1/responses pieces without a server: the store's LRU bounds (sizes from the JSON text, the
// rule it documents) and the translation of Responses bodies into chat bodies, written out by hand.
#include <gtest/gtest.h>

#include <string>

#include "serve/responses.h"

namespace {

namespace json = boost::json;
using dpa::serve::ApiError;
using dpa::serve::ResponseStore;
using dpa::serve::translate_responses_request;

json::object body(const char* text) { return json::parse(text).as_object(); }

std::size_t entry_bytes(const std::string& id, const json::object& r, const json::array& c) {
  return id.size() + json::serialize(r).size() + json::serialize(c).size();
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
