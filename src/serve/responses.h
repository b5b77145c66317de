// OpenAI's Responses API (POST /v1/responses; GET and DELETE /v1/responses/{id}, GET its
// input_items) on top of the chat path, as vLLM and SGLang serve it: a Responses body is
// translated into the chat completions body it amounts to (parse_request does the rest), and the
// chat generation is reshaped into a response object or the Responses stream events. Stored
// responses live in rank 0's memory (response_store.h), so previous_response_id can continue a
// conversation.
#pragma once

#include <boost/json.hpp>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "serve/generation.h"
#include "serve/openai_request.h"
#include "serve/response_store.h"
#include "serve/tool_calls.h"

namespace dpa::serve {

// A Responses body, read and checked.
struct ResponsesRequest {
  boost::json::object chat;          // the /v1/chat/completions body it amounts to
  boost::json::array conversation;   // its messages less the instructions: stored with the output
  boost::json::array input_items;    // the same as Responses items with ids (a previous response's
                                     // input and output first): what input_items lists
  boost::json::object echo;          // the request's settings as the response object repeats them
  bool store = true;                 // false also when the store keeps nothing (--responses-max-stored 0)
  bool parallel_tool_calls = true;
};

// Reads a POST /v1/responses body; a previous_response_id is looked up in `store`. Throws
// ApiError: 400 naming the param for a bad or unsupported field, 404 for an unknown (or evicted)
// previous id.
ResponsesRequest translate_responses_request(const boost::json::object& body, ResponseStore& store);
// parse_request on the translated body, with errors naming the Responses params
// (max_output_tokens, text.format, input) instead of the chat ones.
ParsedRequest parse_responses_request(const ResponsesRequest& r, const ModelInfo& model);

// "resp_" and 32 random hex digits.
std::string new_response_id();
// `prefix` ("msg_", "fc_", ...) and 32 random hex digits: ids of input items sent without one.
std::string new_item_id(const char* prefix);

// One response in the making: its items as they stream, the final object, what gets stored.
class ResponseShaper {
 public:
  ResponseShaper(ResponsesRequest req, std::string id, std::string model, int64_t created_at);
  const std::string& id() const { return id_; }
  bool store() const { return req_.store; }

  // Streaming: the SSE events for the start (response.created, response.in_progress), and for
  // the reasoning, content and completed tool calls the chat path let through since the last call.
  std::string start_events();
  std::string piece_events(const std::string& reasoning, const std::string& text, const std::vector<ToolCall>& calls);
  // The events that close what is open and end the stream (response.completed or
  // response.incomplete, carrying response()).
  std::string finish_events(const Generation& g, int64_t prompt_tokens);
  // An error after the stream started: an "error" event.
  std::string error_event(const ApiError& e);

  // The response object once `g` is over (non-streaming; also what is stored).
  boost::json::object response(const Generation& g, int64_t prompt_tokens) const;
  // The conversation that a later previous_response_id continues: the request's messages and
  // the output as an assistant message.
  boost::json::array conversation(const Generation& g) const;
  // The input items stored with the response (GET /v1/responses/{id}/input_items).
  const boost::json::array& input_items() const { return req_.input_items; }

 private:
  enum class Open { none, reasoning, message };
  boost::json::object base(const std::string& status) const;  // the response without output and usage
  std::vector<ToolCall> kept_calls(const std::vector<ToolCall>& calls) const;
  boost::json::object call_item(const ToolCall& c, std::size_t index) const;
  std::string event(const char* type, boost::json::object fields);
  std::string open_reasoning();
  std::string open_message();
  std::string close_open(const std::string& status);

  ResponsesRequest req_;
  std::string id_, model_, stem_;
  int64_t created_at_ = 0;
  // Streaming state.
  int64_t sequence_ = 0;
  Open open_ = Open::none;
  std::size_t n_items_ = 0, n_calls_ = 0;
  std::size_t open_index_ = 0;
  std::string open_text_;     // the open item's text so far
  std::string pending_text_;  // blank text not yet in a message item
  bool had_message_ = false;
  bool message_after_calls_ = false;  // the stream opened the message after a call: the output lists it so
};

}  // namespace dpa::serve
