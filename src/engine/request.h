// What a request is once it reaches the engine: token ids, sampling and stopping parameters,
// and what the engine sends back per generated token. Frontends (HTTP, batch, bench) build these.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace dpa::engine {

// OpenAI's logit_bias: `bias` added to the token's logit before sampling (after
// repetition_penalty's scaling where both apply).
struct LogitBias {
  int32_t token = 0;
  float bias = 0.0f;
};

// The shape the output must have: none, a JSON object (response_format json_object), one of
// SamplingParams::choices (guided_choice), a JSON text conforming to SamplingParams::json_schema
// (response_format json_schema, guided_json), a text SamplingParams::regex fully matches
// (guided_regex), or a string of the context-free grammar SamplingParams::grammar (guided_grammar,
// ebnf). The draws are restricted to the tokens that keep the text a prefix of such an output,
// and the end of the sequence to where the text is one.
enum class Structure : uint8_t { none, json_object, choice, json_schema, regex, grammar };

class JsonSchema;  // json_schema.h
class Regex;       // regex.h
class Grammar;     // grammar.h

struct SamplingParams {
  float temperature = 1.0f;  // 0: greedy
  float top_p = 1.0f;
  int32_t top_k = -1;  // -1 or 0: off
  float min_p = 0.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  float repetition_penalty = 1.0f;
  std::optional<uint64_t> seed;  // reproducible whatever the batch
  int32_t max_tokens = 16;
  int32_t min_tokens = 0;
  bool ignore_eos = false;
  std::vector<int32_t> stop_token_ids;
  std::vector<std::string> stop;  // checked on the detokenized text by rank 0
  int32_t logprobs = -1;          // -1: none; k >= 0: the sampled token's logprob and top k
  // -1: none; k >= 0: every prompt token after the first scored (its logprob given the tokens
  // before it, its rank, and the top k there), sent with the first output token. Such a request
  // skips the prefix cache: every position of its prompt is computed.
  int32_t prompt_logprobs = -1;
  std::vector<LogitBias> logit_bias;  // distinct tokens, ascending
  Structure structure = Structure::none;
  std::vector<std::string> choices;  // Structure::choice: non-empty strings, sorted, distinct
  std::string json_schema;           // Structure::json_schema: the schema document (JSON text)
  std::string regex;                 // Structure::regex: the pattern (Python re syntax, UTF-8)
  std::string grammar;               // Structure::grammar: the grammar (GBNF text, start rule root)
  // vLLM's allowed_token_ids: the draws keep only these (sorted, distinct; empty: all).
  std::vector<int32_t> allowed_token_ids;
  // vLLM's bad_words as token sequences: the last token of one is banned where the output ends
  // with the others (a one-token sequence: always). Not with a structure.
  std::vector<std::vector<int32_t>> bad_words;
  bool restricted() const { return !allowed_token_ids.empty() || !bad_words.empty(); }
  bool greedy() const { return temperature <= 0.0f || top_k == 1; }
};

enum class FinishReason : uint8_t { none, stop, length, abort };
const char* finish_reason_name(FinishReason r);

struct Request {
  uint64_t id = 0;  // unique engine-wide, assigned by rank 0
  std::vector<int32_t> prompt;
  SamplingParams params;
  int32_t data_parallel_rank = -1;  // pinned replica, -1: the router decides
  // vLLM's priority: under --scheduling-policy priority a lower value is admitted first and
  // preempted last (ties by arrival); 0 under the other policies.
  int32_t priority = 0;
  // Structure::json_schema: params.json_schema compiled, by every rank at admission (not sent).
  std::shared_ptr<const JsonSchema> schema;
  // Structure::regex: params.regex compiled likewise.
  std::shared_ptr<const Regex> regex;
  // Structure::grammar: params.grammar compiled likewise.
  std::shared_ptr<const Grammar> grammar;
};

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};

// A scored prompt token (SamplingParams::prompt_logprobs): its log-softmax given the tokens
// before it (raw logits: no penalties or bias), its rank there (1: the highest logit), the top.
struct PromptLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
  int32_t rank = 0;
  std::vector<TokenLogprob> top;
};

// One generated token of one request, as rank 0 receives it. FinishReason::abort here means the
// engine stopped the request itself (its grammar's recognizer could not go on within its limits:
// OutputConstraint::failed); rank 0 hands it on as a Rejection, not as a token.
struct TokenOutput {
  uint64_t request_id = 0;
  int32_t token = 0;
  float logprob = 0.0f;
  FinishReason finish = FinishReason::none;
  std::vector<TokenLogprob> top;  // top_logprobs when asked
  int32_t cached_tokens = -1;     // first token of a request: prompt tokens reused from the prefix cache
  std::vector<PromptLogprob> prompt_logprobs;  // first token, when asked: prompt tokens 1 .. n-1
};

}  // namespace dpa::engine
