// The host side of response_format json_object, json_schema and guided_regex: the allowed
// tokens of one constrained row for one step (TokenTrie::allowed, one walk of the vocabulary's
// byte trie), in the states an answer spends its tokens in. Builds the token bytes as engine_setup does
// (special tokens have none), times the trie's construction once, checks every state's allowed
// set against feeding each token alone, then times the walks.
//   json_mask_bench --tokenizer PATH/tokenizer.json [--benchmark_* flags of Google Benchmark]
#include <benchmark/benchmark.h>

#include <bit>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "engine/json_schema.h"
#include "engine/output_constraint.h"
#include "engine/regex.h"
#include "engine/request.h"
#include "engine/structured_output.h"
#include "text/tokenizer.h"

namespace {

using dpa::engine::JsonPrefix;
using dpa::engine::JsonSchema;
using dpa::engine::SchemaPrefix;
using dpa::engine::mask_allows;
using dpa::engine::Regex;
using dpa::engine::RegexPrefix;
using dpa::engine::TokenTrie;

std::vector<std::string> g_bytes;
std::unique_ptr<TokenTrie> g_trie;

// The states: the text so far.
const char* const kStates[] = {
    "",                                          // before the object
    "{",                                         // a key or the end
    "{\"name\": \"Ada Lovelace, the first pro",  // inside a string value
    "{\"year\": 18",                             // inside a number
    "{\"tags\": [\"math\", ",                    // an array's next value
};

JsonPrefix state(int i) {
  JsonPrefix p;
  if (!p.feed(std::string_view(kStates[i]))) std::abort();
  return p;
}

// A schema of the kind APIs are given (a string, a bounded integer, an enum, an array of
// objects, an optional nested object), and states in it.
const char* const kSchema = R"({"type": "object", "properties": {
    "name": {"type": "string"}, "age": {"type": "integer", "minimum": 0, "maximum": 150},
    "role": {"enum": ["admin", "user", "guest"]},
    "tags": {"type": "array", "items": {"type": "object", "properties": {"label": {"type": "string"},
             "weight": {"type": "number"}}, "required": ["label"], "additionalProperties": false}},
    "address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "string", "maxLength": 10}}}},
  "required": ["name", "age", "role", "tags"], "additionalProperties": false})";
const char* const kSchemaStates[] = {
    "",                                                // before the object
    "{",                                               // a key or the end
    "{\"name\": \"Ada Lovelace, the first pro",          // inside a free string
    "{\"name\": \"Ada\", \"age\": 1",                   // inside a bounded integer
    "{\"name\": \"Ada\", \"tags\": [{\"label\": \"x\"}, ",  // an array's next item
};
std::shared_ptr<const JsonSchema> g_schema;
// The costliest kind a user may send: anyOf of 64 object shapes that share their first key and
// take any other key (additionalProperties left true), so 64 parses stay alive, and a key being
// written is a free string in each (keys are not plain: the plain-token set does not apply).
std::string hostile_schema() {
  std::string s = R"({"anyOf": [)";
  for (int i = 0; i < 64; ++i)
    s += (i ? "," : "") + std::string(R"({"type": "object", "properties": {"k": {"type": "string"}, "v)") +
         std::to_string(i) + R"(": {"type": "integer"}}, "required": ["k"]})";
  return s + "]}";
}
const char* const kHostileStates[] = {
    "{\"k\": \"abc",    // inside a value string, 64 parses
    "{\"k\": \"a\", \"",  // inside a key, 64 parses
};
std::shared_ptr<const JsonSchema> g_hostile;

SchemaPrefix schema_state(int i) {
  SchemaPrefix p(*g_schema);
  if (!p.feed(std::string_view(kSchemaStates[i]))) std::abort();
  return p;
}

// One row's mask walk from a state; the label names the text before it.
template <typename State>
void walk(benchmark::State& st, const State& from, const char* text) {
  std::vector<uint32_t> allowed;
  int64_t n = 0;
  for (auto _ : st) {
    g_trie->allowed(from, allowed);
    benchmark::DoNotOptimize(allowed.data());
  }
  for (uint32_t w : allowed) n += std::popcount(w);
  st.counters["allowed"] = static_cast<double>(n);
  st.SetLabel(std::string("after '") + text + "'");
}

void BM_Allowed(benchmark::State& st) {
  walk(st, state(static_cast<int>(st.range(0))), kStates[st.range(0)]);
}
BENCHMARK(BM_Allowed)->DenseRange(0, 4)->Unit(benchmark::kMillisecond);

void BM_SchemaAllowed(benchmark::State& st) {
  walk(st, schema_state(static_cast<int>(st.range(0))), kSchemaStates[st.range(0)]);
}
// A string with maxLength: no plain-token shortcut, the whole trie is walked.
// maxLength 1000 after 3 characters, and 5 after 3: the plain tokens that fit are a set.
// The third: a string under a pattern, whose DFA decides each byte (no plain-token set).
const char* const kBoundedSchemas[] = {R"({"type": "string", "maxLength": 1000})", R"({"type": "string", "maxLength": 5})",
                                       R"({"type": "string", "pattern": "^[a-z ]+$"})"};
std::shared_ptr<const JsonSchema> g_bounded[3];
SchemaPrefix bounded_state(int i) {
  SchemaPrefix p(*g_bounded[i]);
  if (!p.feed(std::string_view("\"abc"))) std::abort();
  return p;
}
void BM_SchemaBoundedString(benchmark::State& st) {
  walk(st, bounded_state(static_cast<int>(st.range(0))), kBoundedSchemas[st.range(0)]);
}
BENCHMARK(BM_SchemaBoundedString)->DenseRange(0, 2)->Unit(benchmark::kMicrosecond);

SchemaPrefix hostile_state(int i) {
  SchemaPrefix p(*g_hostile);
  if (!p.feed(std::string_view(kHostileStates[i]))) std::abort();
  return p;
}
void BM_SchemaHostile(benchmark::State& st) {
  walk(st, hostile_state(static_cast<int>(st.range(0))), kHostileStates[st.range(0)]);
}
BENCHMARK(BM_SchemaHostile)->DenseRange(0, 1)->Unit(benchmark::kMicrosecond);

BENCHMARK(BM_SchemaAllowed)->DenseRange(0, 4)->Unit(benchmark::kMicrosecond);

// guided_regex: a pattern and the text before the walk. The first two are loops that take most
// of the vocabulary (the worst a walk does: the whole trie); the others a narrow class, a
// counted repeat, and the middle of an alternation.
const char* const kRegexes[][2] = {
    {R"(.*)", "Once upon a time"},
    {R"([^"\\]{0,500})", "Once upon a time"},
    {R"(\d{3}-\d{3}-\d{4})", "555-12"},
    {R"([A-Z][a-z]{1,20}( [A-Z][a-z]{1,20}){0,3})", "Ada Lov"},
    {R"((positive|negative|neutral|mixed feelings about it))", "mixed fe"},
};
std::shared_ptr<const Regex> g_regex[std::size(kRegexes)];
RegexPrefix regex_state(int i) {
  RegexPrefix p(*g_regex[i]);
  if (!p.feed(std::string_view(kRegexes[i][1]))) std::abort();
  return p;
}
void BM_RegexAllowed(benchmark::State& st) {
  walk(st, regex_state(static_cast<int>(st.range(0))), kRegexes[st.range(0)][0]);
}
BENCHMARK(BM_RegexAllowed)->DenseRange(0, std::size(kRegexes) - 1)->Unit(benchmark::kMicrosecond);

// What admission pays for a request's structure: compile() every time, against compile_cached()
// (the frontend's and every rank's call), whose repeats of a text are lookups. The schema above
// with its pattern, and the patterns above (range: index).
void BM_CompileSchema(benchmark::State& st) {
  for (auto _ : st) benchmark::DoNotOptimize(st.range(0) ? JsonSchema::compile_cached(kSchema) : JsonSchema::compile(kSchema));
}
BENCHMARK(BM_CompileSchema)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
void BM_CompileRegex(benchmark::State& st) {
  const char* p = kRegexes[st.range(0)][0];
  for (auto _ : st) benchmark::DoNotOptimize(st.range(1) ? Regex::compile_cached(p) : Regex::compile(p));
}
BENCHMARK(BM_CompileRegex)->ArgsProduct({{1, 3}, {0, 1}})->Unit(benchmark::kMicrosecond);

// A served batch under one counted-repeat pattern, as the engine masks it: 128 rows, 32 steps,
// each row drawing its own tokens of [a-z,.] (so the rows' DFA states differ and move every
// step). range(0) = 1: the rows share one compiled pattern, as the compile cache makes them,
// and with it the masks of the states any row walked; 0: a pattern compiled per row (each walks
// every state it reaches). Compiled afresh each iteration (untimed), so no mask is warm at the
// start. The time is the whole batch's: per row and step, divide by 4,096.
void BM_RegexBatch(benchmark::State& st) {
  constexpr int kRows = 128, kSteps = 32;
  const char* pattern = "[a-z,.]{1,1000}";
  std::vector<int32_t> words;  // tokens of 1 to 6 bytes, all in [a-z,.]
  for (std::size_t id = 0; id < g_bytes.size(); ++id) {
    const std::string& b = g_bytes[id];
    if (b.empty() || b.size() > 6) continue;
    bool ok = true;
    for (char c : b) ok = ok && ((c >= 'a' && c <= 'z') || c == ',' || c == '.');
    if (ok) words.push_back(static_cast<int32_t>(id));
  }
  std::vector<uint32_t> allowed;
  for (auto _ : st) {
    st.PauseTiming();
    std::vector<dpa::engine::Request> reqs(kRows);
    const auto shared = Regex::compile(pattern);
    for (auto& r : reqs) {
      r.params.structure = dpa::engine::Structure::regex;
      r.regex = st.range(0) ? shared : Regex::compile(pattern);
    }
    std::vector<dpa::engine::OutputConstraint> rows(kRows);
    std::vector<std::vector<int32_t>> out(kRows);
    st.ResumeTiming();
    for (int t = 0; t < kSteps; ++t)
      for (int r = 0; r < kRows; ++r) {
        rows[r].mask(*g_trie, reqs[r], out[r], allowed);
        out[r].push_back(words[(static_cast<std::size_t>(r) * 7919 + static_cast<std::size_t>(t) * 104729) % words.size()]);
      }
  }
}
BENCHMARK(BM_RegexBatch)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->Iterations(3);

// Each state's allowed set is what feeding each token alone gives; returns false on a mismatch.
template <typename State>
bool check(const State& from, const char* text) {
  std::vector<uint32_t> allowed;
  g_trie->allowed(from, allowed);
  int64_t n = 0;
  for (std::size_t id = 0; id < g_bytes.size(); ++id) {
    State alone = from;
    const bool want = !g_bytes[id].empty() && alone.feed(g_bytes[id]);
    if (want != mask_allows(allowed, id)) {
      std::fprintf(stderr, "check failed: after '%s', token %zu\n", text, id);
      return false;
    }
    n += want;
  }
  std::printf("check: after '%s': %lld of %zu tokens allowed, as fed one by one\n", text, static_cast<long long>(n),
              g_bytes.size());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string path;
  std::vector<char*> rest{argv[0]};
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--tokenizer") == 0 && i + 1 < argc) path = argv[++i];
    else rest.push_back(argv[i]);
  }
  if (path.empty()) {
    std::fprintf(stderr, "usage: json_mask_bench --tokenizer PATH/tokenizer.json [--benchmark_* flags]\n");
    return 2;
  }
  const auto tok = dpa::text::Tokenizer::from_file(path);
  g_bytes.resize(static_cast<std::size_t>(tok->vocab_size()));
  for (std::size_t id = 0; id < g_bytes.size(); ++id) {
    const int32_t one[1] = {static_cast<int32_t>(id)};
    if (!tok->is_special(one[0])) g_bytes[id] = tok->decode(one, false);
  }
  const auto t0 = std::chrono::steady_clock::now();
  g_trie = std::make_unique<TokenTrie>(g_bytes);
  const double build_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("vocabulary %zu tokens; trie built in %.1f ms\n", g_bytes.size(), build_ms);
  // Check: each state's allowed set is what feeding each token alone gives.
  g_schema = JsonSchema::compile(kSchema);
  g_hostile = JsonSchema::compile(hostile_schema());
  for (int i = 0; i < 3; ++i) g_bounded[i] = JsonSchema::compile(kBoundedSchemas[i]);
  for (int i = 0; i < static_cast<int>(std::size(kStates)); ++i)
    if (!check(state(i), kStates[i])) return 1;
  for (int i = 0; i < static_cast<int>(std::size(kSchemaStates)); ++i)
    if (!check(schema_state(i), kSchemaStates[i])) return 1;
  for (int i = 0; i < 2; ++i)
    if (!check(bounded_state(i), kBoundedSchemas[i]) || !check(hostile_state(i), kHostileStates[i])) return 1;
  if (!check(bounded_state(2), kBoundedSchemas[2])) return 1;
  for (std::size_t i = 0; i < std::size(kRegexes); ++i) {
    const auto c0 = std::chrono::steady_clock::now();
    g_regex[i] = Regex::compile(kRegexes[i][0]);
    std::printf("regex %s: %lld states, compiled in %.3f ms\n", kRegexes[i][0], static_cast<long long>(g_regex[i]->states()),
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - c0).count());
    if (!check(regex_state(static_cast<int>(i)), kRegexes[i][1])) return 1;
  }
  int n = static_cast<int>(rest.size());
  benchmark::Initialize(&n, rest.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
