// Text side of the tokenizer: UTF-8 helpers, PCRE2 regexes, the pre-tokenizer steps (Split,
// ByteLevel) and the added-token matcher.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>

#include "core/error.h"
#include "text/tokenizer_parts.h"

namespace dpa::text::detail {

// ---- UTF-8 ----------------------------------------------------------------------------------

int utf8_char_len(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) return 2;
  if ((c & 0xF0) == 0xE0) return 3;
  if ((c & 0xF8) == 0xF0) return 4;
  return 1;
}

size_t find_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len = 0;
    char32_t min = 0;
    char32_t cp = 0;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2, min = 0x80, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, min = 0x800, cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4, min = 0x10000, cp = c & 0x07;
    } else {
      return i;
    }
    if (i + size_t(len) > n) return i;
    for (int k = 1; k < len; ++k) {
      if ((p[i + size_t(k)] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (p[i + size_t(k)] & 0x3F);
    }
    // Overlong forms, surrogates and code points past U+10FFFF are not valid UTF-8.
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += size_t(len);
  }
  return std::string_view::npos;
}

char32_t utf8_decode_at(std::string_view s, size_t i, int* len) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  int n = utf8_char_len(p[i]);
  if (i + size_t(n) > s.size()) n = 1;
  *len = n;
  if (n == 1) return p[i];
  char32_t cp = p[i] & (0x7F >> n);
  for (int k = 1; k < n; ++k) cp = (cp << 6) | (p[i + size_t(k)] & 0x3F);
  return cp;
}

bool is_unicode_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// ---- Regex ----------------------------------------------------------------------------------

namespace {

// A larger JIT stack for the rare subject that overflows PCRE2's default 32 KiB one; one per
// thread because a JIT stack may not be shared by concurrent matches.
struct JitStack {
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* stack = nullptr;
  JitStack() {
    context = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(64 * 1024, 16 * 1024 * 1024, nullptr);
    if (context && stack) pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~JitStack() {
    if (stack) pcre2_jit_stack_free(stack);
    if (context) pcre2_match_context_free(context);
  }
};

struct MatchData {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  ~MatchData() { pcre2_match_data_free(data); }
};

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof(buffer));
  return reinterpret_cast<const char*>(buffer);
}

}  // namespace

Regex::Regex(const std::string& pattern, bool literal, const std::string& source) : pattern_(pattern) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  // PCRE2_LITERAL accepts only a few options; UCP matters for classes, which a literal has none of.
  uint32_t options = literal ? (PCRE2_UTF | PCRE2_LITERAL) : (PCRE2_UTF | PCRE2_UCP);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options,
                                   &error, &offset, nullptr);
  if (!code) {
    throw Error(source + ": pre-tokenizer regex /" + pattern + "/ does not compile at offset " +
                std::to_string(offset) + ": " + pcre2_message(error));
  }
  code_ = code;
  // JIT is an optimisation only: without it (unsupported CPU, build option) matching still works.
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void Regex::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const {
  thread_local MatchData match;
  auto* code = static_cast<pcre2_code*>(code_);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  while (start < text.size()) {
    // The caller validated UTF-8 once for the whole input.
    int rc = pcre2_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, match.data, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      thread_local JitStack big;
      rc = pcre2_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, match.data, big.context);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      throw Error("tokenizer: regex /" + pattern_ + "/ failed on a " + std::to_string(text.size()) +
                  "-byte piece: " + pcre2_message(rc));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(match.data);
    size_t b = ov[0];
    size_t e = ov[1];
    if (e > b) {
      out.emplace_back(b, e);
      start = e;
    } else {
      // Empty match: contributes no piece; step over one character, as JS matchAll does.
      start = b + size_t(utf8_char_len(uint8_t(text[b])));
    }
  }
}

// ---- Pre-tokenizer --------------------------------------------------------------------------

namespace {

// Ranges covering the piece, flagged as matches or not (Hugging Face's find_matches + invert).
struct Span {
  size_t begin;
  size_t end;
  bool is_match;
};

void apply_split(const PreTokStep& step, std::string_view piece, std::vector<std::string_view>& out) {
  thread_local std::vector<std::pair<size_t, size_t>> matches;
  thread_local std::vector<Span> spans;
  thread_local std::vector<Span> merged;
  matches.clear();
  spans.clear();
  merged.clear();
  step.regex->find_all(piece, matches);
  size_t prev = 0;
  for (auto [b, e] : matches) {
    if (b > prev) spans.push_back(Span{prev, b, step.invert});
    spans.push_back(Span{b, e, !step.invert});
    prev = e;
  }
  if (prev < piece.size()) spans.push_back(Span{prev, piece.size(), step.invert});

  switch (step.behavior) {
    case SplitBehavior::removed:
      for (const Span& s : spans)
        if (!s.is_match) merged.push_back(s);
      break;
    case SplitBehavior::isolated:
      merged = spans;
      break;
    case SplitBehavior::merged_with_previous: {
      bool previous_match = false;
      for (const Span& s : spans) {
        if (s.is_match && !previous_match && !merged.empty()) {
          merged.back().end = s.end;
        } else {
          merged.push_back(s);
        }
        previous_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::merged_with_next: {
      bool previous_match = false;
      for (size_t k = spans.size(); k-- > 0;) {
        const Span& s = spans[k];
        if (s.is_match && !previous_match && !merged.empty()) {
          merged.back().begin = s.begin;
        } else {
          merged.push_back(s);
        }
        previous_match = s.is_match;
      }
      std::reverse(merged.begin(), merged.end());
      break;
    }
    case SplitBehavior::contiguous: {
      bool previous_match = false;
      for (const Span& s : spans) {
        if (s.is_match == previous_match && !merged.empty()) {
          merged.back().end = s.end;
        } else {
          merged.push_back(s);
        }
        previous_match = s.is_match;
      }
      break;
    }
  }
  for (const Span& s : merged)
    if (s.end > s.begin) out.push_back(piece.substr(s.begin, s.end - s.begin));
}

}  // namespace

void run_pre_tokenizer(const std::vector<PreTokStep>& steps, std::string_view text, Pieces& pieces) {
  pieces.items.clear();
  pieces.storage.clear();
  if (text.empty()) return;
  pieces.items.push_back(text);
  std::vector<std::string_view> next;
  for (const PreTokStep& step : steps) {
    next.clear();
    for (std::string_view piece : pieces.items) {
      if (step.kind == PreTokStep::Kind::byte_level) {
        if (step.add_prefix_space && (piece.empty() || piece[0] != ' ')) {
          pieces.storage.push_back(" " + std::string(piece));
          piece = pieces.storage.back();
        }
        if (!step.regex) {
          next.push_back(piece);
          continue;
        }
      }
      apply_split(step, piece, next);
    }
    pieces.items.swap(next);
  }
}

// ---- Added tokens ---------------------------------------------------------------------------

void AddedTokenMatcher::Trie::insert(std::string_view s, int32_t idx) {
  int32_t node = 0;
  for (unsigned char c : s) {
    auto& children = nodes[size_t(node)].children;
    auto it = std::lower_bound(children.begin(), children.end(), std::make_pair(uint8_t(c), int32_t(-1)));
    if (it != children.end() && it->first == c) {
      node = it->second;
    } else {
      int32_t child = int32_t(nodes.size());
      children.insert(it, {uint8_t(c), child});
      nodes.emplace_back();  // invalidates `children`; not used after this
      node = child;
    }
  }
  // Two added tokens with the same content: the later definition wins, as in a map.
  nodes[size_t(node)].token_idx = idx;
}

int32_t AddedTokenMatcher::Trie::longest_at(std::string_view text, size_t pos, size_t* len) const {
  int32_t node = 0;
  int32_t best = -1;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto& children = nodes[size_t(node)].children;
    auto it = std::lower_bound(children.begin(), children.end(),
                               std::make_pair(uint8_t(text[i]), int32_t(-1)));
    if (it == children.end() || it->first != uint8_t(text[i])) break;
    node = it->second;
    if (nodes[size_t(node)].token_idx >= 0) {
      best = nodes[size_t(node)].token_idx;
      *len = i + 1 - pos;
    }
  }
  return best;
}

AddedTokenMatcher::AddedTokenMatcher(const std::vector<AddedToken>& tokens) : tokens_(&tokens) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i].content.empty()) continue;
    (tokens[i].normalized ? normalized_ : raw_).insert(tokens[i].content, int32_t(i));
  }
}

namespace {

// A "word" character for single_word tokens: letters, digits and '_' (non-ASCII letters are
// approximated as every non-space character above U+007F).
bool is_word_char(char32_t c) {
  if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  return !is_unicode_space(c);
}

char32_t char_before(std::string_view text, size_t pos) {
  size_t i = pos;
  do {
    --i;
  } while (i > 0 && (uint8_t(text[i]) & 0xC0) == 0x80);
  int len = 0;
  return utf8_decode_at(text, i, &len);
}

}  // namespace

void AddedTokenMatcher::split_range(const Trie& trie, std::string_view text, size_t begin, size_t end,
                                    std::vector<Segment>& out) const {
  const std::string_view range = text.substr(0, end);
  size_t text_start = begin;  // start of the pending plain-text span
  size_t i = begin;
  while (i < end) {
    size_t len = 0;
    int32_t idx = trie.nodes[0].children.empty() ? -1 : trie.longest_at(range, i, &len);
    if (idx < 0) {
      ++i;
      continue;
    }
    const AddedToken& tok = (*tokens_)[size_t(idx)];
    size_t match_begin = i;
    size_t match_end = i + len;
    if (tok.single_word) {
      int n = 0;
      bool left_ok = match_begin == begin || !is_word_char(char_before(text, match_begin));
      bool right_ok = match_end == end || !is_word_char(utf8_decode_at(text, match_end, &n));
      if (!left_ok || !right_ok) {
        i = match_end;
        continue;
      }
    }
    // lstrip/rstrip swallow the whitespace next to the token (never past earlier segments).
    if (tok.lstrip) {
      while (match_begin > text_start) {
        size_t p = match_begin;
        do {
          --p;
        } while (p > text_start && (uint8_t(text[p]) & 0xC0) == 0x80);
        int n = 0;
        if (!is_unicode_space(utf8_decode_at(text, p, &n))) break;
        match_begin = p;
      }
    }
    if (tok.rstrip) {
      while (match_end < end) {
        int n = 0;
        if (!is_unicode_space(utf8_decode_at(range, match_end, &n))) break;
        match_end += size_t(n);
      }
    }
    if (match_begin > text_start) out.push_back(Segment{text_start, match_begin, -1});
    out.push_back(Segment{match_begin, match_end, idx});
    i = match_end;
    text_start = match_end;
  }
  if (end > text_start) out.push_back(Segment{text_start, end, -1});
}

std::vector<Segment> AddedTokenMatcher::split(std::string_view text) const {
  std::vector<Segment> first;
  split_range(raw_, text, 0, text.size(), first);
  if (normalized_.nodes[0].children.empty()) return first;
  std::vector<Segment> second;
  for (const Segment& s : first) {
    if (s.token_idx >= 0) {
      second.push_back(s);
    } else {
      split_range(normalized_, text, s.begin, s.end, second);
    }
  }
  return second;
}

}  // namespace dpa::text::detail
