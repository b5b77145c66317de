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

enum class ReasoningParser { none, deepseek_r1 };

// "none" | "deepseek_r1" (vLLM's name) | "deepseek-r1" (SGLang's); nullopt for any other.
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
