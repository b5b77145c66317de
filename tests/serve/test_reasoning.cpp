// DeepSeek-R1's reasoning block split from the answer (--reasoning-parser deepseek_r1): at every
// split of the text, and through a Generation together with the tool-call reader.
#include <gtest/gtest.h>

#include <string>

#include "serve/reasoning.h"

namespace {

using dpa::serve::ReasoningParser;
using dpa::serve::ReasoningStream;

struct Parts {
  std::string reasoning, content;
  bool leaked_marker = false;  // a streamed piece held part of </think>
};

Parts split(const std::string& text, std::size_t step) {
  ReasoningStream s;
  Parts p;
  if (step == 0) step = text.size() + 1;
  auto add = [&](const ReasoningStream::Split& x) {
    p.reasoning += x.reasoning;
    p.content += x.content;
    if (x.reasoning.find("</") != std::string::npos) p.leaked_marker = true;
  };
  for (std::size_t at = 0; at < text.size(); at += step) add(s.push(std::string_view(text).substr(at, step), false));
  add(s.push("", true));
  return p;
}

TEST(ReasoningStream, SplitsAtEveryStep) {
  for (std::size_t step : {0, 1, 2, 3, 7}) {
    // The template opened the block: the output starts inside it.
    Parts p = split("Let me think.\n7*6 = 42\n</think>\n\nThe answer is 42.", step);
    EXPECT_EQ(p.reasoning, "Let me think.\n7*6 = 42\n") << step;
    EXPECT_EQ(p.content, "\n\nThe answer is 42.") << step;
    EXPECT_FALSE(p.leaked_marker) << step;
    // The model opened it itself.
    p = split("<think>abc</think>x</think>y", step);
    EXPECT_EQ(p.reasoning, "abc") << step;
    EXPECT_EQ(p.content, "x</think>y") << step;  // only the first close counts
    // Never closed (cut short): all reasoning, nothing held back at the end.
    p = split("still thinking </thi", step);
    EXPECT_EQ(p.reasoning, "still thinking </thi") << step;
    EXPECT_EQ(p.content, "") << step;
    // A <think> later in the text is text.
    p = split("a<think>b</think>", step);
    EXPECT_EQ(p.reasoning, "a<think>b") << step;
  }
}

TEST(ReasoningStream, ParserNames) {
  EXPECT_EQ(dpa::serve::reasoning_parser_from_name("deepseek_r1"), ReasoningParser::deepseek_r1);
  EXPECT_EQ(dpa::serve::reasoning_parser_from_name("deepseek-r1"), ReasoningParser::deepseek_r1);
  EXPECT_EQ(dpa::serve::reasoning_parser_from_name("none"), ReasoningParser::none);
  EXPECT_EQ(dpa::serve::reasoning_parser_from_name("deepseek_v3"), ReasoningParser::deepseek_v3);
  EXPECT_FALSE(dpa::serve::reasoning_parser_from_name("qwen3"));
}

}  // namespace
