// Tokenizer unit tests with hand-derived expectations: malformed tokenizer.json errors, Split
// behaviours, merge formats, accessors, and the incremental detokenizer on split characters.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "text/tokenizer.h"

namespace {

using dpa::text::IncrementalDetokenizer;
using dpa::text::Tokenizer;

std::string g_mini_path;  // tests/text/corpus/tokenizer_gpt2_mini.json

// Expects from_json to throw dpa::Error whose message names the source and contains `needle`.
void expect_load_error(const std::string& json, const std::string& needle) {
  try {
    Tokenizer::from_json(json, "bad.json");
    ADD_FAILURE() << "no error for: " << json;
  } catch (const dpa::Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("bad.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << "message \"" << msg << "\" lacks \"" << needle << "\"";
  }
}

// A minimal byte-level tokenizer: tokens a b c - and the merges given; `pre` is the pre_tokenizer.
std::string tiny_json(const std::string& pre, const std::string& merges,
                      const std::string& extra_vocab = R"(, "a-": 4, "-b": 5, "--": 6, "-c": 7, "b-": 8)") {
  return R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "-": 3)" + extra_vocab +
         R"(}, "merges": )" + merges + R"(}, "pre_tokenizer": )" + pre + R"(, "decoder": {"type": "ByteLevel"}})";
}

const char* kMergesStrings = R"(["a -", "- b", "- -", "- c", "b -"])";
const char* kMergesPairs = R"([["a", "-"], ["-", "b"], ["-", "-"], ["-", "c"], ["b", "-"]])";

std::string split_pre(const std::string& behavior, bool invert) {
  return R"({"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"String": "-"}, "behavior": ")" +
         behavior + R"(", "invert": )" + (invert ? "true" : "false") +
         R"(}, {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]})";
}

TEST(TokenizerErrors, NotJson) { expect_load_error("{\"model\": ", "not valid JSON"); }

TEST(TokenizerErrors, RootNotObject) { expect_load_error("[1, 2]", "must be an object"); }

TEST(TokenizerErrors, MissingModel) {
  expect_load_error(R"({"pre_tokenizer": {"type": "ByteLevel"}})", "missing \"model\"");
}

TEST(TokenizerErrors, UnknownModelType) {
  expect_load_error(R"({"model": {"type": "WordPiece", "vocab": {}}})", "unsupported model type \"WordPiece\"");
}

TEST(TokenizerErrors, MergeReferencesUnknownToken) {
  expect_load_error(tiny_json(R"({"type": "ByteLevel"})", R"(["a z"])"), "\"z\" is not in the vocab");
  // Both parts known but the merged token is not.
  expect_load_error(tiny_json(R"({"type": "ByteLevel"})", R"([["c", "c"]])"), "merged token \"cc\"");
}

TEST(TokenizerErrors, MalformedMergeString) {
  expect_load_error(tiny_json(R"({"type": "ByteLevel"})", R"(["a - b"])"), "model.merges[0]");
}

TEST(TokenizerErrors, UnsupportedNormalizer) {
  std::string json = tiny_json(R"({"type": "ByteLevel"})", "[]");
  json.insert(1, R"("normalizer": {"type": "NFC"}, )");
  expect_load_error(json, "normalizer of type \"NFC\"");
}

TEST(TokenizerErrors, NotByteLevel) {
  expect_load_error(tiny_json(R"({"type": "Whitespace"})", "[]"), "\"Whitespace\" is not supported");
  expect_load_error(tiny_json("null", "[]"), "no ByteLevel");
}

TEST(TokenizerErrors, BadRegex) {
  expect_load_error(tiny_json(R"({"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "(a"},
      "behavior": "Isolated"}, {"type": "ByteLevel"}]})", "[]"), "does not compile");
}

TEST(TokenizerErrors, MissingFile) {
  EXPECT_THROW(Tokenizer::from_file("/nonexistent/tokenizer.json"), dpa::Error);
}

// Expected ids worked out by hand from Hugging Face's SplitDelimiterBehavior rules for "a-b--c"
// (pieces shown); merges make piece boundaries visible: a- -b -- -c b- are single tokens.
TEST(TokenizerSplit, BehavioursOnHandDerivedPieces) {
  struct Case {
    const char* behavior;
    bool invert;
    std::vector<int32_t> ids;
  };
  const std::vector<Case> cases = {
      {"Removed", false, {0, 1, 2}},                  // a b c
      {"Isolated", false, {0, 3, 1, 3, 3, 2}},        // a - b - - c
      {"MergedWithPrevious", false, {4, 8, 3, 2}},    // a- b- - c
      {"MergedWithNext", false, {0, 5, 3, 7}},        // a -b - -c
      {"Contiguous", false, {0, 3, 1, 6, 2}},         // a - b -- c
      {"Isolated", true, {0, 3, 1, 3, 3, 2}},         // same pieces, flags flipped
      {"Removed", true, {3, 3, 3}},                   // invert: the non-"-" parts are removed
  };
  for (const char* merges : {kMergesStrings, kMergesPairs}) {
    for (const auto& c : cases) {
      auto tok = Tokenizer::from_json(tiny_json(split_pre(c.behavior, c.invert), merges), "tiny");
      EXPECT_EQ(tok->encode("a-b--c"), c.ids) << c.behavior << " invert=" << c.invert;
    }
  }
}

TEST(TokenizerSplit, WholeWordMergesByRank) {
  // No split: a - b - - c; rank 0 (a -) first, then (- -) (rank 2) beats (- c) (rank 3); the
  // remaining pairs (a-, b) (b, --) (--, c) have no merge.
  auto tok = Tokenizer::from_json(tiny_json(R"({"type": "ByteLevel", "add_prefix_space": false, "use_regex": false})", kMergesStrings), "tiny");
  EXPECT_EQ(tok->encode("a-b--c"), (std::vector<int32_t>{4, 1, 6, 2}));
  // Ties go to the leftmost pair: "---" -> (--)(-).
  EXPECT_EQ(tok->encode("---"), (std::vector<int32_t>{6, 3}));
}

TEST(TokenizerEncode, RejectsInvalidUtf8AndMissingBytes) {
  auto tok = Tokenizer::from_json(tiny_json(R"({"type": "ByteLevel"})", "[]"), "tiny");
  EXPECT_THROW(tok->encode("a\xC3("), dpa::Error);
  EXPECT_THROW(tok->encode("xyz"), dpa::Error);  // no token for 'x' and no unk_token
}

class TokenizerMini : public ::testing::Test {
 protected:
  void SetUp() override { tok_ = Tokenizer::from_file(g_mini_path); }
  std::unique_ptr<Tokenizer> tok_;
};

// The mini file's vocab gives byte b the id b, merges ids 256.., then <|endoftext|>=291,
// <mask>=292 (special, lstrip), <rs>=293 (not special, rstrip).
TEST_F(TokenizerMini, Accessors) {
  EXPECT_EQ(tok_->vocab_size(), 294);
  EXPECT_EQ(tok_->token_to_id("<mask>"), 292);
  EXPECT_EQ(tok_->token_to_id("Ġthe"), 258);
  EXPECT_EQ(tok_->token_to_id("nope"), std::nullopt);
  EXPECT_EQ(tok_->id_to_token(258), "Ġthe");
  EXPECT_EQ(tok_->id_to_token(294), std::nullopt);
  EXPECT_TRUE(tok_->is_special(291));
  EXPECT_TRUE(tok_->is_special(292));
  EXPECT_FALSE(tok_->is_special(293));
  EXPECT_FALSE(tok_->is_special(258));
}

TEST_F(TokenizerMini, HandDerivedIds) {
  // "the the": t + he (merge h e), then Ġthe; with BOS from the TemplateProcessing.
  EXPECT_EQ(tok_->encode("the the"), (std::vector<int32_t>{'t', 257, 258}));
  EXPECT_EQ(tok_->encode("the the", true), (std::vector<int32_t>{291, 't', 257, 258}));
  // <mask> has lstrip: the spaces before it vanish; <rs> has rstrip: the spaces after it vanish.
  EXPECT_EQ(tok_->encode("a   <mask>"), (std::vector<int32_t>{'a', 292}));
  EXPECT_EQ(tok_->encode("<rs>   b"), (std::vector<int32_t>{293, 'b'}));
  const std::vector<int32_t> ids = {291, 't', 257, 292};
  EXPECT_EQ(tok_->decode(ids), "<|endoftext|>the<mask>");
  EXPECT_EQ(tok_->decode(ids, true), "the");
  EXPECT_THROW(tok_->decode(std::vector<int32_t>{5000}), dpa::Error);
}

TEST_F(TokenizerMini, DetokenizerHoldsSplitCharacters) {
  // Byte b has id b here, so a character can be fed one byte at a time.
  IncrementalDetokenizer detok(*tok_);
  EXPECT_EQ(detok.push('a'), "a");
  EXPECT_EQ(detok.push(0xE4), "");
  EXPECT_EQ(detok.push(0xBD), "");
  EXPECT_EQ(detok.push(0xA0), "\xE4\xBD\xA0");  // 你
  EXPECT_EQ(detok.push(291), "");                // special, skipped by default
  EXPECT_EQ(detok.push(0xF0), "");
  EXPECT_EQ(detok.push(0x9F), "");
  EXPECT_EQ(detok.finish(), "\xEF\xBF\xBD");  // incomplete emoji -> U+FFFD
  EXPECT_EQ(detok.finish(), "");

  IncrementalDetokenizer bad(*tok_, false);
  EXPECT_EQ(bad.push(0xFF), "\xEF\xBF\xBD");  // never valid: replaced at once
  EXPECT_EQ(bad.push(0xE4), "");
  EXPECT_EQ(bad.push('b'), "\xEF\xBF\xBD" "b");  // a broken sequence does not hold back text
  EXPECT_EQ(bad.push(291), "<|endoftext|>");
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--mini=", 0) == 0) g_mini_path = a.substr(7);
  }
  if (g_mini_path.empty()) {
    std::fprintf(stderr, "tokenizer_unit: missing --mini=PATH (ctest passes it)\n");
    return 1;
  }
  return RUN_ALL_TESTS();
}
