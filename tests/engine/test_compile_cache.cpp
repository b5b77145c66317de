// CompileCache (compiled schemas and patterns by text): hits, kept refusals, eviction by count
// and by bytes, and the two process-wide caches the frontend and the engine use.
#include "engine/compile_cache.h"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "engine/json_schema.h"
#include "engine/regex.h"

namespace dpa::engine {
namespace {

struct Obj {
  std::string text;
  std::size_t size = 16;
};

// make() for `key` that counts its calls and refuses texts starting with '!'.
struct Maker {
  std::atomic<int> calls{0};
  std::shared_ptr<const Obj> operator()(const std::string& key, std::size_t size = 16) {
    ++calls;
    if (!key.empty() && key[0] == '!') throw Error("refused: " + key);
    return std::make_shared<const Obj>(Obj{key, size});
  }
};

std::size_t obj_bytes(const Obj& o) { return o.size; }

std::shared_ptr<const Obj> get(CompileCache<Obj>& c, Maker& m, const std::string& key, std::size_t size = 16) {
  return c.get(key, [&] { return m(key, size); }, obj_bytes);
}

TEST(CompileCache, SecondGetIsAHitOnTheSameObject) {
  CompileCache<Obj> c(8, 1 << 20);
  Maker m;
  const auto a = get(c, m, "a"), a2 = get(c, m, "a"), b = get(c, m, "b");
  EXPECT_EQ(a.get(), a2.get());
  EXPECT_NE(a.get(), b.get());
  EXPECT_EQ(a->text, "a");
  EXPECT_EQ(b->text, "b");
  EXPECT_EQ(m.calls, 2);
  const auto s = c.stats();
  EXPECT_EQ(s.hits, 1);
  EXPECT_EQ(s.misses, 2);
  EXPECT_EQ(s.entries, 2u);
}

TEST(CompileCache, ARefusalIsKeptWithItsMessage) {
  CompileCache<Obj> c(8, 1 << 20);
  Maker m;
  for (int i = 0; i < 3; ++i) {
    try {
      get(c, m, "!bad");
      ADD_FAILURE() << "no throw";
    } catch (const Error& e) {
      EXPECT_STREQ(e.what(), "refused: !bad");
    }
  }
  EXPECT_EQ(m.calls, 1);
}

TEST(CompileCache, OtherExceptionsPassAndAreNotKept) {
  CompileCache<Obj> c(8, 1 << 20);
  int calls = 0;
  auto boom = [&]() -> std::shared_ptr<const Obj> {
    ++calls;
    throw std::bad_alloc();
  };
  EXPECT_THROW(c.get("x", boom, obj_bytes), std::bad_alloc);
  EXPECT_THROW(c.get("x", boom, obj_bytes), std::bad_alloc);
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(c.stats().entries, 0u);
}

TEST(CompileCache, TheLeastRecentlyUsedLeavesPastTheCount) {
  CompileCache<Obj> c(2, 1 << 20);
  Maker m;
  get(c, m, "a"), get(c, m, "b");
  get(c, m, "a");  // a used after b
  get(c, m, "c");  // b leaves
  EXPECT_EQ(m.calls, 3);
  get(c, m, "a");
  EXPECT_EQ(m.calls, 3);  // still kept
  get(c, m, "b");
  EXPECT_EQ(m.calls, 4);  // compiled again
  EXPECT_EQ(c.stats().entries, 2u);
}

TEST(CompileCache, TheLeastRecentlyUsedLeavesPastTheBytes) {
  // Each entry costs its object, twice its key and a fixed overhead (128): 1,130 bytes here.
  CompileCache<Obj> c(100, 3000);
  Maker m;
  get(c, m, "a", 1000), get(c, m, "b", 1000);
  EXPECT_EQ(c.stats().entries, 2u);
  get(c, m, "c", 1000);  // 3,390 bytes with it: a leaves
  EXPECT_EQ(c.stats().entries, 2u);
  EXPECT_LE(c.stats().bytes, 3000u);
  get(c, m, "b", 1000), get(c, m, "c", 1000);
  EXPECT_EQ(m.calls, 3);
  get(c, m, "a", 1000);
  EXPECT_EQ(m.calls, 4);
  // Larger than the whole budget: returned, not kept, nothing evicted for it.
  const auto big = get(c, m, "big", 5000);
  EXPECT_EQ(big->text, "big");
  get(c, m, "big", 5000);
  EXPECT_EQ(m.calls, 6);
  EXPECT_EQ(c.stats().entries, 2u);
}

TEST(CompileCache, ThreadsShareIt) {
  CompileCache<Obj> c(4, 1 << 20);  // 6 keys over 4 entries: hits, misses and evictions at once
  Maker m;
  std::vector<std::thread> ts;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 8; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        const std::string key = std::string(1, static_cast<char>('a' + (i * 7 + t) % 6));
        if (get(c, m, key)->text != key) ++wrong;
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(wrong, 0);
  const auto s = c.stats();
  EXPECT_EQ(s.hits + s.misses, 16000);
  EXPECT_LE(s.entries, 4u);
}

TEST(CompileCache, RegexByTargetAndText) {
  const auto a = Regex::compile_cached("[a-z]+\"?"), b = Regex::compile_cached("[a-z]+\"?");
  const auto j = Regex::compile_cached("[a-z]+\"?", Regex::Target::json_string);
  EXPECT_EQ(a.get(), b.get());
  EXPECT_NE(a.get(), j.get());
  // Same answers as a fresh compile: the JSON target reads the quote as \".
  RegexPrefix pa(*a), pj(*j);
  EXPECT_TRUE(pa.feed("ab\"") && pa.complete());
  EXPECT_FALSE(pj.feed("ab\""));
  EXPECT_TRUE(pj.feed("ab\\\"") && pj.complete());
  EXPECT_GT(a->bytes(), 0u);
  // A refusal: the message compile() gives, every time.
  std::string first;
  try {
    Regex::compile("(a)\\1");
  } catch (const Error& e) {
    first = e.what();
  }
  ASSERT_FALSE(first.empty());
  for (int i = 0; i < 2; ++i) {
    try {
      Regex::compile_cached("(a)\\1");
      ADD_FAILURE() << "no throw";
    } catch (const Error& e) {
      EXPECT_EQ(first, e.what());
    }
  }
}

TEST(CompileCache, JsonSchemaByText) {
  const std::string s = R"({"type":"object","properties":{"id":{"type":"string","pattern":"^[a-z]+$"}},"required":["id"]})";
  const auto a = JsonSchema::compile_cached(s), b = JsonSchema::compile_cached(s);
  EXPECT_EQ(a.get(), b.get());
  EXPECT_NE(a.get(), JsonSchema::compile_cached(s + " ").get());  // the text is the key
  EXPECT_GT(a->bytes(), Regex::compile("[a-z]+")->bytes());       // its pattern's DFA counted
  EXPECT_THROW(JsonSchema::compile_cached(R"({"type":"object","patternProperties":{}})"), Error);
  EXPECT_THROW(JsonSchema::compile_cached(std::string(JsonSchema::kMaxText + 1, ' ')), Error);
}

}  // namespace
}  // namespace dpa::engine
