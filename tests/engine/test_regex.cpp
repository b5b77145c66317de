// The regex compiler and recognizer (engine/regex.h) against an independent oracle, std::regex
// (ECMAScript, regex_match): random patterns in the syntax both dialects share, random texts
// (sampled matches, their mutations, noise), full-match verdicts compared and the prefixes
// feed() takes checked against the oracle; (?i) against its icase; intersections. Then: no dead
// ends, and hostile patterns with their compile time and peak heap. Written cases (syntax, UTF-8,
// refusals, flags) are in test_regex_syntax.cpp.
#include <gtest/gtest.h>
#include <malloc.h>

#include <atomic>
#include <bitset>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "core/error.h"
#include "engine/regex.h"
#include "regex_test_util.h"

// The heap in use and its peak, for the hostile patterns' memory bound (usable sizes, as malloc
// gives them; the test runs one thread).
namespace {
std::atomic<int64_t> g_heap{0}, g_heap_peak{0};
void* counted_new(std::size_t n) {
  void* p = std::malloc(n ? n : 1);
  if (!p) throw std::bad_alloc();
  const int64_t now = g_heap += static_cast<int64_t>(malloc_usable_size(p));
  if (now > g_heap_peak) g_heap_peak = now;
  return p;
}
void counted_delete(void* p) {
  if (!p) return;
  g_heap -= static_cast<int64_t>(malloc_usable_size(p));
  std::free(p);
}
}  // namespace
void* operator new(std::size_t n) {
  return counted_new(n);
}
void* operator new[](std::size_t n) {
  return counted_new(n);
}
void operator delete(void* p) noexcept {
  counted_delete(p);
}
void operator delete[](void* p) noexcept {
  counted_delete(p);
}
void operator delete(void* p, std::size_t) noexcept {
  counted_delete(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  counted_delete(p);
}

namespace {
using dpa::engine::Regex;
using dpa::engine::RegexPrefix;

using dpa::engine::test::compile_error;
using dpa::engine::test::full_match;
using dpa::engine::test::matches;
using dpa::engine::test::taken;

// ---------------------------------------------------------------------------------------------
// Random patterns in the syntax Python's re and ECMAScript agree on, over ASCII.

using Chars = std::bitset<128>;

struct Pat {
  enum Kind { kChars, kCat, kAlt, kRep } kind = kCat;
  Chars chars;  // kChars: the characters it takes
  std::vector<Pat> kids;
  int min = 0, max = 0;  // kRep; max -1: no bound
};

Chars range(int lo, int hi) {
  Chars c;
  for (int x = lo; x <= hi; ++x) c.set(static_cast<std::size_t>(x));
  return c;
}
Chars one(char c) {
  return range(c, c);
}
Chars shorthand_chars(char c) {
  Chars r;
  switch (c | 0x20) {
    case 'd':
      r = range('0', '9');
      break;
    case 'w':
      r = range('0', '9') | range('A', 'Z') | range('a', 'z') | one('_');
      break;
    default:
      r = range('\t', '\r') | one(' ');
      break;
  }
  return c >= 'a' ? r : ~r;
}
// The texts' characters: printable ASCII, \n and \t (no \r: ECMAScript's `.` refuses it).
const Chars kTextChars = range(' ', '~') | one('\n') | one('\t');

class Gen {
 public:
  explicit Gen(uint64_t seed) : rng_(seed) {}
  std::string hot;  // characters the pattern names, for the noise texts

  std::string alternation(Pat& p, int depth) {
    const int n = depth >= 3 ? 1 : 1 + pick(3) / 2 + (pick(4) == 0);
    if (n == 1) return concat(p, depth);
    p.kind = Pat::kAlt;
    std::string s;
    for (int i = 0; i < n; ++i) {
      p.kids.emplace_back();
      if (i > 0) s += '|';
      if (pick(12) == 0) continue;  // an empty alternative
      s += concat(p.kids.back(), depth);
    }
    return s;
  }

  bool sample(const Pat& p, std::string& out) {
    switch (p.kind) {
      case Pat::kChars: {
        const Chars c = p.chars & kTextChars;
        if (c.none()) return false;
        std::size_t k = pick(static_cast<int>(c.count()));
        for (std::size_t x = 0; x < 128; ++x)
          if (c[x] && k-- == 0) out += static_cast<char>(x);
        return true;
      }
      case Pat::kCat:
        for (const Pat& k : p.kids)
          if (!sample(k, out)) return false;
        return true;
      case Pat::kAlt:
        return sample(p.kids[pick(static_cast<int>(p.kids.size()))], out);
      case Pat::kRep: {
        const int n = p.min + pick((p.max < 0 ? 3 : p.max - p.min) + 1);
        for (int i = 0; i < n; ++i)
          if (!sample(p.kids[0], out)) return false;
        return true;
      }
    }
    return false;
  }

  int pick(int n) { return static_cast<int>(rng_() % static_cast<uint64_t>(n)); }

 private:
  std::string concat(Pat& p, int depth) {
    p.kind = Pat::kCat;
    std::string s;
    for (int i = 0, n = 1 + pick(4); i < n; ++i) {
      p.kids.emplace_back();
      std::string item = atom(p.kids.back(), depth);
      if (pick(10) < 4) item += quantifier(p.kids.back());
      s += item;
    }
    return s;
  }

  std::string atom(Pat& p, int depth) {
    static const char* kEscaped = ".*+?()[]{}|\\^$";
    const int r = pick(100);
    p.kind = Pat::kChars;
    if (r < 35) {
      const char c = pick(4) ? "abcx01"[pick(6)] : "yz9 _-,:@#=<>~'\"!%&"[pick(19)];
      hot += c;
      p.chars = one(c);
      return std::string(1, c);
    }
    if (r < 45) {
      const char c = kEscaped[pick(14)];
      hot += c;
      p.chars = one(c);
      return std::string("\\") + c;
    }
    if (r < 52) {
      p.chars = ~(one('\n') | one('\r'));
      return ".";
    }
    if (r < 62) {
      const char c = "dwsDWS"[pick(6)];
      p.chars = shorthand_chars(c);
      return std::string("\\") + c;
    }
    if (r < 82 || depth >= 3) return char_class(p);
    Pat inner;
    std::string s = (pick(2) ? "(" : "(?:") + alternation(inner, depth + 1) + ")";
    p = std::move(inner);
    return s;
  }

  std::string char_class(Pat& p) {
    static const char* kRanges[] = {"a-c", "b-y", "0-5", "A-Z", "x-z", "!-/"};
    std::string s = "[";
    const bool negate = pick(10) < 3;
    if (negate) s += '^';
    Chars c;
    for (int i = 0, n = 1 + pick(3); i < n; ++i) {
      const int r = pick(10);
      if (r < 4) {
        const char x = "abcxyz019_ .,"[pick(13)];
        s += x, c |= one(x), hot += x;
      } else if (r < 6) {
        const char* g = kRanges[pick(6)];
        s += g, c |= range(g[0], g[2]), hot += g[0], hot += g[2];
      } else if (r < 8) {
        const char x = "dwsDWS"[pick(6)];
        s += '\\', s += x, c |= shorthand_chars(x);
      } else {
        const char x = ".]-\\"[pick(4)];
        s += '\\', s += x, c |= one(x), hot += x;
      }
    }
    p.chars = negate ? ~c : c;
    return s + "]";
  }

  std::string quantifier(Pat& p) {
    Pat rep;
    rep.kind = Pat::kRep;
    rep.kids.push_back(std::move(p));
    std::string q;
    switch (pick(6)) {
      case 0:
        q = "*", rep.min = 0, rep.max = -1;
        break;
      case 1:
        q = "+", rep.min = 1, rep.max = -1;
        break;
      case 2:
        q = "?", rep.min = 0, rep.max = 1;
        break;
      case 3:
        rep.min = rep.max = pick(4), q = "{" + std::to_string(rep.min) + "}";
        break;
      case 4:
        rep.min = pick(4), rep.max = -1, q = "{" + std::to_string(rep.min) + ",}";
        break;
      default:
        rep.min = pick(4), rep.max = rep.min + pick(4);
        q = "{" + std::to_string(rep.min) + "," + std::to_string(rep.max) + "}";
    }
    if (pick(4) == 0) q += '?';
    p = std::move(rep);
    return q;
  }

  std::mt19937_64 rng_;
};

// The shortest ASCII text (no \r) that takes the DFA from `state` to a full match; false if none.
bool ascii_completion(const Regex& re, int32_t state, std::string& out) {
  std::vector<int32_t> prev(static_cast<std::size_t>(re.states()), -2);
  std::vector<uint8_t> via(prev.size());
  std::vector<int32_t> queue{state};
  prev[static_cast<std::size_t>(state)] = -1;
  for (std::size_t q = 0; q < queue.size(); ++q) {
    const int32_t s = queue[q];
    if (re.accepting(s)) {
      out.clear();
      for (int32_t x = s; prev[static_cast<std::size_t>(x)] != -1; x = prev[static_cast<std::size_t>(x)])
        out.insert(out.begin(), static_cast<char>(via[static_cast<std::size_t>(x)]));
      return true;
    }
    for (int b = 0; b < 128; ++b) {
      const int32_t t = re.next(s, static_cast<uint8_t>(b));
      if (b == '\r' || t < 0 || prev[static_cast<std::size_t>(t)] != -2) continue;
      prev[static_cast<std::size_t>(t)] = s, via[static_cast<std::size_t>(t)] = static_cast<uint8_t>(b);
      queue.push_back(t);
    }
  }
  return false;
}

TEST(Regex, MatchesStdRegexOnRandomPatterns) {
  Gen gen(20240611);
  int64_t patterns = 0, skipped = 0, too_complex = 0, cases = 0, matched = 0, refused_runs = 0,
          completions = 0, dead_checks = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    Pat pat;
    gen.hot.clear();
    const std::string pattern = gen.alternation(pat, 0);
    std::regex oracle;
    try {
      oracle = std::regex(pattern, std::regex::ECMAScript);
    } catch (const std::regex_error&) {
      ++skipped;  // libstdc++ refuses a few spellings Python takes
      continue;
    }
    std::shared_ptr<const Regex> re;
    try {
      re = Regex::compile(pattern);
    } catch (const dpa::Error& e) {
      // A few random patterns pass the caps (subset construction can blow up); otherwise only a
      // pattern that matches nothing may be refused, and no sample of it may exist.
      const std::string msg = e.what();
      if (msg.find("too complex") != std::string::npos) {
        ++too_complex;
        continue;
      }
      ASSERT_NE(msg.find("matches no text"), std::string::npos) << pattern << ": " << msg;
      std::string s;
      for (int i = 0; i < 20; ++i)
        if (s.clear(), gen.sample(pat, s)) ADD_FAILURE() << pattern << " refused but matches " << s;
      ++patterns;
      continue;
    }
    ++patterns;
    std::vector<std::string> texts;
    for (int i = 0; i < 12; ++i) {
      std::string s;
      if (gen.sample(pat, s) && s.size() <= 16) texts.push_back(s);
    }
    for (std::size_t i = 0, n = texts.size(); i < n; ++i) {  // one-character edits of the matches
      std::string s = texts[i];
      const std::size_t at = s.empty() ? 0 : static_cast<std::size_t>(gen.pick(static_cast<int>(s.size())));
      const char c = gen.hot.empty()
                         ? 'a'
                         : gen.hot[static_cast<std::size_t>(gen.pick(static_cast<int>(gen.hot.size())))];
      switch (gen.pick(3)) {
        case 0:
          s.insert(at, 1, c);
          break;
        case 1:
          if (!s.empty()) s.erase(at, 1);
          break;
        default:
          if (!s.empty()) s[at] = c;
      }
      texts.push_back(s);
    }
    const std::string noise = gen.hot + "a0 _\n-";
    for (int i = 0; i < 12; ++i) {
      std::string s;
      for (int k = 0, n = gen.pick(7); k < n; ++k)
        s += noise[static_cast<std::size_t>(gen.pick(static_cast<int>(noise.size())))];
      texts.push_back(s);
    }
    bool dead_checked = false;
    for (const std::string& text : texts) {
      ++cases;
      const bool want = std::regex_match(text, oracle);
      matched += want;
      const std::size_t k = taken(*re, text);
      ASSERT_EQ(full_match(*re, text), want) << "pattern " << pattern << " text \"" << text << "\"";
      if (want) {
        ASSERT_EQ(k, text.size()) << pattern << " / " << text;  // every prefix of a match is taken
        continue;
      }
      if (k == text.size()) continue;
      ++refused_runs;
      // What was taken continues to a match, by the oracle's word.
      RegexPrefix p(*re);
      ASSERT_TRUE(p.feed(std::string_view(text).substr(0, k)));
      std::string w;
      ASSERT_TRUE(ascii_completion(*re, p.state(), w)) << pattern << " / " << text.substr(0, k);
      ASSERT_TRUE(std::regex_match(text.substr(0, k) + w, oracle))
          << pattern << " / " << text.substr(0, k) << " + " << w;
      ++completions;
      if (dead_checked) continue;
      // The refused byte: no completion of up to two of the pattern's characters matches.
      dead_checked = true;
      ++dead_checks;
      std::string alphabet;
      for (const char c : noise)
        if (alphabet.find(c) == std::string::npos && alphabet.size() < 12) alphabet += c;
      const std::string head = text.substr(0, k + 1);
      ASSERT_FALSE(std::regex_match(head, oracle)) << pattern << " / " << head;
      for (const char a : alphabet) {
        ASSERT_FALSE(std::regex_match(head + a, oracle)) << pattern << " / " << head << a;
        for (const char b : alphabet)
          ASSERT_FALSE(std::regex_match(head + a + b, oracle)) << pattern << " / " << head << a << b;
      }
    }
  }
  std::printf(
      "differential: %lld patterns compared (%lld skipped: std::regex refused them; %lld too complex), %lld "
      "texts, "
      "%lld matches, %lld refused runs (each completed to an oracle match), %lld refused bytes checked "
      "dead\n",
      static_cast<long long>(patterns), static_cast<long long>(skipped), static_cast<long long>(too_complex),
      static_cast<long long>(cases), static_cast<long long>(matched), static_cast<long long>(refused_runs),
      static_cast<long long>(dead_checks));
  EXPECT_GT(patterns, 2500);
  EXPECT_LT(too_complex, 30);
  EXPECT_GT(matched, cases / 4);
  EXPECT_EQ(completions, refused_runs);
}

// ---------------------------------------------------------------------------------------------

void expect_no_dead_ends(const Regex& re, std::string_view pattern) {
  for (int32_t s = 0; s < re.states(); ++s) {
    if (re.accepting(s)) continue;
    bool any = false;
    for (int b = 0; b < 256 && !any; ++b) any = re.next(s, static_cast<uint8_t>(b)) >= 0;
    ASSERT_TRUE(any) << pattern << ": state " << s << " is a dead end";
  }
}

TEST(Regex, NoDeadEnds) {
  for (const char* p :
       {"a*b|c", "(a|b)*abb", ".*x.*", "[^a]{3,5}", "\\d+(\\.\\d+)?", "x[^\\x00-\\U0010ffff]|y",
        "(ab|a)(bc|c)*", "\\w+@\\w+\\.(com|org)", "(.{0,3}\\n){2}", "[é-ü€😀]+", "", "a|"}) {
    const auto re = Regex::compile(p);
    expect_no_dead_ends(*re, p);
  }
}

// intersect: a text matches the product iff it fully matches both (std::regex is the oracle for
// each), the product has no dead end, and disjoint patterns give null.
TEST(Regex, IntersectIsBoth) {
  const char* const pats[] = {"[ab]*", "(ab)*", "a.{0,3}", "[^a]*b?", "(a|b){2,4}", ".*bb.*", "b*(ab|ba)*a?", ""};
  std::mt19937 rng(5);
  for (const char* pa : pats)
    for (const char* pb : pats) {
      const auto a = Regex::compile(pa), b = Regex::compile(pb);
      const auto both = Regex::intersect(*a, *b);
      const std::regex ra(pa), rb(pb);
      bool any = false;
      for (int i = 0; i < 400; ++i) {
        std::string text;
        for (int n = static_cast<int>(rng() % 7); n > 0; --n) text += "abc"[rng() % 3];
        const bool want = std::regex_match(text, ra) && std::regex_match(text, rb);
        any |= want;
        ASSERT_EQ(both && full_match(*both, text), want) << pa << " & " << pb << " on \"" << text << "\"";
      }
      if (both) expect_no_dead_ends(*both, std::string(pa) + " & " + pb);
      else EXPECT_FALSE(any) << pa << " & " << pb << ": null, but a text matches both";
    }
  EXPECT_EQ(Regex::intersect(*Regex::compile("a+"), *Regex::compile("b+")), nullptr);
  EXPECT_EQ(Regex::intersect(*Regex::compile("(aa)+"), *Regex::compile("a{3}")), nullptr);
  const auto six = Regex::intersect(*Regex::compile("(aa)+"), *Regex::compile("(aaa)+"));
  ASSERT_TRUE(six);
  EXPECT_TRUE(full_match(*six, "aaaaaa"));
  EXPECT_FALSE(full_match(*six, "aaaa"));
  EXPECT_FALSE(full_match(*six, "aaa"));
}

// (?i) and (?s), with what CPython 3.11's re does (each expectation checked there): ASCII
// letters in either case, and the non-ASCII letters Python joins to i, k and s; '.' and '\n'.
TEST(Regex, IgnoreCaseMatchesStdRegexIcase) {
  Gen gen(777);
  int64_t checked = 0;
  for (int iter = 0; iter < 1500; ++iter) {
    Pat pat;
    gen.hot.clear();
    const std::string pattern = gen.alternation(pat, 0);
    std::regex oracle;
    try {
      oracle = std::regex(pattern, std::regex::ECMAScript | std::regex::icase);
    } catch (const std::regex_error&) {
      continue;
    }
    std::shared_ptr<const Regex> re;
    try {
      re = Regex::compile("(?i)" + pattern);
    } catch (const dpa::Error&) {
      continue;  // non-ASCII under (?i), too complex, or matching nothing
    }
    bool ascii = true;
    for (char c : pattern) ascii = ascii && static_cast<uint8_t>(c) < 0x80;
    if (!ascii) continue;
    for (int i = 0; i < 12; ++i) {
      std::string t;
      if (!gen.sample(pat, t)) continue;
      bool plain = true;
      for (char& c : t) {
        plain = plain && static_cast<uint8_t>(c) < 0x80;
        if (gen.pick(2) && ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')) c ^= 0x20;
      }
      if (!plain) continue;
      ++checked;
      ASSERT_EQ(full_match(*re, t), std::regex_match(t, oracle)) << "(?i)" << pattern << " on \"" << t << "\"";
    }
  }
  EXPECT_GT(checked, 2000);
}

// ---------------------------------------------------------------------------------------------
// Hostile patterns: each compiles or throws, within the caps; time and peak heap are printed, the
// heap is asserted.

TEST(Regex, HostilePatternsAreBounded) {
  std::string cjk_class = "[";
  for (uint32_t cp = 0x4e00; cp < 0x4e00 + 2 * 2000; cp += 2)  // 2,000 separate code points
    cjk_class += static_cast<char>(0xe0 | cp >> 12),
        cjk_class += static_cast<char>(0x80 | ((cp >> 6) & 0x3f)),
        cjk_class += static_cast<char>(0x80 | (cp & 0x3f));
  cjk_class += "]";
  std::string words;
  for (int i = 0; words.size() + 12 < Regex::kMaxPattern; ++i)
    words += (i ? "|" : "") + std::to_string(i * 7919 % 100003) + "x";
  std::string alts;
  for (int i = 0; alts.size() + 12 < Regex::kMaxPattern; ++i) alts += "(a|b|c)*";
  const std::vector<std::string> patterns = {
      "(a|b)*a(a|b){14}",
      "(a|b)*a(a|b){20}",
      "(.*a){20}",
      "(.*a.*b.*c){50}",
      "(.*a){12}[^b]{1,50}",
      "\\w{1000}",
      "((a{1,100}){1,100}){1,100}",
      "(a{1,1000}){1,1000}",
      "[^a]{1000}",
      ".{1000}",
      "(.{1000}){5}",
      "(.{1000}){7}",
      "(.{0,1000}){7}",
      "((a?){1000}){100}",
      "((a*){1000}){100}",
      "(.*){1000}",
      "(a|aa|aaa|aaaa|aaaaa){1,1000}",
      "(\\w+\\s?){1,1000}",
      "[\\x00-\\U0010ffff]{1000}",
      "([^\\n]{0,100}\\n){0,100}",
      cjk_class + "{100}",
      cjk_class + "*",
      words,
      alts,
      std::string(Regex::kMaxPattern, 'a'),
      std::string(Regex::kMaxPattern / 2, '.'),
      std::string(Regex::kMaxPattern / 4, '.') + "{1000}",
      std::string(Regex::kMaxPattern / 2, '(') + std::string(Regex::kMaxPattern / 2, ')'),
      std::string(255, '(') + ".{1000}" + std::string(255, ')'),
  };
  double worst_ms = 0;
  int64_t worst_heap = 0;
  for (const std::string& p : patterns) {
    const int64_t heap0 = g_heap;
    g_heap_peak = heap0;
    const auto t0 = std::chrono::steady_clock::now();
    std::string outcome;
    try {
      const auto re = Regex::compile(p);
      outcome = "compiled, " + std::to_string(re->states()) + " states";
      expect_no_dead_ends(*re, p.substr(0, 40));
    } catch (const dpa::Error& e) {
      outcome = std::string("refused: ") + e.what();
    }
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    const int64_t heap = g_heap_peak - heap0;
    worst_ms = std::max(worst_ms, ms), worst_heap = std::max(worst_heap, heap);
    std::printf("hostile %-40.40s %8.1f ms %6.1f MB peak heap  %s\n", p.c_str(), ms, heap / 1048576.0,
                outcome.c_str());
    EXPECT_LT(heap, 64 << 20) << p.substr(0, 40);
  }
  std::printf("hostile: worst %.1f ms, %.1f MB\n", worst_ms, worst_heap / 1048576.0);
}

}  // namespace
