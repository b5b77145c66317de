// Grammar-constrained output (engine/grammar.h): the recognizer against an independent reference
// (grammar_reference.h: its own reader of the syntax and a memoized backtracking matcher) on a
// dozen grammars, over sampled strings of each grammar, their mutations and every short string
// of a small alphabet, at every byte prefix: a byte is taken exactly when some string of the
// grammar continues the text with it, and complete() exactly when the text is one. Token masks
// against feeding each token alone; the compile errors with what and where; the limits (size,
// depth, parses at once, work) and what the engine does at them (OutputConstraint::failed);
// the arena's compaction; the intake's wire format. With DPA_TEST_DEEPSEEK_TOKENIZER set, masks of
// a JSON-like grammar on DeepSeek-V3's vocabulary, checked and timed.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "engine/grammar.h"
#include "engine/output_constraint.h"
#include "engine/request.h"
#include "engine/structured_output.h"
#include "engine/wire.h"
#include "grammar_reference.h"
#include "text/tokenizer.h"

namespace {
using dpa::engine::Grammar;
using dpa::engine::GrammarPrefix;
using dpa::engine::mask_allows;
using dpa::engine::TokenTrie;
using dpa::engine::test::judge;
using dpa::engine::test::RefGrammar;
using dpa::engine::test::RefNode;
using dpa::engine::test::utf8;

std::string compile_error(std::string_view text) {
  try {
    Grammar::compile(text);
  } catch (const dpa::Error& e) {
    return e.what();
  }
  return "";
}

// ---------------------------------------------------------------------------------------------
// The grammars, each with an alphabet for its enumerated strings.

struct Case {
  const char* name;
  const char* text;
  std::vector<std::string> alphabet;  // characters (UTF-8) for the exhaustive short strings
  int enum_len;
};

const Case kCases[] = {
    {"json",
     R"g(root   ::= ws value ws
value  ::= object | array | string | number | "true" | "false" | "null"
object ::= "{" ws ( member ( ws "," ws member )* )? ws "}"
member ::= string ws ":" ws value
array  ::= "[" ws ( value ( ws "," ws value )* )? ws "]"
string ::= "\"" ( [^"\\\x00-\x1f] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} ) )* "\""
number ::= "-"? ( "0" | [1-9] [0-9]* ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )?
ws     ::= [ \t\n]*   # whitespace runs: ambiguous where two meet
)g",
     {"{", "}", "[", "]", "\"", ":", ",", " ", "1", "a"},
     5},
    {"arithmetic",
     R"g(root ::= expr
expr ::= term (("+" | "-") term)*
term ::= factor (("*" | "/") factor)*
factor ::= number | "(" expr ")" | "-" factor
number ::= [0-9]+ ("." [0-9]+)?
)g",
     {"1", "+", "*", "(", ")", "-", "."},
     6},
    {"lists", "root ::= (\"- \" item \"\\n\")+\nitem ::= [^\\n]+\n", {"-", " ", "x", "\n"}, 7},
    {"unicode",
     R"g(root ::= [α-ω]+ " " [^a-z\u00e9]{2,3} ("é" | "日本" | [\U0001F600-\U0001F64F])*)g",
     {"α", "ω", " ", "x", "é", "日", "本", "😀", "A"},
     4},
    {"bounds",
     R"g(root ::= "a"{2,4} "b"{3} ("c" "d"?){0,2} "e"{1,} "f"{0,1})g",
     {"a", "b", "c", "d", "e", "f"},
     8},
    {"ambiguous", "root ::= x x\nx ::= \"a\"* | \"ab\" | \"b\"*\n", {"a", "b"}, 9},
    {"brackets", "root ::= p*\np ::= \"(\" p* \")\" | \"[\" p* \"]\"\n", {"(", ")", "[", "]"}, 8},
    {"palindromes", "root ::= \"a\" root \"a\" | \"b\" root \"b\" | \"a\" | \"b\" | \"\"\n", {"a", "b"}, 10},
    {"anbn", "root ::=\n    \"a\" root \"b\"\n  | \"\"  # n a's then n b's\n", {"a", "b"}, 11},
    {"any", R"g(root ::= "<" [^>] [^>] ">" | "x" [\x00-\U0010FFFF]* "!")g", {"<", ">", "x", "!", "é", "\n"}, 5},
    {"nullable-loops",
     R"g(root ::= (("a"?)* "b"?)* "c" | ( )+ "d" | ("" | "e")* "f")g",
     {"a", "b", "c", "d", "e", "f"},
     6},
    {"escapes",
     R"g(root ::= "\x41\u00e9\t" [\x00-\x1f\\\]\-]+ "\U0001F600" [^\x00-\U0010fffe]?)g",
     {"A", "é", "\t", "\\", "]", "-", "\n", "😀", "\xf4\x8f\xbf\xbf"},
     5},
    {"keywords",
     R"g(root ::= stmt (";" stmt)*
stmt ::= "let" " "+ name " "* "=" " "* value | "print" " "+ value | name "++"
name ::= [a-z_] [a-z0-9_]{0,3}
value ::= name | [0-9]{1,3}
)g",
     {"l", "e", "t", " ", "=", "x", "1", ";", "+"},
     6},
};

// A random string of the grammar (the reference tree's), kept short: past `budget` the cheapest
// alternative and the fewest repetitions are taken.
class Sampler {
 public:
  Sampler(const RefGrammar& g, uint32_t seed) : g_(g), rng_(seed) {
    // The height of the shortest derivation of each node (fixed point over the rules).
    const auto& nodes = g.nodes();
    height_.assign(nodes.size(), 1 << 20);
    for (bool changed = true; changed;) {
      changed = false;
      for (std::size_t i = 0; i < nodes.size(); ++i) {
        const RefNode& n = nodes[i];
        int h = 1 << 20;
        switch (n.kind) {
          case RefNode::kLit:
          case RefNode::kClass:
            h = 0;
            break;
          case RefNode::kRef:
            h = std::min(1 << 20, height_[static_cast<std::size_t>(g.body(n.rule))] + 1);
            break;
          case RefNode::kSeq:
            h = 0;
            for (int k : n.kids) h = std::max(h, height_[static_cast<std::size_t>(k)]);
            break;
          case RefNode::kAlt:
            for (int k : n.kids) h = std::min(h, height_[static_cast<std::size_t>(k)]);
            break;
          case RefNode::kRep:
            h = n.min == 0 ? 0 : height_[static_cast<std::size_t>(n.kids[0])];
            break;
        }
        if (h < height_[i]) height_[i] = h, changed = true;
      }
    }
  }
  std::string sample(int budget) {
    std::string out;
    gen(g_.body(g_.root()), budget, out);
    return out;
  }

 private:
  uint32_t pick_char(const RefNode& n) {
    for (int tries = 0; tries < 1000; ++tries) {
      uint32_t c;
      if (n.negated || rng_() % 4 == 0) {
        c = rng_() % 3 == 0 ? static_cast<uint32_t>(rng_() % 0x110000)
                            : static_cast<uint32_t>(rng_() % 0x300);
      } else {
        const auto& [lo, hi] = n.ranges[rng_() % n.ranges.size()];
        c = lo + static_cast<uint32_t>(rng_() % (hi - lo + 1));
      }
      if (!(c >= 0xd800 && c <= 0xdfff) && n.has(c)) return c;
    }
    // A class too small for random tries (a negated one that leaves a few code points).
    for (const auto& [lo, hi] : n.ranges)
      for (uint32_t c : {lo ? lo - 1 : 0, hi + 1, lo, hi, 0x10ffffu})
        if (c <= 0x10ffff && !(c >= 0xd800 && c <= 0xdfff) && n.has(c)) return c;
    return 'x';
  }
  void gen(int node, int budget, std::string& out) {
    const RefNode& n = g_.nodes()[static_cast<std::size_t>(node)];
    switch (n.kind) {
      case RefNode::kLit:
        for (uint32_t c : n.lit) out += utf8(c);
        break;
      case RefNode::kClass:
        out += utf8(pick_char(n));
        break;
      case RefNode::kRef:
        gen(g_.body(n.rule), budget - 1, out);
        break;
      case RefNode::kSeq:
        for (int k : n.kids) gen(k, budget, out);
        break;
      case RefNode::kAlt: {
        std::vector<int> ok;
        for (int k : n.kids)
          if (height_[static_cast<std::size_t>(k)] < budget) ok.push_back(k);
        if (ok.empty()) {
          ok = {n.kids[0]};
          for (int k : n.kids)
            if (height_[static_cast<std::size_t>(k)] < height_[static_cast<std::size_t>(ok[0])]) ok[0] = k;
        }
        gen(ok[rng_() % ok.size()], budget, out);
        break;
      }
      case RefNode::kRep: {
        int count = n.min;
        if (budget > 0) {
          const int most = n.max < 0 ? n.min + 3 : std::min(n.max, n.min + 4);
          count = n.min + static_cast<int>(rng_() % static_cast<uint32_t>(most - n.min + 1));
        }
        for (int k = 0; k < count; ++k) gen(n.kids[0], budget, out);
        break;
      }
    }
  }
  const RefGrammar& g_;
  std::mt19937 rng_;
  std::vector<int> height_;
};

// The recognizer's verdicts at every byte prefix of `text` against the reference's: returns the
// number of disagreements (and reports the first few).
int compare(const Grammar& g, const RefGrammar& ref, const std::string& text, const char* name,
            int* reported) {
  int wrong = 0;
  GrammarPrefix p(g);
  for (std::size_t k = 0;; ++k) {
    const auto want = judge(ref, std::string_view(text).substr(0, k));
    if (!want.viable || p.complete() != want.member) {
      ++wrong;
      if ((*reported)++ < 8)
        ADD_FAILURE() << name << ": prefix " << k << " of \"" << text << "\": complete " << p.complete()
                      << " want " << want.member << " (viable " << want.viable << ")";
      return wrong;
    }
    if (k == text.size()) return wrong;
    const GrammarPrefix before = p;
    const bool took = p.feed(static_cast<uint8_t>(text[k]));
    const bool should = judge(ref, std::string_view(text).substr(0, k + 1)).viable;
    if (took != should) {
      ++wrong;
      if ((*reported)++ < 8)
        ADD_FAILURE() << name << ": byte " << k << " (0x" << std::hex << (static_cast<int>(text[k]) & 0xff)
                      << std::dec << ") of \"" << text << "\": taken " << took << " want " << should;
      return wrong;
    }
    if (!took) {  // refused: the state is as it was
      if (!p.same_as(before) || p.complete() != before.complete())
        ++wrong, ADD_FAILURE() << name << ": a refused byte changed the state";
      return wrong;
    }
  }
}

TEST(GrammarRecognizer, AgreesWithTheReferenceOnEveryPrefix) {
  std::mt19937 rng(7);
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    const auto g = Grammar::compile(c.text);
    const RefGrammar ref(c.text);
    Sampler sampler(ref, 11);
    std::vector<std::string> texts;
    // Sampled strings of the grammar, and mutations of them.
    std::vector<std::string> alpha = c.alphabet;
    for (int i = 0; i < 150; ++i) {
      std::string s = sampler.sample(4 + i % 5);
      if (s.size() > 80) continue;
      texts.push_back(s);
      for (int m = 0; m < 3; ++m) {
        std::string t = s;
        const std::size_t at = t.empty() ? 0 : rng() % (t.size() + 1);
        switch (rng() % 4) {
          case 0:
            t.insert(at, alpha[rng() % alpha.size()]);
            break;
          case 1:
            if (at < t.size()) t.erase(at, 1);
            break;  // may cut a character: invalid UTF-8
          case 2:
            t.insert(at, 1, static_cast<char>(rng() % 256));
            break;
          default:
            if (at < t.size()) t[at] = alpha[rng() % alpha.size()][0];
            break;
        }
        texts.push_back(t);
      }
    }
    // Every string of the alphabet up to enum_len characters.
    std::vector<std::string> level = {""};
    for (int len = 0; len < c.enum_len; ++len) {
      std::vector<std::string> next;
      for (const auto& s : level)
        for (const auto& a : c.alphabet) next.push_back(s + a);
      texts.insert(texts.end(), next.begin(), next.end());
      if (next.size() > 3000) break;
      level = std::move(next);
    }
    int wrong = 0, reported = 0, members = 0;
    for (const auto& t : texts) {
      wrong += compare(*g, ref, t, c.name, &reported);
      members += judge(ref, t).member;
    }
    EXPECT_EQ(wrong, 0) << texts.size() << " texts";
    EXPECT_GT(members, 20) << "the texts should hold strings of the grammar";
  }
}

// The sampled strings are members, and the recognizer completes them (a sanity check of the
// sampler and the reference against each other).
TEST(GrammarRecognizer, SampledStringsAreComplete) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    const auto g = Grammar::compile(c.text);
    const RefGrammar ref(c.text);
    Sampler sampler(ref, 3);
    for (int i = 0; i < 50; ++i) {
      const std::string s = sampler.sample(5);
      EXPECT_TRUE(judge(ref, s).member) << s;
      GrammarPrefix p(*g);
      EXPECT_TRUE(p.feed(s) && p.complete()) << s;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Token masks: the walk's allowed set is what feeding each token alone gives, in the states along
// sampled strings.

std::vector<std::string> vocabulary(const std::vector<std::string>& texts, uint32_t seed) {
  std::mt19937 rng(seed);
  std::set<std::string> v;
  for (int b = 1; b < 256; ++b) v.insert(std::string(1, static_cast<char>(b)));
  for (const auto& t : texts)
    for (int k = 0; k < 6 && !t.empty(); ++k) {
      const std::size_t a = rng() % t.size(), n = 1 + rng() % std::min<std::size_t>(8, t.size() - a);
      v.insert(t.substr(a, n));  // substrings: some cut characters
    }
  std::vector<std::string> out(v.begin(), v.end());
  out.push_back("");      // a token with no bytes
  out.push_back(out[3]);  // two ids with the same bytes
  return out;
}

TEST(GrammarRecognizer, MasksAreWhatEachTokenAloneFeeds) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    const auto g = Grammar::compile(c.text);
    const RefGrammar ref(c.text);
    Sampler sampler(ref, 5);
    std::vector<std::string> texts;
    for (int i = 0; i < 40; ++i) texts.push_back(sampler.sample(5));
    const auto words = vocabulary(texts, 9);
    const TokenTrie trie(words);
    std::vector<uint32_t> mask;
    int states = 0;
    for (const auto& t : texts) {
      GrammarPrefix p(*g);
      for (std::size_t k = 0;;) {
        const auto walk = trie.allowed(p, mask);
        EXPECT_FALSE(walk.over_budget);
        for (std::size_t id = 0; id < words.size(); ++id) {
          GrammarPrefix q = p;
          const bool want = !words[id].empty() && q.feed(words[id]);
          if (mask_allows(mask, id) != want) {
            ADD_FAILURE() << "state after \"" << t.substr(0, k) << "\", token \"" << words[id] << "\": mask "
                          << !want;
            break;
          }
        }
        ++states;
        if (k >= t.size()) break;
        const std::size_t step =
            std::min<std::size_t>(1 + k % 3, t.size() - k);  // walks from mid-character states too
        ASSERT_TRUE(p.feed(std::string_view(t).substr(k, step)));
        k += step;
      }
    }
    EXPECT_GT(states, 40);
  }
}

// OutputConstraint keeps a grammar row's state across steps; its masks equal a fresh walk's, the
// grammar's memo hands a second request the masks without a walk, and a state's repeat (a
// string's characters) keeps the mask.
TEST(GrammarRecognizer, OutputConstraintMasksAndMemo) {
  const auto g = Grammar::compile(kCases[0].text);
  const std::vector<std::string> vocab = {"{", "}", "\"", "a",     "b", ":",  "1",  "2",  ",",
                                          " ", "[", "]",  "\"a\"", "",  "12", "ab", "\":"};
  const TokenTrie trie(vocab);
  dpa::engine::Request r1, r2;
  r1.params.structure = r2.params.structure = dpa::engine::Structure::grammar;
  r1.grammar = r2.grammar = g;
  const std::vector<int32_t> out = {0,  2,  3, 15, 15, 3, 16, 9,
                                    10, 14, 8, 6,  11, 9, 1};  // {"aababa": [12,1] }
  auto run = [&](const dpa::engine::Request& req) {
    dpa::engine::OutputConstraint kept;
    std::vector<uint32_t> a, b;
    for (std::size_t n = 0; n <= out.size(); ++n) {
      const bool complete = kept.mask(trie, req, std::span<const int32_t>(out.data(), n), a);
      GrammarPrefix p(*g);
      for (std::size_t i = 0; i < n; ++i) ASSERT_TRUE(p.feed(vocab[static_cast<std::size_t>(out[i])]));
      trie.allowed(p, b);
      EXPECT_EQ(a, b) << n;
      EXPECT_EQ(complete, p.complete()) << n;
      EXPECT_FALSE(kept.failed());
      if (n < out.size()) {
        EXPECT_TRUE(mask_allows(a, static_cast<std::size_t>(out[n]))) << n;
      }
    }
    EXPECT_TRUE(kept.mask(trie, req, out, a));
  };
  run(r1);
  const std::size_t kept = g->masks().size();
  EXPECT_GT(kept, 5u);
  EXPECT_LT(kept, out.size() + 1) << "the string's loop state should repeat";
  run(r2);
  EXPECT_EQ(g->masks().size(), kept) << "the second request walked new states";
}

// ---------------------------------------------------------------------------------------------
// Compile errors: each says what and where.

TEST(GrammarCompile, ErrorsSayWhatAndWhere) {
  const std::pair<std::string, std::string> cases[] = {
      {"", "no 'root' rule"},
      {"value ::= \"a\"", "no 'root' rule"},
      {"root ::= foo", "line 1, column 10: rule 'foo' is not defined"},
      {"root ::= a\na ::= b | \"x\"\n  b ::= c", "line 3, column 9: rule 'c' is not defined"},
      {"root ::= \"abc", "line 1, column 10: the string literal is not closed"},
      {"root ::= [a-", "line 1, column 10: the character class is not closed"},
      {"root ::= [z-a]", "line 1, column 11: the range U+007A-U+0061 is reversed"},
      {"root ::= \"\\q\"", "line 1, column 11: unknown escape '\\q'"},
      {"root ::= \"\\x4\"", "line 1, column 11: the escape needs 2 hex digits"},
      {"root ::= \"\\uD800\"", "line 1, column 11: U+D800 is a surrogate"},
      {"root ::= \"\\U00110000\"", "line 1, column 11: U+110000 is past U+10FFFF"},
      {"root ::= (\"a\" | \"b\"", "line 1, column 20: expected ')' to close the '(' at line 1, column 10"},
      {"root ::= \"a\")", "line 1, column 13: ')' closes no '('"},
      {"root ::= \"a\"{3,2}", "line 1, column 13: {3,2}: the least count is above the greatest"},
      {"root ::= \"a\"{1001}", "line 1, column 13: repetition counts are at most 1000"},
      {"root ::= \"a\"{x}", "line 1, column 14: expected a count after the '{'"},
      {"root ::= \"a\"{2", "line 1, column 15: expected '}' to close the '{' at line 1, column 13"},
      {"root ::= a\na ::= \"x\"\na ::= \"y\"",
       "line 3, column 1: rule 'a' is already defined at line 2, column 1"},
      {"root := \"a\"", "line 1, column 6: expected '::=' after the rule name 'root'"},
      {"root ::= @", "line 1, column 10: unexpected '@'"},
      {"root ::= \"a\"\n| \"b\"\nx y ::= \"c\"",
       "line 3, column 1: rule 'x' is not defined"},  // x goes on root's line
      {"root ::= 'a'", "line 1, column 10: unexpected '''"},
      {"root ::= [^\\x00-\\U0010FFFF]", "line 1, column 10: the character class matches no character"},
      {"root ::= [\\uD800-\\uDFFF]", "U+D800 is a surrogate"},
      {"root ::= \"<\" . \">\"", "line 1, column 14: '.' is not taken"},
      {"root ::= \"\xff\"", "line 1, column 11: the grammar is not valid UTF-8"},
      {"root ::= expr\nexpr ::= expr \"+\" \"1\" | \"1\"",
       "rule 'expr' is left-recursive: it can reach itself"},
      {"root ::= a\na ::= b \"x\" | \"y\"\nb ::= \"\" | a", "is left-recursive"},
      {"root ::= x? root \"!\" | \"a\"\nx ::= \"x\"", "rule 'root' is left-recursive"},
      {"root ::= x\nx ::= \"a\" x", "rule 'x' matches no string"},
      {"root ::= \"a\" root", "rule 'root' matches no string"},
      {"root ::= "
       "(((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((("
       "((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((("
       "(((("
       "((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((\"a\"",
       "groups nest more than 256 deep"},
  };
  for (const auto& [text, want] : cases) {
    const std::string got = compile_error(text);
    EXPECT_NE(got.find(want), std::string::npos)
        << "grammar: " << text << "\n  got: " << got << "\n  want: " << want;
  }
  // Accepted forms: GBNF's newlines (after |, in parentheses, after ::=), comments, empty
  // alternatives, names with - and _, and unused rules.
  for (const char* ok : {"root ::=\n  \"a\"\n  | \"b\" # c\n", "root ::= ( \"a\"\n \"b\" )\nx-y_z ::= \"q\"",
                         "root ::= | \"a\"", "root ::= \"\"", "root ::= ()", "root::=\"a\"",
                         "root ::= [\\]\\\\\\-^]+ [-a] [a-] \".\"*"}) {
    EXPECT_EQ(compile_error(ok), "") << ok;
  }
}

TEST(GrammarCompile, SizeLimits) {
  EXPECT_NE(compile_error("root ::= \"" + std::string(Grammar::kMaxText, 'a') + "\"").find("at most 65536"),
            std::string::npos);
  std::string wide = "root ::= ";
  for (int i = 0; i < 300; ++i) wide += "\"ab\"{0,1000} ";
  EXPECT_NE(compile_error(wide).find("expanded"), std::string::npos) << compile_error(wide);
  // The start's parses: 3,000 alternatives at once are refused, 1,000 are not.
  auto words = [](int n) {
    std::string s = "root ::= ";
    for (int i = 0; i < n; ++i) s += (i ? " | \"w" : "\"w") + std::to_string(i) + "\"";
    return s;
  };
  EXPECT_EQ(compile_error(words(1000)), "");
  EXPECT_NE(compile_error(words(3000)).find("start has"), std::string::npos);
  // A first character 1,100 rules deep (each call followed by more): past the depth cap at once.
  std::string deep = "root ::= r0 \"x\"\n";
  for (int i = 0; i < 1100; ++i) deep += "r" + std::to_string(i) + " ::= r" + std::to_string(i + 1) + " \"x\"\n";
  deep += "r1100 ::= \"a\"\n";
  EXPECT_NE(compile_error(deep).find("more than 1024 rules deep"), std::string::npos) << compile_error(deep);
  // Counted repetitions of nullable groups, nested: each way of spreading the empty strings is a
  // parse of its own at the start; refused at once, not after a million of them.
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_NE(compile_error("root ::= ((((\"a\"{0,1000}){0,100}){0,100}){0,100})").find("parses at once"),
            std::string::npos);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0);
}

// ---------------------------------------------------------------------------------------------
// The recognizer's limits, and what the engine's OutputConstraint makes of them.

TEST(GrammarLimits, DepthRefusesDeeperNesting) {
  const auto g = Grammar::compile("root ::= \"(\" root \")\" | \"x\"");
  GrammarPrefix p(*g);
  int open = 0;
  while (open < 5000 && p.feed('(')) ++open;
  EXPECT_EQ(open, Grammar::kMaxDepth);
  EXPECT_TRUE(p.feed('x'));
  for (int k = 0; k < open; ++k) ASSERT_TRUE(p.feed(')'));
  EXPECT_TRUE(p.complete());
}

TEST(GrammarLimits, ExponentialAmbiguityIsCappedNotFatal) {
  // After n a's, 2^n stacks of pending b's and c's: an 'a' past the cap is refused, the rest
  // goes on.
  const auto g = Grammar::compile("root ::= \"a\" root \"b\" | \"a\" root \"c\" | \"\"");
  GrammarPrefix p(*g);
  int n = 0;
  while (n < 64 && p.feed('a')) ++n;
  EXPECT_GT(n, 6);
  EXPECT_LT(n, 16);
  EXPECT_LE(p.n_items(), Grammar::kMaxItems);
  for (int k = 0; k < n; ++k) ASSERT_TRUE(p.feed(k % 2 ? 'b' : 'c'));
  EXPECT_TRUE(p.complete());
}

TEST(GrammarLimits, DeadEndEndsTheRequest) {
  // At the depth cap neither '(' nor '<' can be followed ('<' calls a rule that is not last):
  // no token, an incomplete text: the constraint fails and the engine ends the request.
  const auto g = Grammar::compile("root ::= \"(\" root \")\" | \"<\" end \">\"\nend ::= \"x\"");
  const std::vector<std::string> vocab = {"(", ")", "<", ">", "x", "(((("};
  const TokenTrie trie(vocab);
  dpa::engine::Request req;
  req.params.structure = dpa::engine::Structure::grammar;
  req.grammar = g;
  dpa::engine::OutputConstraint c;
  std::vector<uint32_t> mask;
  std::vector<int32_t> out;
  EXPECT_FALSE(c.mask(trie, req, out, mask));
  EXPECT_TRUE(mask_allows(mask, 0) && mask_allows(mask, 2) && mask_allows(mask, 5));
  out.assign(Grammar::kMaxDepth - 1, 0);
  c.mask(trie, req, out, mask);
  EXPECT_FALSE(c.failed());
  EXPECT_TRUE(mask_allows(mask, 0) && !mask_allows(mask, 5)) << "one more '(' fits, four do not";
  out.push_back(0);
  EXPECT_FALSE(c.mask(trie, req, out, mask));
  EXPECT_TRUE(c.failed());
  EXPECT_TRUE(std::none_of(mask.begin(), mask.end(), [](uint32_t w) { return w; }));
}

TEST(GrammarLimits, WorkCapStopsTheWalk) {
  // 400 alternatives that each count up to 60 free characters: every state on the way is new and
  // holds hundreds of parses, and long tokens of varied bytes walk deep: the walk passes the cap.
  std::string text = "root ::= ";
  for (int i = 0; i < 400; ++i)
    text += (i ? " | " : "") + std::string("[^!]{0,60} \"!") + std::to_string(i) + "\"";
  const auto g = Grammar::compile(text);
  std::mt19937 rng(1);
  std::vector<std::string> vocab;
  for (int i = 0; i < 4000; ++i) {
    std::string w;
    for (int k = 0; k < 60; ++k) w += static_cast<char>('A' + rng() % 58);
    vocab.push_back(w);
  }
  const TokenTrie trie(vocab);
  GrammarPrefix p(*g);
  std::vector<uint32_t> mask;
  const auto t0 = std::chrono::steady_clock::now();
  const auto walk = trie.allowed(p, mask);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(walk.over_budget);
  EXPECT_LT(s, 10.0) << "the cap should bound the walk's time (~0.2 s; sanitizers slow it)";
  dpa::engine::Request req;
  req.params.structure = dpa::engine::Structure::grammar;
  req.grammar = g;
  dpa::engine::OutputConstraint c;
  c.mask(trie, req, {}, mask);
  EXPECT_TRUE(c.failed());
}

// A long output leaves frames no parse holds; compaction moves the live ones to a fresh arena and
// the recognizer goes on exactly as one that never compacted.
TEST(GrammarLimits, CompactionKeepsTheState) {
  const auto g = Grammar::compile("root ::= p*\np ::= \"(\" p* \")\" | \"[\" p* \"]\"");
  std::mt19937 rng(3);
  std::string text, open;
  for (int i = 0; i < 1200000; ++i) {
    if (!open.empty() && (open.size() > 24 || rng() % 2)) {
      text += open.back() == '(' ? ')' : ']';
      open.pop_back();
    } else {
      open += rng() % 2 ? '(' : '[';
      text += open.back();
    }
  }
  GrammarPrefix plain(*g), compacted(*g);
  std::size_t most = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    ASSERT_TRUE(plain.feed(static_cast<uint8_t>(text[i])));
    compacted.compact_if_sparse();
    ASSERT_TRUE(compacted.feed(static_cast<uint8_t>(text[i])));
    ASSERT_EQ(plain.complete(), compacted.complete());
    most = std::max(most, compacted.arena_frames());
    if (i % 99991 == 0) {
      ASSERT_EQ(plain.key(), compacted.key()) << i;
      GrammarPrefix a = plain, b = compacted;
      for (uint8_t c : {'(', ')', '[', ']', 'x'})
        ASSERT_EQ(GrammarPrefix(a).feed(c), GrammarPrefix(b).feed(c));
    }
  }
  EXPECT_GT(plain.arena_frames(), 2 * most) << "compaction kept the arena small";
  EXPECT_EQ(plain.complete(), open.empty());
}

// The intake carries the grammar's text (each rank compiles it at admission).
TEST(GrammarWire, IntakeRoundTrip) {
  dpa::engine::Request r;
  r.id = 5;
  r.prompt = {1, 2};
  r.params.structure = dpa::engine::Structure::grammar;
  r.params.grammar = "root ::= \"a\"+ # é\n";
  std::vector<dpa::engine::Request> rs;
  std::vector<uint64_t> ab;
  bool sd = false;
  dpa::engine::decode_intake(dpa::engine::encode_intake({r}, {}, false), &rs, &ab, &sd);
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].params.structure, dpa::engine::Structure::grammar);
  EXPECT_EQ(rs[0].params.grammar, r.params.grammar);
  EXPECT_EQ(Grammar::compile_cached(r.params.grammar), Grammar::compile_cached(r.params.grammar))
      << "cached by text";
  EXPECT_THROW(Grammar::compile_cached("root ::= x"), dpa::Error);
  EXPECT_THROW(Grammar::compile_cached("root ::= x"), dpa::Error) << "a refusal is kept and thrown again";
}

// ---------------------------------------------------------------------------------------------
// DeepSeek-V3's vocabulary (when the tokenizer is given): a JSON-like grammar's masks in the
// states an answer spends its tokens in, checked against feeding each token alone, and timed.

TEST(GrammarDeepSeek, JsonMasksOnTheRealVocabulary) {
  const char* path = std::getenv("DPA_TEST_DEEPSEEK_TOKENIZER");
  if (!path || !*path) GTEST_SKIP() << "DPA_TEST_DEEPSEEK_TOKENIZER is not set";
  const auto tok = dpa::text::Tokenizer::from_file(path);
  std::vector<std::string> bytes(static_cast<std::size_t>(tok->vocab_size()));
  for (std::size_t id = 0; id < bytes.size(); ++id) {
    const int32_t one[1] = {static_cast<int32_t>(id)};
    if (!tok->is_special(one[0])) bytes[id] = tok->decode(one, false);
  }
  const TokenTrie trie(bytes);
  const auto g = Grammar::compile(kCases[0].text);
  const char* const states[] = {"", "{", "{\"name\": \"Ada Lovelace, the first pro", "{\"year\": 18",
                                "{\"tags\": [\"math\", "};
  std::vector<uint32_t> mask;
  for (const char* s : states) {
    GrammarPrefix p(*g);
    ASSERT_TRUE(p.feed(std::string_view(s)));
    int64_t allowed = 0;
    double best = 1e9;
    for (int rep = 0; rep < 5; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      const auto walk = trie.allowed(p, mask);
      best = std::min(
          best, std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
      ASSERT_FALSE(walk.over_budget);
    }
    for (std::size_t id = 0; id < bytes.size(); ++id) {
      GrammarPrefix q = p;
      const bool want = !bytes[id].empty() && q.feed(bytes[id]);
      ASSERT_EQ(mask_allows(mask, id), want) << "state \"" << s << "\", token " << id;
      allowed += want;
    }
    std::printf("grammar mask walk, JSON-like grammar, state \"%s\": %lld tokens allowed, %.0f us\n", s,
                static_cast<long long>(allowed), best);
  }
}

}  // namespace
