// The regex compiler and recognizer (engine/regex.h) on written cases: inline flags (against
// CPython's verdicts), determinism and all-or-nothing feeding, UTF-8 by hand and exhaustively over
// short byte strings, Python's syntax corners, the JSON string target, refused patterns and their
// messages. The random differential tests and the hostile patterns are in test_regex.cpp.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "core/error.h"
#include "engine/regex.h"
#include "regex_test_util.h"

namespace {
using dpa::engine::Regex;
using dpa::engine::RegexPrefix;
using dpa::engine::test::compile_error;
using dpa::engine::test::full_match;
using dpa::engine::test::matches;
using dpa::engine::test::taken;

TEST(Regex, InlineFlags) {
  const char* const kI[] = {"i", "I", "\xc4\xb0", "\xc4\xb1"};  // i I İ ı
  for (const char* p : {"(?i)i", "(?i)I", "(?i)\\u0131", "(?i)[h-j]", "(?i)[\\u0130]"})
    for (const char* t : kI) EXPECT_TRUE(matches(Regex::compile(p), t)) << p << " " << t;
  EXPECT_TRUE(matches(Regex::compile("(?i)k"), "\xe2\x84\xaa"));   // Kelvin sign
  EXPECT_TRUE(matches(Regex::compile("(?i)\\u212a"), "K"));
  EXPECT_TRUE(matches(Regex::compile("(?i)S"), "\xc5\xbf"));       // long s
  EXPECT_FALSE(matches(Regex::compile("(?i)[^k]"), "\xe2\x84\xaa"));
  EXPECT_FALSE(matches(Regex::compile("(?i)[^a]"), "A"));
  EXPECT_TRUE(matches(Regex::compile("(?i)[^h-j]"), "K"));
  EXPECT_FALSE(matches(Regex::compile("(?i)[^h-j]"), "\xc4\xb1"));
  EXPECT_TRUE(matches(Regex::compile("(?i)\\w+"), "aB_9\xe2\x84\xaa"));
  EXPECT_FALSE(matches(Regex::compile("(?i)\\W"), "\xe2\x84\xaa"));
  EXPECT_FALSE(matches(Regex::compile("(?i)ss"), "\xc3\x9f"));  // no full case folding (ß)
  EXPECT_TRUE(matches(Regex::compile("(?i:a)b"), "Ab"));
  EXPECT_FALSE(matches(Regex::compile("(?i:a)b"), "AB"));
  EXPECT_TRUE(matches(Regex::compile("(?i)a(?-i:b)c"), "AbC"));
  EXPECT_FALSE(matches(Regex::compile("(?i)a(?-i:b)c"), "ABC"));
  EXPECT_TRUE(matches(Regex::compile("(?i)(?s)a.b"), "A\nB"));
  EXPECT_FALSE(matches(Regex::compile("a.b"), "a\nb"));
  EXPECT_TRUE(matches(Regex::compile("(?s:.)."), "\nx"));
  EXPECT_FALSE(matches(Regex::compile("(?s:.)."), "x\n"));
  EXPECT_TRUE(matches(Regex::compile("(?ms)^a$"), "a"));  // m: anchors stand at the ends anyway
  EXPECT_TRUE(matches(Regex::compile("(?au)\\d"), "7"));
  EXPECT_TRUE(matches(Regex::compile("(?i)\\x41"), "a"));
  EXPECT_TRUE(matches(Regex::compile("(?i)[\\x41-\\x43]+"), "aBc"));
  EXPECT_THROW(Regex::compile("(?i)\\u20ac?x"), dpa::Error);  // any non-ASCII code point but those four
}

// (?i) on the random patterns against std::regex's icase, on ASCII texts in mixed case.
TEST(Regex, SamePatternSameStates) {
  for (const char* p : {"(a|b)*a(a|b){5}", ".{0,20}[xyz]+", "(\\w+\\s?){1,8}"}) {
    const auto a = Regex::compile(p), b = Regex::compile(p);
    ASSERT_EQ(a->states(), b->states());
    for (int32_t s = 0; s < a->states(); ++s) {
      ASSERT_EQ(a->accepting(s), b->accepting(s));
      for (int c = 0; c < 256; ++c)
        ASSERT_EQ(a->next(s, static_cast<uint8_t>(c)), b->next(s, static_cast<uint8_t>(c)));
    }
  }
}

TEST(Regex, FeedOfSeveralBytesIsAllOrNothing) {
  const auto re = Regex::compile("ab*c");
  RegexPrefix p(*re);
  ASSERT_TRUE(p.feed("ab"));
  const int32_t before = p.state();
  EXPECT_FALSE(p.feed("bbx"));
  EXPECT_EQ(p.state(), before);
  EXPECT_TRUE(p.feed("bbc"));
  EXPECT_TRUE(p.complete());
  EXPECT_FALSE(p.feed(std::string_view("c")));
  EXPECT_TRUE(p.feed(std::string_view()));
  EXPECT_TRUE(p.complete());
}

// ---------------------------------------------------------------------------------------------
// UTF-8.

TEST(Regex, Utf8CharactersAreCodePoints) {
  const auto dot = Regex::compile("."), not_a = Regex::compile("[^a]");
  for (const char* s : {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "a", "\x7f"}) {
    EXPECT_EQ(matches(dot, s), true) << s;
    EXPECT_EQ(matches(not_a, s), std::string_view(s) != "a") << s;
  }
  EXPECT_FALSE(matches(dot, "\n"));
  EXPECT_TRUE(matches(not_a, "\n"));
  EXPECT_FALSE(matches(dot, "\xc3\xa9\xc3\xa9"));
  const auto range = Regex::compile("[é-ü]");  // U+00E9..U+00FC
  EXPECT_TRUE(matches(range, "é"));
  EXPECT_TRUE(matches(range, "ñ"));
  EXPECT_TRUE(matches(range, "ü"));
  EXPECT_FALSE(matches(range, "è"));
  EXPECT_FALSE(matches(range, "ÿ"));
  EXPECT_TRUE(matches(Regex::compile("\\u00e9"), "é"));
  EXPECT_TRUE(matches(Regex::compile("\\x41\\U0001F600"), "A😀"));
  EXPECT_TRUE(matches(Regex::compile("€+"), "€€€"));
  EXPECT_FALSE(matches(Regex::compile("€+"), "\xe2\x82\xac\xe2\x82"));
  EXPECT_TRUE(matches(Regex::compile("\\W"), "é"));
  EXPECT_FALSE(matches(Regex::compile("\\w"), "é"));  // ASCII \w, see regex.h
  EXPECT_TRUE(matches(Regex::compile("[\\u0100-\\U0010ffff]"), "\xf4\x8f\xbf\xbf"));
}

TEST(Regex, InvalidUtf8IsNeverTaken) {
  const auto any = Regex::compile("(.|\\n)*");
  for (const std::string_view bad :
       {"\xc0\x80", "\xc1\xbf", "\xe0\x80\x80", "\xed\xa0\x80", "\xed\xbf\xbf", "\xf0\x80\x80\x80",
        "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\x80", "\xbf", "\xff", "\xfe", "a\x80"}) {
    EXPECT_LT(taken(*any, bad), bad.size()) << testing::PrintToString(std::string(bad));
  }
  RegexPrefix p(*any);
  ASSERT_TRUE(p.feed("\xe2\x82"));
  EXPECT_FALSE(p.complete());  // a truncated character is no full match
  EXPECT_FALSE(p.feed(static_cast<uint8_t>('a')));
  EXPECT_TRUE(p.feed(static_cast<uint8_t>(0xac)));
  EXPECT_TRUE(p.complete());
}

// An independent reading of RFC 3629: the code point from the bit patterns, then the rules.
// 1: a whole valid text, 0: a proper prefix of one, -1: neither.
int utf8_verdict(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto b0 = static_cast<uint8_t>(s[i]);
    const int n = b0 < 0x80 ? 1 : (b0 >> 5) == 6 ? 2 : (b0 >> 4) == 14 ? 3 : (b0 >> 3) == 30 ? 4 : 0;
    if (n == 0) return -1;
    uint32_t cp = n == 1 ? b0 : b0 & (0x7f >> n);
    std::size_t k = 1;
    for (; k < static_cast<std::size_t>(n) && i + k < s.size(); ++k) {
      const auto b = static_cast<uint8_t>(s[i + k]);
      if ((b >> 6) != 2) return -1;
      cp = cp << 6 | (b & 0x3f);
    }
    // Bits known so far: is some completion valid? (Overlong, surrogate and range checks on the
    // smallest and largest completions.)
    const int missing = n - static_cast<int>(k);
    const uint32_t lo = cp << (6 * missing), hi = lo | ((1u << (6 * missing)) - 1);
    static const uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    bool possible = false;
    for (uint32_t c : {lo, hi, std::max(lo, kMin[n]), std::max(lo, 0xe000u), std::min(hi, 0xd7ffu)})
      possible =
          possible || (c >= lo && c <= hi && c >= kMin[n] && c <= 0x10ffff && (c < 0xd800 || c > 0xdfff));
    if (!possible) return -1;
    if (missing > 0) return 0;
    i += static_cast<std::size_t>(n);
  }
  return 1;
}

TEST(Regex, TakesExactlyTheValidUtf8PrefixesUpToThreeBytes) {
  const auto any = Regex::compile("(?:.|\\n)*");
  int64_t checked = 0;
  std::string s(3, '\0');
  for (int len = 1; len <= 3; ++len) {
    s.resize(static_cast<std::size_t>(len));
    for (uint32_t v = 0; v < (1u << (8 * len)); ++v) {
      for (int k = 0; k < len; ++k) s[static_cast<std::size_t>(k)] = static_cast<char>(v >> (8 * k));
      const int want = utf8_verdict(s);
      RegexPrefix p(*any);
      const bool took = p.feed(s);
      ASSERT_EQ(took, want >= 0) << testing::PrintToString(s);
      ASSERT_EQ(took && p.complete(), want == 1) << testing::PrintToString(s);
      ++checked;
    }
  }
  std::mt19937 rng(7);  // four bytes: a sample, half of them valid characters
  for (int i = 0; i < 1000000; ++i) {
    s.resize(4);
    for (int k = 0; k < 4; ++k) s[static_cast<std::size_t>(k)] = static_cast<char>(rng());
    if (i % 2) {  // a lead byte F0..F4 and three continuation bytes
      s[0] = static_cast<char>(0xf0 | (rng() % 5));
      for (std::size_t k = 1; k < 4; ++k) s[k] = static_cast<char>(0x80 | (rng() & 0x3f));
    }
    RegexPrefix p(*any);
    const int want = utf8_verdict(s);
    const bool took = p.feed(s);
    ASSERT_EQ(took, want >= 0) << testing::PrintToString(s);
    ASSERT_EQ(took && p.complete(), want == 1) << testing::PrintToString(s);
    ++checked;
  }
  std::printf("utf-8: %lld byte strings checked\n", static_cast<long long>(checked));
}

// ---------------------------------------------------------------------------------------------
// Python's syntax, by hand.

TEST(Regex, PythonSyntax) {
  struct Case {
    const char* pattern;
    std::string_view text;
    bool match;
  };
  const Case cases[] = {
      {"a{", "a{", true},
      {"a{1", "a{1", true},
      {"a{1,", "a{1,", true},
      {"a{x}", "a{x}", true},
      {"{}", "{}", true},
      {"x{}", "x{}", true},
      {"a{,}", "aaa", true},
      {"a{,2}", "aa", true},
      {"a{,2}", "aaa", false},
      {"a{2,}", "a", false},
      {"a{2,}", "aaaa", true},
      {"a{0}", "", true},
      {"a{0}b", "b", true},
      {"a{3}?", "aaa", true},
      {"a*?b+?c??", "bbc", true},
      {"[]]", "]", true},
      {"[]a]", "a", true},
      {"[^]]", "]", false},
      {"[^]]", "x", true},
      {"[a-]", "-", true},
      {"[-a]", "-", true},
      {"[a\\-z]", "-", true},
      {"[a\\-z]", "b", false},
      {"[\\]]", "]", true},
      {"[a-c-e]", "-", true},
      {"[a-c-e]", "d", false},
      {"[\\d-]", "-", true},
      {"[[]", "[", true},
      {"[\\b]", "\b", true},
      {"[.]", ".", true},
      {"[.]", "x", false},
      {"\\0", std::string_view("\0", 1), true},
      {"\\012", "\n", true},
      {"\\101", "A", true},
      {"[\\101]", "A", true},
      {"[\\7]", "\a", true},
      {"\\x41\\x7e", "A~", true},
      {"\\t\\n\\r\\f\\v\\a", "\t\n\r\f\v\a", true},
      {"\\.\\*\\{\\}\\-\\ \\#\\é", ".*{}- #é", true},
      {"(?#a comment)ab", "ab", true},
      {"a(?#x)*", "aaa", true},
      {"(?P<first>a)(?<second>b)", "ab", true},
      {"(?:ab)+", "abab", true},
      {"a|", "", true},
      {"|a", "a", true},
      {"(|)", "", true},
      {"()", "", true},
      {"^ab$", "ab", true},
      {"\\Aab\\Z", "ab", true},
      {"ab\\z", "ab", true},
      {"^a|^b", "b", true},
      {"(^a|b)c", "ac", true},
      {"(?:^a)?b", "b", true},
      {"(^)*a", "a", true},
      {"a($)", "a", true},
      {"(a$|b$)", "b", true},
      {"a$$", "a", true},
      {"^^a", "a", true},
      {"\\d\\D", "1x", true},
      {"\\s\\S", " x", true},
      {"\\s", "\v", true},
      {"\\w+", "a_Z9", true},
      {"\\W", "_", false},
      {"\\D", "é", true},
      {".", "\r", true},
      {"a.c", "a\nc", false},
      {"(a|ab)(c|bcd)", "abcd", true},
      {"(a*)*", "aaa", true},
      {"(a*)+b", "b", true},
      {"x*", "", true},
      {"", "", true},
      {"", "a", false},
  };
  for (const Case& c : cases) {
    std::shared_ptr<const Regex> re;
    try {
      re = Regex::compile(c.pattern);
    } catch (const dpa::Error& e) {
      ADD_FAILURE() << c.pattern << ": " << e.what();
      continue;
    }
    EXPECT_EQ(matches(re, c.text), c.match)
        << c.pattern << " / " << testing::PrintToString(std::string(c.text));
  }
}

// Target::json_string: the DFA takes a text's canonical JSON escaping exactly when the plain DFA
// takes the text, and no other spelling of it. The escaping is written out here.
TEST(Regex, JsonStringTargetReadsTheCanonicalEscapes) {
  auto escape = [](std::string_view text) {
    std::string out;
    for (const char ch : text) {
      const auto c = static_cast<uint8_t>(ch);
      if (c == '"') out += "\\\"";
      else if (c == '\\') out += "\\\\";
      else if (c == '\n') out += "\\n";
      else if (c == '\t') out += "\\t";
      else if (c == '\r') out += "\\r";
      else if (c == '\b') out += "\\b";
      else if (c == '\f') out += "\\f";
      else if (c < 0x20) {
        char hex[8];
        std::snprintf(hex, sizeof hex, "\\u%04x", c);
        out += hex;
      } else out += static_cast<char>(c);
    }
    return out;
  };
  const char* const patterns[] = {R"([^a]*)", R"(a"b)", R"(\\+)", R"([\x00-\x1f]+)", R"(.*)", R"((x|")+)", R"(\n\t\x7f)",
                                  R"([^"\\]{2})", R"(caf\u00e9 ?\S)"};
  const char* const texts[] = {"", "a\"b", "\\\\", "\x01\x1f\n", "x\"x\"", "\n\t\x7f", "caf\xc3\xa9 \xe2\x82\xac",
                               "ab", "\x02\"", "\xc3\xa9\x01", "caf\xc3\xa9 \"", "\"\"", "q"};
  int agreed = 0;
  for (const char* pat : patterns) {
    const auto plain = Regex::compile(pat);
    const auto js = Regex::compile(pat, Regex::Target::json_string);
    for (const char* t : texts) {
      RegexPrefix a(*plain), b(*js);
      const bool want = a.feed(std::string_view(t)) && a.complete();
      EXPECT_EQ(b.feed(escape(t)) && b.complete(), want) << pat << " on " << escape(t);
      ++agreed;
    }
    RegexPrefix raw(*js);
    EXPECT_FALSE(raw.feed(static_cast<uint8_t>('"'))) << pat;  // a quote only escaped
    RegexPrefix ctl(*js);
    EXPECT_FALSE(ctl.feed(static_cast<uint8_t>('\n'))) << pat;  // a control character too
  }
  const auto q = Regex::compile(R"(")", Regex::Target::json_string);
  RegexPrefix other(*q);
  EXPECT_FALSE(other.feed(std::string_view("\\u0022")));  // not the canonical spelling
  EXPECT_GT(agreed, 100);
}

TEST(Regex, EmptyStringOnly) {
  for (const char* p : {"", "()", "a{0}", "(?:)*", "^$"}) {
    const auto re = Regex::compile(p);
    ASSERT_EQ(re->states(), 1) << p;
    EXPECT_TRUE(re->accepting(re->start()));
    for (int b = 0; b < 256; ++b) EXPECT_EQ(re->next(re->start(), static_cast<uint8_t>(b)), -1);
  }
}

TEST(Regex, RefusedPatterns) {
  struct Case {
    std::string pattern;
    const char* mentions;
    int offset;  // -1: not checked (or no offset)
  };
  const Case cases[] = {
      {"ab\\1", "backreferences (\\1)", 2},
      {"(a)\\12", "backreferences (\\12)", 3},
      {"\\8", "backreferences (\\8)", 0},
      {"(?P<n>a)(?P=n)", "(?P=name)", 8},
      {"\\g<1>", "\\g<", 0},
      {"a(?=b)", "lookahead", 1},
      {"a(?!b)", "lookahead", 1},
      {"(?<=a)b", "lookbehind", 0},
      {"(?<!a)b", "lookbehind", 0},
      {"\\bword", "word boundaries", 0},
      {"a\\B", "word boundaries", 1},
      {"a(?i)b", "global flags not at the start", 1},
      {"(?x)a b", "verbose flag", 0},
      {"(?L)a", "locale flag", 0},
      {"(?-i)a", "missing : after the flags", 0},
      {"(?i-i:a)", "turned on and off", 0},
      {"(?q:a)", "unknown extension (?q", 0},
      {"(?iq:a)", "unknown flag 'q'", 0},
      {"(?i", "missing -, : or )", 0},
      {"(?i)caf\u00e9", "covers ASCII letters only; U+00E9", 7},
      {"(?i:[a\u00e9])", "covers ASCII letters only", 6},
      {"(?>ab)", "atomic", 0},
      {"a*+", "possessive", 1},
      {"a{1,2}+", "possessive", 1},
      {"(?(1)a|b)", "conditional", 0},
      {"(ab", "missing )", 0},
      {"ab)", "unbalanced parenthesis", 2},
      {"*a", "nothing to repeat", 0},
      {"a|+b", "nothing to repeat", 2},
      {"{2}", "nothing to repeat", 0},
      {"^*", "nothing to repeat", 1},
      {"a**", "multiple repeat", 2},
      {"a{2}{3}", "multiple repeat", 4},
      {"a{3,2}", "minimum is greater than the maximum", 1},
      {"a{1001}", "limited to 1000", 1},
      {"a{0,99999999999999999999}", "limited to 1000", 1},
      {"[z-a]", "bad character range z-a", 1},
      {"[\\d-z]", "bad character range \\d-z", 1},
      {"[a-\\w]", "bad character range", 1},
      {"[abc", "unterminated character set", 0},
      {"[", "unterminated character set", 0},
      {"[a-", "unterminated character set", 0},
      {"ab\\", "bad escape (end of pattern)", 2},
      {"\\q", "bad escape \\q", 0},
      {"[\\A]", "bad escape \\A", 1},
      {"\\x4", "incomplete escape \\x4", 0},
      {"\\u12g4", "incomplete escape", 0},
      {"\\U00110000", "past U+10FFFF", 0},
      {"\\ud800", "surrogate", 0},
      {"[\\udfff]", "surrogate", 1},
      {"\\N{EM DASH}", "\\N{...}", 0},
      {"\\777", "octal escape value", 0},
      {"a^b", "^ is supported only where nothing can come before it", 1},
      {"a*^b", "^ is supported only", 2},
      {"(^a)*", "^ is supported only", 1},
      {"a\\Ab", "\\A is supported only", 1},
      {"a$b", "$ is supported only where nothing can come after it", 1},
      {"(a$)+", "$ is supported only", 2},
      {"a\\Zb", "\\Z is supported only", 1},
      {"a$\\n", "$ is supported only", 1},
      {"(?P<1a>x)", "bad character in group name", 4},
      {"(?P<a>x)(?P<a>y)", "redefinition of group name", 12},
      {"(?P<>x)", "missing group name", 4},
      {"(?P<a", "unterminated group name", 0},
      {"(?#abc", "unterminated comment", 0},
      {"(?Qx)", "unknown extension", 0},
      {"[^\\x00-\\U0010ffff]", "matches no text", -1},
      {"a[^\\s\\S]b", "matches no text", -1},
      {"ab\xff", "not valid UTF-8", 2},
      {"\xc3\xa9\xed\xa0\x80", "not valid UTF-8", 2},
      {"\xe2\x82", "not valid UTF-8", 0},
      {std::string(Regex::kMaxPattern + 1, 'a'), "longer than 16384 bytes", -1},
      {std::string(300, '(') + std::string(300, ')'), "nested more than 256", 256},
  };
  for (const Case& c : cases) {
    const std::string msg = compile_error(c.pattern);
    EXPECT_NE(msg.find(c.mentions), std::string::npos) << c.pattern.substr(0, 40) << " -> \"" << msg << "\"";
    if (c.offset >= 0) {
      EXPECT_EQ(msg.rfind("at offset " + std::to_string(c.offset) + ": ", 0), 0u)
          << c.pattern << " -> " << msg;
    }
  }
  EXPECT_EQ(compile_error(std::string(256, '(') + "a" + std::string(256, ')')), "");
  EXPECT_EQ(compile_error(std::string(Regex::kMaxPattern, 'a')), "");
}

}  // namespace
