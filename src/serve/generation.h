// One choice of one request as rank 0 sees it: tokens arrive from the engine; text comes out
// through the incremental detokenizer; stop strings end it (text that could still become a stop
// string is held back from streaming); logprobs are collected; the OpenAI response pieces are
// built from it. Shared by the HTTP server and the batch runner.
#pragma once

#include <boost/json.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/request.h"
#include "serve/openai_request.h"
#include "serve/reasoning.h"
#include "serve/tool_calls.h"
#include "text/tokenizer.h"

namespace dpa::serve {

class Generation {
 public:
  Generation(const ParsedRequest& req, const text::Tokenizer* tok, std::size_t prompt_index);

  // Adds one engine output. Returns the text that may be streamed now. `finished()` tells whether
  // this choice is over (engine finish or a stop string; then the engine request should be aborted
  // if the engine did not finish it itself: see `needs_abort()`).
  std::string add(const engine::TokenOutput& out);
  // Marks the choice failed or cancelled without more tokens.
  void end(engine::FinishReason why);

  bool finished() const { return finish_ != engine::FinishReason::none; }
  bool needs_abort() const { return stopped_by_string_; }
  const std::string& matched_stop() const { return matched_stop_; }  // the stop string that ended it
  const std::string& text() const { return text_; }
  // The part of text() that add() has returned (a stop string's possible start held back).
  std::string_view shown_text() const { return std::string_view(text_).substr(0, emitted_); }
  // Completions with echo: the prompt's text, which the choice's text starts with.
  const std::string& echo() const { return echo_; }
  // Chat: the message content (the text less its tool-call section when tool calls are parsed) and
  // the calls read from it.
  const std::string& content() const { return tools_ || reasoning_stream_ ? content_ : text_; }
  // With a reasoning parser: the text before </think> (not part of content()).
  bool splits_reasoning() const { return reasoning_stream_ != nullptr; }
  const std::string& reasoning() const { return reasoning_; }
  bool include_reasoning() const { return req_.include_reasoning; }
  std::string take_stream_reasoning();  // reasoning added since the last call, for a stream chunk
  // Output tokens up to and including the one that closes the reasoning block (all of them when
  // it never closed); 0 without a reasoning split.
  int64_t reasoning_tokens() const;
  const std::vector<ToolCall>& tool_calls() const;
  // Calls completed since the last call, for a stream chunk; `first` is the index of the first.
  std::vector<ToolCall> take_stream_tool_calls(std::size_t& first);
  const std::vector<int32_t>& tokens() const { return tokens_; }
  // The response's: "stop" | "length" | "abort", or "tool_calls" when the model stopped after
  // calling tools.
  std::string finish_reason() const;
  std::string engine_finish_reason() const;  // the engine's (metrics): never "tool_calls"
  // Prompt tokens the engine reused from its prefix cache (-1 until the first token came).
  int64_t cached_tokens() const { return cached_tokens_; }
  std::size_t prompt_index() const { return prompt_index_; }

  // The choice's "logprobs" value for completions / chat (null when not asked). With echo, the
  // completions form covers the prompt first (its first token has no logprob).
  boost::json::value completion_logprobs() const;
  // vLLM's "prompt_logprobs" (ParsedRequest::prompt_logprobs >= 0): null for the first prompt
  // token, then per token {"<id>": {"logprob", "rank", "decoded_token"}} for it and the top k;
  // null when not asked or not computed (a request that failed first).
  boost::json::value prompt_logprobs() const;
  bool asked_prompt_logprobs() const { return req_.prompt_logprobs >= 0; }
  // /generate with return_logprob: SGLang's meta_info entries ([logprob, id, text or null] lists:
  // input_token_logprobs from logprob_start_len on, output_token_logprobs, and with
  // top_logprobs_num their *_top_logprobs), added to `meta`.
  void native_logprobs(boost::json::object& meta) const;
  boost::json::value chat_logprobs() const;
  // Logprobs of the tokens added since the last call, for a stream chunk.
  boost::json::value take_stream_logprobs(bool chat);

 private:
  std::string token_text(int32_t id) const;
  // Where each prompt token's text starts in echo() (the prompt decoded token by token).
  std::vector<std::size_t> prompt_offsets() const;
  // The completions logprobs entries of the prompt (echo), into the arrays given.
  void echo_logprobs(boost::json::array& toks, boost::json::array& lps, boost::json::array& tops,
                     boost::json::array* offs) const;
  bool decodable(int32_t id) const;
  std::string flush_text(bool final);

  const ParsedRequest& req_;
  const text::Tokenizer* tok_;
  std::size_t prompt_index_ = 0;
  int64_t cached_tokens_ = -1;
  std::unique_ptr<text::IncrementalDetokenizer> detok_;
  std::string echo_;
  std::string text_;       // all text so far (after a stop string: cut there)
  std::size_t emitted_ = 0;  // bytes of text_ already returned by add()
  std::vector<int32_t> tokens_;
  std::vector<float> logprobs_;
  std::vector<std::vector<engine::TokenLogprob>> tops_;
  std::vector<std::size_t> token_offsets_;  // byte offset of each token's text in text_
  std::size_t stream_lp_from_ = 0;
  bool got_first_ = false;  // the engine's first output came (with the prompt's scores, if asked)
  std::vector<engine::PromptLogprob> prompt_scores_;  // entry p: prompt token p + 1
  bool stream_echo_scores_sent_ = false;
  engine::FinishReason finish_ = engine::FinishReason::none;
  bool stopped_by_string_ = false;
  std::string matched_stop_;
  // Chat output parsers: the reasoning block first, then the tool-call section of what follows.
  std::string route(std::string text, bool final);
  std::unique_ptr<ReasoningStream> reasoning_stream_;
  std::unique_ptr<ToolCallStream> tools_;  // chat with tools: reads the tool-call section out
  std::string content_;                    // with a parser: the text they let through as content
  std::string reasoning_;
  std::size_t stream_reasoning_from_ = 0;
  std::size_t stream_calls_from_ = 0;
};

// Full non-streaming response bodies.
boost::json::object completion_response(const std::string& id, const std::string& model, int64_t created,
                                        const std::vector<Generation>& choices, int64_t prompt_tokens);
boost::json::object chat_response(const std::string& id, const std::string& model, int64_t created,
                                  const std::vector<Generation>& choices, int64_t prompt_tokens);
// A choice's tool calls as OpenAI writes them ({"id", "type": "function", "function": {"name",
// "arguments"}}); in a stream chunk each also carries its "index". Ids are unique per response id.
boost::json::array tool_calls_json(const std::string& response_id, std::size_t choice, const std::vector<ToolCall>& calls,
                                   std::size_t first_index, bool stream);
// One choice in SGLang's /generate shape: {"text", "output_ids", "meta_info": {"id",
// "finish_reason" ({"type": "length"|"stop"|"abort", ...} or null while streaming), "prompt_tokens",
// "completion_tokens", "cached_tokens"}}; streamed chunks carry the text shown so far, as SGLang's do.
boost::json::value native_choice(const Generation& g, const std::string& rid, int64_t prompt_tokens, bool stream);
// With cached_tokens >= 0: "prompt_tokens_details": {"cached_tokens": n}.
boost::json::object usage_object(int64_t prompt_tokens, int64_t completion_tokens, int64_t cached_tokens = -1);
// Cached prompt tokens over the prompts of these choices (each prompt once); -1 when none reported.
int64_t cached_prompt_tokens(const std::vector<Generation>& choices);

}  // namespace dpa::serve
