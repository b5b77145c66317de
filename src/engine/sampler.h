// A request's sampling as the backends run it: penalties over the tokens seen so far become
// logit edits, and temperature, top-k, top-p, min-p and a draw from a random stream that depends
// only on (seed, position) become a SampleSpec (a seeded request samples the same tokens whatever
// else shares its batch). sample_token runs both on the host through the backends' reference
// (tests, tools). Log-probabilities are the log-softmax of the logits after penalties, before
// temperature and truncation.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "backend/backend.h"
#include "engine/request.h"

namespace dpa::engine {

struct SampleResult {
  int32_t token = 0;
  float logprob = 0.0f;            // log-softmax of the processed logits at `token`
  std::vector<TokenLogprob> top;  // top `params.logprobs` entries, highest first
};

// `history` = prompt + generated tokens (repetition penalty uses both; presence and frequency use
// generated only, as OpenAI defines them). `position` = number of tokens generated so far.
// `fallback_seed` is used when params.seed is unset (the engine draws it per request).
SampleResult sample_token(std::span<const float> logits, const SamplingParams& params,
                          std::span<const int32_t> prompt, std::span<const int32_t> generated,
                          uint64_t fallback_seed, int64_t position, bool suppress_eos,
                          std::span<const int32_t> eos_ids);

// The logit edits of one request (repetition, presence and frequency penalties; EOS and stop ids
// suppressed while fewer than min_tokens are out) for logits row `row`, appended to `out`; ids
// outside [0, vocab) are ignored.
void logit_edits(const SamplingParams& params, std::span<const int32_t> prompt,
                 std::span<const int32_t> generated, bool suppress_eos, std::span<const int32_t> eos_ids,
                 int64_t vocab, int32_t row, std::vector<backend::LogitEdit>& out);

// logit_bias as edits of logits row `row`: each biased token's edit among out[first, end) (a
// penalty's, or a suppressed id's, which stays banned) takes the bias; the others get an edit of
// their own. Tokens outside [0, vocab) are ignored.
void add_logit_bias(const SamplingParams& params, int64_t vocab, int32_t row, std::size_t first,
                    std::vector<backend::LogitEdit>& out);

// One sequence's penalty edits (repetition, presence, frequency; what logit_edits gives without
// EOS suppression), kept as its history grows: each call folds in the tokens added since the last
// one and copies the edits out, instead of recounting the whole history every step.
class PenaltyEdits {
 public:
  // Appends the edits for logits row `row` to `out`; `prompt` and `generated` as for logit_edits,
  // the history of the one sequence this belongs to (it only grows). A prompt of another length
  // or fewer generated tokens than last time is counted afresh.
  void append(const SamplingParams& params, std::span<const int32_t> prompt,
              std::span<const int32_t> generated, int64_t vocab, int32_t row,
              std::vector<backend::LogitEdit>& out);

 private:
  std::vector<backend::LogitEdit> edits_;      // one per distinct token seen (row unset)
  std::vector<int32_t> generated_count_;       // parallel to edits_
  std::unordered_map<int32_t, std::size_t> at_;  // token -> index in edits_
  std::size_t n_prompt_ = static_cast<std::size_t>(-1), n_generated_ = 0;  // folded in so far (none)
};

// vLLM's bad_words on an output so far: the ids to ban at its next draw, the last token of each
// sequence whose others end `generated` (a one-token sequence: always), appended to `out`.
void bad_word_bans(const std::vector<std::vector<int32_t>>& bad_words, std::span<const int32_t> generated,
                   std::vector<int32_t>& out);

// The draw of one request at `position` (greedy requests get temperature 0).
backend::SampleSpec sample_spec(const SamplingParams& params, uint64_t fallback_seed, int64_t position);

// A uniform double in [0, 1) from (seed, position): splitmix64 of the pair.
double uniform_from(uint64_t seed, int64_t position);

}  // namespace dpa::engine
