// OpenAI-compatible request bodies (/v1/completions, /v1/chat/completions) turned into engine
// requests, with the field set and defaults of vLLM and SGLang. Shared by the HTTP server and the
// batch runner. Bad input raises ApiError carrying the HTTP status and the OpenAI error fields.
#pragma once

#include <boost/json.hpp>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/request.h"
#include "serve/reasoning.h"
#include "serve/tool_calls.h"

namespace dpa::text {
class Tokenizer;
class ChatTemplate;
}  // namespace dpa::text

namespace dpa::serve {

// {"error": {"message", "type", "param", "code"}} with an HTTP status.
struct ApiError : std::runtime_error {
  ApiError(int status, std::string message, std::string param = "", std::string type = "");
  int status;
  std::string param, type;
  boost::json::object body() const;
};
// A 400 naming `param`, the request layers' way out of a bad field.
[[noreturn]] void bad_request(const std::string& param, const std::string& msg);
// The field `name` of `o`, or nullptr where it is absent or null (a null reads as absent).
const boost::json::value* request_field(const boost::json::object& o, const char* name);

enum class Endpoint { completions, chat };

// What the request layer needs to know of the served model.
struct ModelInfo {
  std::string name;                              // the served model name
  const text::Tokenizer* tokenizer = nullptr;
  const text::ChatTemplate* chat_template = nullptr;  // may be null: chat requests refused
  std::string bos_token, eos_token;              // for the chat template context
  int64_t max_model_len = 4096;
  int64_t vocab_size = 0;
  int32_t max_n = 16;                            // cap on `n`
  int32_t max_logprobs = 20;
  ToolParser tool_parser = ToolParser::none;     // --tool-call-parser: how tool calls are read from output
  ReasoningParser reasoning_parser = ReasoningParser::none;  // --reasoning-parser
  bool priority_scheduling = false;  // --scheduling-policy priority: a non-zero 'priority' is taken
};

struct ParsedRequest {
  Endpoint endpoint = Endpoint::completions;
  std::string model;
  std::vector<std::vector<int32_t>> prompts;  // completions may carry several; chat has one
  std::vector<std::string> echo_texts;         // completions with echo: each prompt as sent (token ids decoded)
  engine::SamplingParams params;
  int32_t n = 1;
  bool stream = false;
  bool include_usage = false;          // stream_options.include_usage
  bool continuous_usage_stats = false; // stream_options.continuous_usage_stats (vLLM): usage in every chunk
  bool echo = false;
  bool prompt_only = false;            // completions with echo and max_tokens 0: the drawn token is not shown
  int32_t prompt_logprobs = -1;        // vLLM's prompt_logprobs field (top k), -1: not asked
  bool return_tokens_as_token_ids = false;
  bool skip_special_tokens = true;
  bool include_stop_str_in_output = false;
  int32_t data_parallel_rank = -1;
  int32_t priority = 0;                // vLLM's: lower is admitted first (engine::Request::priority)
  bool chat_logprobs = false;          // chat: logprobs true/false; top count in params.logprobs
  // Chat with tools and tool_choice "auto" on a server with a tool-call parser: the output's tool
  // calls become message.tool_calls. none: the text is returned as the model wrote it.
  ToolParser tool_parser = ToolParser::none;
  // tool_choice "required" or a named function (forced_tool: its name): the output is
  // constrained to the calls' JSON (params.json_schema) and read back as tool_calls.
  ForcedTools forced_tools = ForcedTools::none;
  std::string forced_tool;
  // Chat on a server with a reasoning parser: the reasoning block goes to reasoning_content.
  ReasoningParser reasoning_parser = ReasoningParser::none;
  bool include_reasoning = true;  // vLLM's field: false drops the reasoning from the response
  // SGLang's /generate: its response shape; a list when the input was a batch or n > 1; rid(s).
  bool native = false, native_list = false;
  std::vector<std::string> native_rids;
  // /generate's return_logprob: the output tokens' logprobs (top k: params.logprobs), and the
  // prompt's from native_logprob_start on (-1: none); return_text_in_logprobs.
  bool native_logprobs = false, native_logprob_text = false;
  int32_t native_logprob_start = -1;
};

// Parses and validates `body`; throws ApiError (400 / 404 for an unknown model).
ParsedRequest parse_request(const boost::json::value& body, Endpoint ep, const ModelInfo& model);
// SGLang's native POST /generate body ({"text" | "input_ids", "sampling_params", "stream", "rid",
// "return_logprob", "logprob_start_len", "top_logprobs_num", "return_text_in_logprobs"}),
// validated as the completions request it amounts to.
ParsedRequest parse_native_request(const boost::json::value& body, const ModelInfo& model);

}  // namespace dpa::serve
