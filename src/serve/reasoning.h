// The reasoning part of a model's output split from its answer (vLLM's and SGLang's
// --reasoning-parser). DeepSeek-R1 thinks first and closes with </think>; its chat template already
// opens the <think> block in the prompt, so the output usually starts inside it:
//
//   [<think>] reasoning... </think> answer...
//
// Everything before </think> is reasoning_content, everything after is the content (as vLLM's
// deepseek_r1 parser: an output that never closes the block is all reasoning).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace dpa::serve {

// deepseek_r1: every chat request thinks unless chat_template_kwargs says thinking (or
// enable_thinking) false; deepseek_v3 (V3.1's switch, vLLM's parser of that name): only those
// that say thinking true.
enum class ReasoningParser { none, deepseek_r1, deepseek_v3 };

// "none" | "deepseek_r1" | "deepseek_v3" (vLLM's names) | "deepseek-r1" | "deepseek-v3" (SGLang's);
// nullopt for any other.
std::optional<ReasoningParser> reasoning_parser_from_name(std::string_view name);

// Reads one choice's text as it streams: push() returns the reasoning and the content that may be
// shown now (text that could still be </think>, or the opening <think>, is held back).
class ReasoningStream {
 public:
  struct Split {
    std::string reasoning, content;
  };
  Split push(std::string_view text, bool final);

 private:
  enum class State { start, reasoning, content };
  State state_ = State::start;
  std::string buf_;
};

}  // namespace dpa::serve
