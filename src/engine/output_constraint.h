// A sequence's structured-output recognizer, kept as its output grows: each step feeds only the
// tokens drawn since the last, instead of replaying the whole output (O(n) a step, O(n^2) over an
// answer) before the mask walk.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <variant>
#include <vector>

#include "engine/grammar.h"
#include "engine/json_schema.h"
#include "engine/regex.h"
#include "engine/request.h"
#include "engine/structured_output.h"

namespace dpa::engine {

class OutputConstraint {
 public:
  // The mask of the tokens that may follow `generated` (the output so far: tokens only ever
  // appended) under req's structure, into `allowed` (TokenTrie::allowed's form); returns whether
  // the output is complete. The recognizer points into `req` (its choices, compiled schema or
  // regex), which must stay where it is: a Sequence's, held by a unique_ptr.
  bool mask(const TokenTrie& trie, const Request& req, std::span<const int32_t> generated, std::vector<uint32_t>& allowed);
  // The output cannot go on: a grammar whose parses passed the recognizer's limits left no token
  // to draw in a text that is not complete, or a mask's walk passed Grammar::kMaxWalkWork. The
  // engine then ends the request with an error (the same on every rank: both are functions of the
  // state). Never for the other structures, whose recognizers have no dead ends.
  bool failed() const { return failed_; }

 private:
  bool grammar_mask(const TokenTrie& trie, const Grammar& g, GrammarPrefix& p, std::vector<uint32_t>& allowed);

  std::variant<std::monostate, JsonPrefix, ChoicePrefix, SchemaPrefix, RegexPrefix, GrammarPrefix> state_;
  std::size_t fed_ = 0;  // tokens of the output fed so far
  // A regex's last mask and the DFA state it is of: a pattern's loops ([a-z ]*, .*) stay in one
  // state for many steps, whose mask is then a copy, not a walk of the whole trie. A new state's
  // mask comes from the pattern's MaskMemo when any request walked that state before.
  int32_t mask_state_ = -1;
  std::shared_ptr<const MaskMemo::Mask> state_mask_;
  // A grammar's likewise: the state the last mask is of (grammar_last_), and the grammar's memo by
  // the state's key for the states other rows walked.
  std::optional<GrammarPrefix> grammar_last_;
  bool failed_ = false;
};

}  // namespace dpa::engine
