// Tool calls in a model's output text, turned into OpenAI `tool_calls` (vLLM's and SGLang's
// --tool-call-parser). DeepSeek's markup, as its chat templates write past calls back:
//
//   V3:   <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\nARGS\n```<｜tool▁call▁end｜>
//         ...more calls, newline-separated...<｜tool▁calls▁end｜>
//   V3.1: <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>ARGS<｜tool▁call▁end｜>...<｜tool▁calls▁end｜>
//
// The markers are ordinary (not special) tokens, so they reach the text whatever
// skip_special_tokens says. Text before the section is the message content; a call whose markup
// does not read, or a section the generation left unfinished, stays in the content as it was
// written, so nothing the model wrote is lost.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dpa::serve {

enum class ToolParser { none, deepseek };

// tool_choice "required" or a named function: the output is constrained to the calls' JSON (see
// openai_request.cpp), not written in the model's markup, and read as calls at its end.
enum class ForcedTools { none, named, required };

// "none" | "deepseek_v3" | "deepseek_v31" (vLLM's names) | "deepseekv3" | "deepseekv31" (SGLang's).
// nullopt for any other name. ("auto" is resolved by the caller, which knows the tokenizer.)
std::optional<ToolParser> tool_parser_from_name(std::string_view name);
// The markers the parser looks for, so a caller can tell whether a tokenizer knows them.
std::string_view tool_calls_begin_marker();

struct ToolCall {
  std::string name;
  std::string arguments;  // as the model wrote it (JSON text, unchecked, as OpenAI's own API returns it)
};

// Reads one choice's text as it streams. push() takes each new piece of text and returns the
// content that may be shown now: text that could still be the start of the tool-call section is
// held back until it is known. Complete calls gather in calls().
class ToolCallStream {
 public:
  explicit ToolCallStream(ToolParser p) : parser_(p) {}
  // A forced choice: push() shows no content; at the end, the text is the named function's
  // arguments, or (required) a JSON array of {"name", "parameters"} objects, one per call. Text
  // that does not read as such (a generation cut by max_tokens) is returned as content.
  ToolCallStream(ForcedTools forced, std::string name) : forced_(forced), name_(std::move(name)) {}
  std::string push(std::string_view text, bool final);
  const std::vector<ToolCall>& calls() const { return calls_; }

 private:
  enum class State { content, section, after };
  std::string read_section(bool final);

  std::string push_forced(std::string_view text, bool final);

  ToolParser parser_ = ToolParser::none;
  ForcedTools forced_ = ForcedTools::none;
  std::string name_;
  State state_ = State::content;
  std::string buf_;  // text not yet returned or parsed
  std::string raw_, held_;  // the section before its first call: as written, and its content part
  std::vector<ToolCall> calls_;
};

}  // namespace dpa::serve
