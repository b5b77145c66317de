// Template lexer: text/tag segmentation with trim_blocks + lstrip_blocks, and tag tokenization.
#include "text/jinja_lexer.h"

#include <cctype>
#include <cstring>

#include "core/error.h"
#include "text/jinja_value.h"

namespace dpa::text::jinja {

void syntax_error(int line, int column, const std::string& message) {
  throw Error("chat template syntax error at line " + std::to_string(line) + ", column " +
              std::to_string(column) + ": " + message);
}

namespace {

class Lexer {
 public:
  explicit Lexer(std::string src) : src_(std::move(src)) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i)
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
  }

  std::vector<Segment> run() {
    size_t pos = 0;
    bool strip_leading = false;  // previous tag ended with `-`
    bool trim_newline = false;   // previous block tag ended: trim_blocks eats one newline
    bool line_starting = true;
    while (true) {
      size_t tag = find_tag(pos);
      std::string text = src_.substr(pos, (tag == std::string::npos ? src_.size() : tag) - pos);
      if (strip_leading) {
        size_t k = 0;
        while (k < text.size() && std::isspace(static_cast<unsigned char>(text[k]))) ++k;
        text.erase(0, k);
      } else if (trim_newline && !text.empty() && text[0] == '\n') {
        text.erase(0, 1);
      }
      if (tag == std::string::npos) {
        emit_text(std::move(text));
        break;
      }
      char kind = src_[tag + 1];
      char marker = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
      if (marker == '-') {
        while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
      } else if (kind != '{' && marker != '+') {
        // lstrip_blocks: drop spaces/tabs between the line start and a block or comment tag.
        size_t line_pos = text.rfind('\n');
        line_pos = line_pos == std::string::npos ? 0 : line_pos + 1;
        if ((line_pos > 0 || line_starting) &&
            text.find_first_not_of(" \t", line_pos) == std::string::npos) {
          text.erase(line_pos);
        }
      }
      emit_text(std::move(text));
      size_t body = tag + 2 + ((marker == '-' || marker == '+') ? 1 : 0);
      bool right_strip = false;
      if (kind == '#') {
        size_t end = src_.find("#}", body);
        if (end == std::string::npos) error_at(tag, "unterminated comment");
        right_strip = end > body && src_[end - 1] == '-';
        pos = end + 2;
      } else {
        Segment seg;
        seg.kind = kind == '{' ? Segment::Kind::output : Segment::Kind::statement;
        position(tag, seg.line, seg.column);
        pos = tokenize(body, kind == '{' ? '}' : '%', seg.tokens, right_strip);
        segments_.push_back(std::move(seg));
      }
      strip_leading = right_strip;
      trim_newline = !right_strip && kind != '{';
      line_starting = trim_newline && pos < src_.size() && src_[pos] == '\n';
    }
    return std::move(segments_);
  }

 private:
  size_t find_tag(size_t from) const {
    for (size_t i = src_.find('{', from); i != std::string::npos; i = src_.find('{', i + 1)) {
      if (i + 1 < src_.size() && std::strchr("{%#", src_[i + 1]) != nullptr) return i;
    }
    return std::string::npos;
  }

  void emit_text(std::string text) {
    if (text.empty()) return;
    Segment seg;
    seg.kind = Segment::Kind::text;
    seg.text = std::move(text);
    segments_.push_back(std::move(seg));
  }

  void position(size_t offset, int& line, int& column) const {
    size_t lo = 0, hi = line_starts_.size();
    while (hi - lo > 1) {
      size_t mid = (lo + hi) / 2;
      if (line_starts_[mid] <= offset) lo = mid; else hi = mid;
    }
    line = static_cast<int>(lo) + 1;
    // Columns count code points from the line start; positions are asked in increasing order,
    // so counting on from the last one keeps a long single-line template linear.
    if (col_line_ != lo || col_offset_ > offset) col_line_ = lo, col_offset_ = line_starts_[lo], col_count_ = 0;
    col_count_ += utf8_length(std::string_view(src_).substr(col_offset_, offset - col_offset_));
    col_offset_ = offset;
    column = static_cast<int>(col_count_) + 1;
  }

  [[noreturn]] void error_at(size_t offset, const std::string& message) const {
    int line = 0, column = 0;
    position(offset, line, column);
    syntax_error(line, column, message);
  }

  // Tokenizes a tag body up to its closing `}}` / `%}`; returns the offset after the tag.
  size_t tokenize(size_t i, char close, std::vector<Token>& out, bool& right_strip) {
    std::string open;  // brackets open: `}}` inside a dict literal does not close the tag
    while (true) {
      while (i < src_.size() && std::isspace(static_cast<unsigned char>(src_[i]))) ++i;
      if (i >= src_.size()) error_at(i, std::string("missing '") + close + "}' to close the tag");
      if (open.empty()) {
        if (src_.compare(i, 3, std::string("-") + close + "}") == 0) {
          right_strip = true;
          push_end(out, i);
          return i + 3;
        }
        if (src_.compare(i, 2, std::string(1, close) + "}") == 0) {
          push_end(out, i);
          return i + 2;
        }
      }
      Token tok;
      position(i, tok.line, tok.column);
      char c = src_[i];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t j = i;
        while (j < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[j])) || src_[j] == '_')) ++j;
        tok.kind = Token::Kind::name;
        tok.text = src_.substr(i, j - i);
        i = j;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        i = number(i, tok);
      } else if (c == '\'' || c == '"') {
        i = string_literal(i, tok);
      } else {
        static const char* const ops[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/",
                                          "%",  "~",  "<",  ">",  "=",  "(",  ")", "[", "]", "{",
                                          "}",  ",",  ".",  ":",  "|"};
        const char* found = nullptr;
        for (const char* op : ops) {
          if (src_.compare(i, std::strlen(op), op) == 0) { found = op; break; }
        }
        if (found == nullptr) error_at(i, std::string("unexpected character '") + c + "'");
        tok.kind = Token::Kind::op;
        tok.text = found;
        if (std::strchr("([{", c) != nullptr) open.push_back(c);
        if (std::strchr(")]}", c) != nullptr) {
          char want = open.empty() ? '\0' : open.back() == '(' ? ')' : open.back() == '[' ? ']' : '}';
          if (c != want) {
            error_at(i, std::string("unexpected '") + c + "'" +
                            (want ? std::string(", expected '") + want + "'" : std::string()));
          }
          open.pop_back();
        }
        i += tok.text.size();
      }
      out.push_back(std::move(tok));
    }
  }

  void push_end(std::vector<Token>& out, size_t offset) const {
    Token end;
    end.kind = Token::Kind::end;
    position(offset, end.line, end.column);
    out.push_back(end);
  }

  size_t number(size_t i, Token& tok) const {
    size_t j = i;
    auto digits = [&] {
      while (j < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[j])) || src_[j] == '_')) ++j;
    };
    digits();
    bool is_float = false;
    if (j + 1 < src_.size() && src_[j] == '.' && std::isdigit(static_cast<unsigned char>(src_[j + 1]))) {
      is_float = true;
      ++j;
      digits();
    }
    if (j < src_.size() && (src_[j] == 'e' || src_[j] == 'E')) {
      size_t k = j + 1;
      if (k < src_.size() && (src_[k] == '+' || src_[k] == '-')) ++k;
      if (k < src_.size() && std::isdigit(static_cast<unsigned char>(src_[k]))) {
        is_float = true;
        j = k;
        digits();
      }
    }
    std::string text;
    for (size_t k = i; k < j; ++k)
      if (src_[k] != '_') text += src_[k];
    if (is_float) {
      tok.kind = Token::Kind::floating;
      tok.float_value = std::stod(text);
    } else {
      tok.kind = Token::Kind::integer;
      tok.int_value = std::stoll(text);
    }
    return j;
  }

  size_t string_literal(size_t i, Token& tok) const {
    char quote = src_[i];
    std::string value;
    size_t j = i + 1;
    while (true) {
      if (j >= src_.size()) error_at(i, "unterminated string literal");
      char c = src_[j];
      if (c == quote) break;
      if (c != '\\' || j + 1 >= src_.size()) {
        value += c;
        ++j;
        continue;
      }
      char e = src_[j + 1];
      j += 2;
      switch (e) {
        case 'n': value += '\n'; break;
        case 't': value += '\t'; break;
        case 'r': value += '\r'; break;
        case 'b': value += '\b'; break;
        case 'f': value += '\f'; break;
        case 'v': value += '\v'; break;
        case 'a': value += '\a'; break;
        case '0': value += '\0'; break;
        case '\n': break;  // line continuation
        case '\\': case '\'': case '"': value += e; break;
        case 'x': case 'u': case 'U': {
          size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (j + n > src_.size()) error_at(j, "truncated escape in string literal");
          char32_t cp = static_cast<char32_t>(std::stoul(src_.substr(j, n), nullptr, 16));
          value += utf8_encode({cp}, 0, 1);
          j += n;
          break;
        }
        default:  // Python keeps unknown escapes as written
          value += '\\';
          value += e;
      }
    }
    tok.kind = Token::Kind::string;
    tok.text = std::move(value);
    return j + 1;
  }

  std::string src_;
  std::vector<size_t> line_starts_;
  mutable size_t col_line_ = static_cast<size_t>(-1), col_offset_ = 0, col_count_ = 0;  // position() cache
  std::vector<Segment> segments_;
};

// Jinja reads templates line by line: any line break becomes "\n" and one trailing one is dropped.
std::string normalize_newlines(const std::string& source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out += source[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

}  // namespace

std::vector<Segment> lex(const std::string& source) {
  return Lexer(normalize_newlines(source)).run();
}

}  // namespace dpa::text::jinja
