// Splits template source into text and tag segments, applying Hugging Face's whitespace rules
// (trim_blocks, lstrip_blocks, `-` markers), and tokenizes the inside of each tag.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dpa::text::jinja {

struct Token {
  enum class Kind { name, string, integer, floating, op, end };
  Kind kind = Kind::end;
  std::string text;  // name, decoded string literal or operator
  int64_t int_value = 0;
  double float_value = 0;
  int line = 0;
  int column = 0;
};

struct Segment {
  enum class Kind { text, output, statement };
  Kind kind = Kind::text;
  std::string text;           // Kind::text only
  std::vector<Token> tokens;  // tag contents, ending with a Token::Kind::end
  int line = 0;
  int column = 0;
};

// Throws dpa::Error "chat template syntax error at line L, column C: ..." on bad input.
std::vector<Segment> lex(const std::string& source);

// The message format shared by lexer and parser.
[[noreturn]] void syntax_error(int line, int column, const std::string& message);

}  // namespace dpa::text::jinja
