// The recognizers of structured output. JSON against Boost.JSON's parser (an independent one):
// whole texts it completes parse as objects, texts Boost.JSON parses as objects it completes,
// every prefix of a valid text is taken. Choices against the list itself. The token trie's
// allowed set against feeding each token alone, in both.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <algorithm>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "engine/json_schema.h"
#include "engine/output_constraint.h"
#include "engine/regex.h"
#include "engine/structured_output.h"

namespace {
using dpa::engine::ChoicePrefix;
using dpa::engine::JsonPrefix;
using dpa::engine::mask_allows;
using dpa::engine::TokenTrie;

// The bytes of s it takes before the first it refuses, and whether it took them all and closed.
struct Fed {
  std::size_t taken = 0;
  bool complete = false;
};
Fed feed_all(std::string_view s) {
  JsonPrefix p;
  Fed f;
  for (char c : s) {
    if (!p.feed(static_cast<uint8_t>(c))) return f;
    ++f.taken;
  }
  f.complete = p.complete();
  return f;
}

bool boost_object(std::string_view s, bool* number_overflow = nullptr) {
  boost::system::error_code ec;
  boost::json::parse_options opt;
  opt.max_depth = JsonPrefix::kMaxDepth;
  boost::json::value v = boost::json::parse(s, ec, {}, opt);
  if (number_overflow) *number_overflow = ec == boost::json::error::exponent_overflow;
  return !ec && v.is_object();
}

const char* const kValid[] = {
    "{}",
    " \n{ }\t",
    R"({"a": [1, -0.5e+3, 0, 10E-2, true, false, null, "x\u00e9\n\"\\\/\b\f\r\t"], "b": {"c": {}, "d": []}})",
    R"({"k":"\ud83d\ude00 \uD83D\uDE00"})",
    "{\"utf8\":\"\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xef\xbf\xbf \xf4\x8f\xbf\xbf\"}",
    R"({"n":[[[[]]],{"":""}],"m":-0})",
};

TEST(JsonPrefix, TakesValidObjectsAndEveryPrefix) {
  for (std::string s : kValid) {
    while (!s.empty() && (s.back() == '\t' || s.back() == ' ')) s.pop_back();  // nothing may follow the object
    ASSERT_TRUE(boost_object(s)) << s;
    JsonPrefix p;
    for (std::size_t i = 0; i < s.size(); ++i) {
      EXPECT_FALSE(p.complete()) << s << " at " << i;
      ASSERT_TRUE(p.feed(static_cast<uint8_t>(s[i]))) << s << " refused at " << i;
    }
    EXPECT_TRUE(p.complete()) << s;
    for (int c : {' ', '\n', '}', ',', 'a'}) EXPECT_FALSE(p.feed(static_cast<uint8_t>(c))) << s;
  }
}

TEST(JsonPrefix, RefusesAtTheFirstBadByte) {
  struct Case {
    std::string text;
    std::size_t taken;  // bytes taken before the refusal
  };
  const Case cases[] = {
      {"[]", 0},          {"\"x\"", 0},        {"{\"a\":01}", 6},     {"{\"a\":1.}", 7},
      {"{\"a\":.5}", 5},  {"{\"a\":-}", 6},    {"{a:1}", 1},          {"{\"a\":1,}", 7},
      {"{\"a\" 1}", 5},   {"{\"a\":tru e}", 8}, {"{\"a\":\"\x01\"}", 6}, {"{\"a\":\"\\q\"}", 7},
      {R"({"a":"\ud800"})", 12}, {R"({"a":"\udc00"})", 9},  {R"({"a":"\ud800\u0041"})", 14},
      {"{\"a\":\"\xc0\x80\"}", 6}, {"{\"a\":\"\xed\xa0\x80\"}", 7}, {"{\"a\":\"\xf4\x90\x80\x80\"}", 7},
      {"{\"a\":\"\xe2\x82\"}", 8}, {"{\"a\":1]", 6},  {"{\"a\":[1}", 7},     {"{}}", 2},
      {"{\"a\":1e}", 7},  {"{\"a\":1e+}", 8},  {"{\"a\":nul}", 8},    {"{\"a\":--1}", 6},
  };
  for (const Case& c : cases) {
    const Fed f = feed_all(c.text);
    EXPECT_EQ(f.taken, c.taken) << c.text;
    EXPECT_FALSE(f.complete) << c.text;
    EXPECT_FALSE(boost_object(c.text)) << c.text;
  }
}

TEST(JsonPrefix, RefusedBytesLeaveTheStateAsItWas) {
  JsonPrefix p;
  ASSERT_TRUE(p.feed(std::string_view("{\"a\":12")));
  EXPECT_FALSE(p.feed(std::string_view("3x")));  // '3' taken, then 'x': all of it undone
  EXPECT_FALSE(p.feed(static_cast<uint8_t>(']')));
  ASSERT_TRUE(p.feed(std::string_view("4}")));
  EXPECT_TRUE(p.complete());
}

TEST(JsonPrefix, NestingStopsAtTheLimit) {
  JsonPrefix p;
  ASSERT_TRUE(p.feed(static_cast<uint8_t>('{')));
  ASSERT_TRUE(p.feed(std::string_view("\"a\":")));
  for (std::size_t d = 1; d < JsonPrefix::kMaxDepth; ++d) ASSERT_TRUE(p.feed(static_cast<uint8_t>('['))) << d;
  EXPECT_FALSE(p.feed(static_cast<uint8_t>('[')));
  EXPECT_FALSE(p.feed(static_cast<uint8_t>('{')));
  EXPECT_TRUE(p.feed(static_cast<uint8_t>('1')));
}

TEST(JsonPrefix, WhitespaceRunsAreCut) {
  const std::string run(JsonPrefix::kMaxWhitespace, ' ');
  JsonPrefix p;
  ASSERT_TRUE(p.feed(std::string_view(run)));
  EXPECT_FALSE(p.feed(static_cast<uint8_t>('\n')));
  ASSERT_TRUE(p.feed(std::string_view("{\"a\":" + run)));  // '{' ended the run
  EXPECT_FALSE(p.feed(static_cast<uint8_t>(' ')));
  ASSERT_TRUE(p.feed(std::string_view("\"" + run + run + "\"" + run + "}")));  // spaces in strings are text
  EXPECT_TRUE(p.complete());
}

// Random texts over JSON's alphabet: the recognizer completes exactly the texts Boost.JSON parses
// as objects (exponents past a double's range aside: Boost.JSON refuses those, JSON allows them).
TEST(JsonPrefix, AgreesWithBoostJsonOnRandomTexts) {
  std::mt19937 rng(5);
  const std::string alphabet = "{}[]\",:  \n-+.0123456789eEtrufalsn\\ubd8c0\xc3\xa9\xe2\x82\xac";
  std::vector<std::string> seeds(std::begin(kValid), std::end(kValid));
  int completed = 0;
  for (int i = 0; i < 200000; ++i) {
    std::string s;
    if (i % 2) {  // a valid text mutated at one or two places
      s = seeds[static_cast<std::size_t>(rng() % seeds.size())];
      for (int k = 0; k < 1 + static_cast<int>(rng() % 2); ++k) {
        const std::size_t at = rng() % (s.size() + 1);
        const char c = alphabet[rng() % alphabet.size()];
        switch (rng() % 3) {
          case 0: s.insert(s.begin() + static_cast<std::ptrdiff_t>(at), c); break;
          case 1: if (at < s.size()) s.erase(at, 1); break;
          default: if (at < s.size()) s[at] = c;
        }
      }
    } else {
      const std::size_t n = 2 + rng() % 12;
      s = "{";
      for (std::size_t k = 0; k < n; ++k) s += alphabet[rng() % alphabet.size()];
    }
    const Fed f = feed_all(s);
    bool overflow = false;
    const bool parsed = boost_object(s, &overflow);
    if (overflow) continue;
    // Whitespace after the object: JSON allows it, the recognizer ends the text at the object.
    const bool trailing_ws = !s.empty() && (s.back() == ' ' || s.back() == '\n' || s.back() == '\t');
    ASSERT_EQ(f.complete && f.taken == s.size(), parsed && !trailing_ws) << s;
    completed += parsed;
  }
  EXPECT_GT(completed, 1000);  // the comparison saw many valid texts too
}

TEST(TokenTrie, AllowedIsWhatEachTokenAloneWouldFeed) {
  std::mt19937 rng(9);
  const std::string alphabet = "{}[]\",: \n-.019eEtrufalsnx\\u\xc3\xa9\xe2\x82\xac";
  std::vector<std::string> vocab;
  for (int i = 0; i < 3000; ++i) {
    std::string t;
    const std::size_t n = rng() % 5;  // 0: a token with no bytes (special), never allowed
    for (std::size_t k = 0; k < n; ++k) t += alphabet[rng() % alphabet.size()];
    vocab.push_back(t);
  }
  vocab.push_back(vocab[10]);  // the same bytes under two ids
  const TokenTrie trie(vocab);
  ASSERT_EQ(trie.vocab_size(), static_cast<int64_t>(vocab.size()));
  std::vector<uint32_t> allowed;
  int64_t total = 0;
  for (std::string doc : kValid) {
    while (doc.back() == '\t') doc.pop_back();
    for (std::size_t cut = 0; cut <= doc.size(); ++cut) {
      JsonPrefix state;
      ASSERT_TRUE(state.feed(std::string_view(doc).substr(0, cut)));
      trie.allowed(state, allowed);
      ASSERT_EQ(static_cast<int64_t>(allowed.size()), trie.mask_words());
      for (std::size_t id = vocab.size(); id < allowed.size() * 32; ++id) ASSERT_FALSE(mask_allows(allowed, id));
      for (std::size_t id = 0; id < vocab.size(); ++id) {
        JsonPrefix alone = state;
        const bool want = !vocab[id].empty() && alone.feed(vocab[id]);
        ASSERT_EQ(mask_allows(allowed, id), want) << "prefix " << cut << " of " << doc << ", token '" << vocab[id] << "'";
        total += want;
      }
    }
  }
  EXPECT_GT(total, 10000);
}

// A choice: every prefix of each string is taken, complete exactly at the strings (a longer one
// may still follow), anything else refused; the state is unchanged by a refused run.
TEST(ChoicePrefix, PrefixesOfTheStringsOnly) {
  std::vector<std::string> choices = {"yes", "no", "yes sir", "n/a", "\xc3\xa9t\xc3\xa9"};
  std::sort(choices.begin(), choices.end());
  std::vector<std::string> all_prefixes;
  for (const auto& c : choices)
    for (std::size_t n = 0; n <= c.size(); ++n) all_prefixes.push_back(c.substr(0, n));
  for (const auto& text : all_prefixes) {
    ChoicePrefix p(choices);
    ASSERT_TRUE(p.feed(std::string_view(text))) << text;
    EXPECT_EQ(p.complete(), std::find(choices.begin(), choices.end(), text) != choices.end()) << text;
    for (int b = 0; b < 256; ++b) {  // one more byte: taken iff text + b is a prefix of some choice
      ChoicePrefix q = p;
      const std::string more = text + static_cast<char>(b);
      const bool want = std::find(all_prefixes.begin(), all_prefixes.end(), more) != all_prefixes.end();
      EXPECT_EQ(q.feed(static_cast<uint8_t>(b)), want) << more;
    }
  }
  ChoicePrefix p(choices);
  EXPECT_FALSE(p.feed(std::string_view("yes!")));
  ASSERT_TRUE(p.feed(std::string_view("yes")));  // the refused run left nothing behind
  EXPECT_TRUE(p.complete());
  ASSERT_TRUE(p.feed(std::string_view(" sir")));
  EXPECT_TRUE(p.complete());
  EXPECT_FALSE(p.feed(static_cast<uint8_t>(' ')));
}

// The recognizer kept across steps gives what replaying the whole output gives, for each
// structure, step by step; an output shorter than what was fed (never in the engine) starts over.
TEST(OutputConstraint, IncrementalEqualsReplay) {
  const std::vector<std::string> vocab = {"{", "}", "\"", "a", "b", ":", "1", "2", ",", " ", "[", "]", "\"a\"", "", "12"};
  const TokenTrie trie(vocab);
  dpa::engine::Request json, choice, schema, regex;
  json.params.structure = dpa::engine::Structure::json_object;
  choice.params.structure = dpa::engine::Structure::choice;
  choice.params.choices = {"a", "ab", "b1"};
  schema.params.structure = dpa::engine::Structure::json_schema;
  schema.schema = dpa::engine::JsonSchema::compile(
      R"({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "integer", "maximum": 20}}},
          "required": ["a"], "additionalProperties": false})");
  regex.params.structure = dpa::engine::Structure::regex;
  regex.regex = dpa::engine::Regex::compile(R"([ab]*:(12|2)+\.?)");  // a loop in one state, then others
  // Each output a token-id sequence the structure takes (13: a token with no bytes).
  const std::vector<std::pair<const dpa::engine::Request*, std::vector<int32_t>>> cases = {
      {&json, {0, 12, 5, 9, 10, 6, 8, 14, 11, 13, 1}}, {&choice, {3, 4, 13}}, {&schema, {0, 12, 5, 10, 14, 8, 7, 11, 1}},
      {&regex, {3, 4, 4, 3, 13, 5, 14, 7, 6, 7}}};
  for (const auto& [req, out] : cases) {
    dpa::engine::OutputConstraint kept;
    std::vector<uint32_t> a, b;
    for (std::size_t n = 0; n <= out.size(); ++n) {
      const std::span<const int32_t> so_far(out.data(), n);
      const bool complete = kept.mask(trie, *req, so_far, a);
      dpa::engine::OutputConstraint fresh;
      EXPECT_EQ(fresh.mask(trie, *req, so_far, b), complete) << n;
      EXPECT_EQ(a, b) << n;
      if (n < out.size()) EXPECT_TRUE(mask_allows(a, static_cast<std::size_t>(out[n])) || vocab[out[n]].empty()) << n;
    }
    EXPECT_TRUE(kept.mask(trie, *req, out, a)) << "the whole output is complete";
    dpa::engine::OutputConstraint fresh;
    EXPECT_EQ(kept.mask(trie, *req, std::span<const int32_t>(out.data(), 1), a),
              fresh.mask(trie, *req, std::span<const int32_t>(out.data(), 1), b));
    EXPECT_EQ(a, b);
  }
}

// A pattern's state masks are kept on the compiled pattern and shared by every request holding
// it: a second request with the same output walks nothing new, and every mask handed out is what
// a walk of that state gives. A trie of another vocabulary gets its own masks, not the first's.
TEST(OutputConstraint, RegexStateMasksAreSharedAcrossRequests) {
  const std::vector<std::string> vocab = {"a", "b", "ab", "ba", "abc", "c", ".", "", "aaaa"};
  const std::vector<std::string> other = {"b", "a", ".", "ba", "c", "aaaaaaa"};
  const auto re = dpa::engine::Regex::compile(R"([ab]{1,6}c?\.)");
  dpa::engine::Request r1, r2;
  r1.params.structure = r2.params.structure = dpa::engine::Structure::regex;
  r1.regex = r2.regex = re;
  auto run = [&](const TokenTrie& trie, const std::vector<std::string>& words, const dpa::engine::Request& req,
                 const std::vector<int32_t>& out) -> std::size_t {
    dpa::engine::OutputConstraint kept;
    std::vector<uint32_t> a, b;
    std::set<int32_t> states;
    for (std::size_t n = 0; n <= out.size(); ++n) {
      const bool complete = kept.mask(trie, req, std::span<const int32_t>(out.data(), n), a);
      dpa::engine::RegexPrefix p(*re);
      for (std::size_t i = 0; i < n; ++i) EXPECT_TRUE(p.feed(words[out[i]])) << "not an output of the pattern";
      trie.allowed(p, b);
      EXPECT_EQ(a, b) << n;
      EXPECT_EQ(complete, p.complete()) << n;
      states.insert(p.state());
    }
    return states.size();
  };
  const TokenTrie trie(vocab), trie2(other);
  const std::vector<int32_t> out = {0, 3, 1, 4, 6};  // a ba b abc .
  const std::size_t distinct = run(trie, vocab, r1, out);
  EXPECT_EQ(re->masks().size(), distinct);
  run(trie, vocab, r2, out);
  EXPECT_EQ(re->masks().size(), distinct) << "the second request walked again";
  run(trie, vocab, r2, {2, 2, 4, 6});  // ab ab abc .: states partly new
  EXPECT_GT(re->masks().size(), distinct);
  run(trie2, other, r1, {0, 1, 3, 4, 2});  // b a ba c .: another vocabulary's masks
  run(trie, vocab, r1, out);               // and the first one's again
}

// A memo keeps masks up to its cap, per vocabulary; its bytes go back to the process budget when
// it is freed or when another vocabulary's masks replace them.
TEST(MaskMemo, CapsAndVocabularies) {
  using dpa::engine::MaskMemo;
  const std::size_t before = MaskMemo::total_bytes();
  {
    MaskMemo memo(3 * (100 * 4 + 64));  // three masks of 100 words
    for (int32_t st = 0; st < 5; ++st) memo.keep(7, st, std::make_shared<MaskMemo::Mask>(100, static_cast<uint32_t>(st)));
    EXPECT_EQ(memo.size(), 3u);
    EXPECT_EQ(MaskMemo::total_bytes(), before + 3 * (100 * 4 + 64));
    ASSERT_TRUE(memo.find(7, 2));
    EXPECT_EQ((*memo.find(7, 2))[99], 2u);
    EXPECT_FALSE(memo.find(7, 3));  // past the cap: not kept
    EXPECT_FALSE(memo.find(8, 2));  // another vocabulary's
    memo.keep(8, 4, std::make_shared<MaskMemo::Mask>(100, 4u));  // replaces vocabulary 7's
    EXPECT_EQ(memo.size(), 1u);
    EXPECT_FALSE(memo.find(7, 0));
    EXPECT_EQ((*memo.find(8, 4))[0], 4u);
    EXPECT_EQ(MaskMemo::total_bytes(), before + 100 * 4 + 64);
  }
  EXPECT_EQ(MaskMemo::total_bytes(), before);
}

TEST(TokenTrie, RegexAllowsWhatEachTokenAloneWouldFeed) {
  const std::vector<std::string> vocab = {"1", "12", "123", "-", "-1", "a", "ab", "b", "\xc3\xa9", "\xc3", "\xa9",
                                          "", "x", "2024-", "0", "caf\xc3\xa9", ".", " "};
  const TokenTrie trie(vocab);
  std::vector<uint32_t> allowed;
  for (const char* pattern : {R"(\d{4}-\d{2})", R"((ab|a)+\.?)", R"(caf[e\u00e9] ?.)", R"([^a]{1,3})", R"(x|)"}) {
    const auto re = dpa::engine::Regex::compile(pattern);
    // Every state reached by feeding one of a few texts, byte by byte.
    for (std::string_view text : {"2024-12", "abab.", "caf\xc3\xa9 1", "\xc3\xa9-1", "x"}) {
      dpa::engine::RegexPrefix state(*re);
      for (std::size_t n = 0; n <= text.size(); ++n) {
        if (n > 0 && !state.feed(static_cast<uint8_t>(text[n - 1]))) break;
        trie.allowed(state, allowed);
        for (std::size_t id = 0; id < vocab.size(); ++id) {
          dpa::engine::RegexPrefix alone = state;
          EXPECT_EQ(mask_allows(allowed, id), !vocab[id].empty() && alone.feed(vocab[id]))
              << pattern << " after " << text.substr(0, n) << " + " << vocab[id];
        }
      }
    }
  }
}

TEST(TokenTrie, ChoicesAllowWhatEachTokenAloneWouldFeed) {
  std::vector<std::string> choices = {"positive", "negative", "neutral", "neg", "\xe2\x82\xac 5"};
  std::sort(choices.begin(), choices.end());
  std::vector<std::string> vocab = {"pos", "positive", "itive", "p", "o", "s", "i", "t", "v", "e", "neg", "ne",
                                    "n", "g", "a", "u", "r", "l", "ative", "tral", "\xe2", "\x82\xac", " 5", " ",
                                    "5", "", "x", "positives", "negative"};
  const TokenTrie trie(vocab);
  std::vector<uint32_t> allowed;
  for (const auto& c : choices)
    for (std::size_t n = 0; n <= c.size(); ++n) {
      ChoicePrefix state(choices);
      ASSERT_TRUE(state.feed(std::string_view(c).substr(0, n)));
      trie.allowed(state, allowed);
      for (std::size_t id = 0; id < vocab.size(); ++id) {
        ChoicePrefix alone = state;
        EXPECT_EQ(mask_allows(allowed, id), !vocab[id].empty() && alone.feed(vocab[id])) << c.substr(0, n) << " + " << vocab[id];
      }
    }
}

}  // namespace
