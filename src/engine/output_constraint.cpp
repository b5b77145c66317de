// OutputConstraint (output_constraint.h).
#include "engine/output_constraint.h"

namespace dpa::engine {

bool OutputConstraint::mask(const TokenTrie& trie, const Request& req, std::span<const int32_t> generated,
                            std::vector<uint32_t>& allowed) {
  if (std::holds_alternative<std::monostate>(state_) || generated.size() < fed_) {
    switch (req.params.structure) {
      case Structure::choice: state_.emplace<ChoicePrefix>(req.params.choices); break;
      case Structure::json_schema: state_.emplace<SchemaPrefix>(*req.schema); break;
      case Structure::regex: state_.emplace<RegexPrefix>(*req.regex); break;
      default: state_.emplace<JsonPrefix>(); break;
    }
    fed_ = 0, mask_state_ = -1;
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
          } else {
            trie.allowed(recognizer, allowed);
          }
          return recognizer.complete();
        }
      },
      state_);
}

}  // namespace dpa::engine
