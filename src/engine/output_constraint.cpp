// OutputConstraint (output_constraint.h).
#include "engine/output_constraint.h"

#include <algorithm>

namespace dpa::engine {

bool OutputConstraint::mask(const TokenTrie& trie, const Request& req, std::span<const int32_t> generated,
                            std::vector<uint32_t>& allowed) {
  if (std::holds_alternative<std::monostate>(state_) || generated.size() < fed_) {
    switch (req.params.structure) {
      case Structure::choice: state_.emplace<ChoicePrefix>(req.params.choices); break;
      case Structure::json_schema: state_.emplace<SchemaPrefix>(*req.schema); break;
      case Structure::regex: state_.emplace<RegexPrefix>(*req.regex); break;
      case Structure::grammar: state_.emplace<GrammarPrefix>(*req.grammar); break;
      default: state_.emplace<JsonPrefix>(); break;
    }
    fed_ = 0, mask_state_ = -1, failed_ = false;
    grammar_last_.reset();
  }
  return std::visit(
      [&](auto& recognizer) -> bool {
        if constexpr (std::is_same_v<std::decay_t<decltype(recognizer)>, std::monostate>) {
          return false;
        } else {
          // Tokens with no bytes (EOS, specials) or past the tokenizer's add nothing.
          for (; fed_ < generated.size(); ++fed_) {
            const int32_t t = generated[fed_];
            if (t >= 0 && t < trie.vocab_size()) recognizer.feed(trie.bytes(t));
          }
          if constexpr (std::is_same_v<std::decay_t<decltype(recognizer)>, RegexPrefix>) {
            if (recognizer.state() != mask_state_) {
              MaskMemo& memo = req.regex->masks();
              state_mask_ = memo.find(trie.id(), recognizer.state());
              if (!state_mask_) {
                auto walked = std::make_shared<MaskMemo::Mask>();
                trie.allowed(recognizer, *walked);
                memo.keep(trie.id(), recognizer.state(), walked);
                state_mask_ = std::move(walked);
              }
              mask_state_ = recognizer.state();
            }
            allowed = *state_mask_;
          } else if constexpr (std::is_same_v<std::decay_t<decltype(recognizer)>, GrammarPrefix>) {
            return grammar_mask(trie, *req.grammar, recognizer, allowed);
          } else {
            trie.allowed(recognizer, allowed);
          }
          return recognizer.complete();
        }
      },
      state_);
}

// As the regex's: the last mask while the state stays (a loop such as a string's characters
// comes back to the same items, the frames being hash-consed), then the grammar's memo by the
// state's key, then a walk.
bool OutputConstraint::grammar_mask(const TokenTrie& trie, const Grammar& g, GrammarPrefix& p, std::vector<uint32_t>& allowed) {
  if (failed_) {
    allowed.assign(static_cast<std::size_t>(trie.mask_words()), 0);
    return p.complete();
  }
  p.compact_if_sparse();
  if (!grammar_last_ || !p.same_as(*grammar_last_)) {
    const int32_t id = g.state_id(p.key());
    MaskMemo& memo = g.masks();
    state_mask_ = id >= 0 ? memo.find(trie.id(), id) : nullptr;
    if (!state_mask_) {
      auto walked = std::make_shared<MaskMemo::Mask>();
      if (trie.allowed(p, *walked).over_budget) {
        failed_ = true;
        grammar_last_.reset(), state_mask_.reset();
        allowed.assign(static_cast<std::size_t>(trie.mask_words()), 0);
        return p.complete();
      }
      if (id >= 0) memo.keep(trie.id(), id, walked);
      state_mask_ = std::move(walked);
    }
    grammar_last_ = p;
  }
  allowed = *state_mask_;
  if (!p.complete() && std::all_of(allowed.begin(), allowed.end(), [](uint32_t w) { return w == 0; })) failed_ = true;
  return p.complete();
}

}  // namespace dpa::engine
