// The host side of penalized sampling: a request's logit edits for one step, recounted from its
// whole history (logit_edits) or kept as the history grows (PenaltyEdits, what the engine does).
// Checks that both give the same edits, then times one step's edits of one request with a
// repetition and a frequency penalty, for prompt lengths 512 / 4,096 / 16,384 and 256 generated
// tokens (recount) or 256 to 2,303 (kept: 2,048 steps, one token each); ids uniform over
// DeepSeek-V3's 129,280 (real text repeats more, so it has fewer distinct ids and edits).
//   penalty_edits_bench [--benchmark_* flags of Google Benchmark]
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <span>
#include <vector>

#include "engine/sampler.h"

namespace {

using dpa::backend::LogitEdit;
using dpa::engine::PenaltyEdits;
using dpa::engine::SamplingParams;

constexpr int64_t kVocab = 129280;
constexpr int64_t kGenerated = 256;

SamplingParams params() {
  SamplingParams p;
  p.repetition_penalty = 1.1f;
  p.frequency_penalty = 0.2f;
  return p;
}

std::vector<int32_t> history(int64_t n_prompt) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> tok(0, kVocab - 1);
  std::vector<int32_t> t(static_cast<std::size_t>(n_prompt + kGenerated));
  for (auto& x : t) x = tok(rng);
  return t;
}

bool same_edits(std::vector<LogitEdit> a, std::vector<LogitEdit> b) {
  auto by_token = [](const LogitEdit& x, const LogitEdit& y) { return x.token < y.token; };
  std::sort(a.begin(), a.end(), by_token), std::sort(b.begin(), b.end(), by_token);
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](const LogitEdit& x, const LogitEdit& y) {
           return x.row == y.row && x.token == y.token && x.repetition == y.repetition && x.subtract == y.subtract;
         });
}

// One step at the end of the history: every step recounts prompt + generated.
void BM_Recount(benchmark::State& st) {
  const int64_t n_prompt = st.range(0);
  const auto t = history(n_prompt);
  const std::span<const int32_t> prompt(t.data(), n_prompt), gen(t.data() + n_prompt, kGenerated);
  std::vector<LogitEdit> out;
  for (auto _ : st) {
    out.clear();
    dpa::engine::logit_edits(params(), prompt, gen, false, {}, kVocab, 0, out);
    benchmark::DoNotOptimize(out.data());
  }
  st.counters["edits"] = static_cast<double>(out.size());
}

// The engine's way: the edits are kept as the history grows. Each iteration is one step that adds
// one generated token (from the 256th on) and copies the edits out; the state is never copied.
constexpr int64_t kSteps = 2048;
void BM_Incremental(benchmark::State& st) {
  const int64_t n_prompt = st.range(0);
  std::vector<int32_t> t = history(n_prompt);
  {
    std::mt19937 rng(9);
    std::uniform_int_distribution<int32_t> tok(0, kVocab - 1);
    for (int64_t i = 0; i < kSteps; ++i) t.push_back(tok(rng));
  }
  const std::span<const int32_t> prompt(t.data(), n_prompt);
  PenaltyEdits inc;
  std::vector<LogitEdit> out, want;
  int64_t n_gen = kGenerated - 1;
  inc.append(params(), prompt, std::span<const int32_t>(t.data() + n_prompt, n_gen), kVocab, 0, out);
  for (auto _ : st) {
    out.clear();
    inc.append(params(), prompt, std::span<const int32_t>(t.data() + n_prompt, ++n_gen), kVocab, 0, out);
    benchmark::DoNotOptimize(out.data());
  }
  dpa::engine::logit_edits(params(), prompt, std::span<const int32_t>(t.data() + n_prompt, n_gen), false, {},
                           kVocab, 0, want);
  if (!same_edits(out, want)) st.SkipWithError("incremental edits differ from the full count");
  st.counters["edits"] = static_cast<double>(out.size());
}

BENCHMARK(BM_Recount)->Arg(512)->Arg(4096)->Arg(16384)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Incremental)->Arg(512)->Arg(4096)->Arg(16384)->Iterations(kSteps)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
