// Forward invariants on the V3 fixture (and the V2 one, where q_proj and kv_a_proj are fused),
// independent of transformers: a prompt fed in chunks over the paged cache gives the logits of a
// one-shot prefill; the absorbed and expanded MLA forms agree; bad page tables and positions are
// refused.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/error.h"
#include "model/checkpoint.h"
#include "model/forward.h"

namespace dpa::model {
namespace {

// The fixtures' directories, V3's then V2's: the command line's arguments that are not flags.
std::string fixture_arg(std::size_t i) {
  std::vector<std::string> dirs;
  const auto& argv = ::testing::internal::GetArgvs();
  for (std::size_t a = 1; a < argv.size(); ++a)
    if (argv[a].rfind("-", 0) != 0) dirs.push_back(argv[a]);
  return i < dirs.size() ? dirs[i] : std::string();
}
std::string fixture_dir() { return fixture_arg(0); }
std::string v2_fixture_dir() { return fixture_arg(1); }

const std::vector<int32_t> kPrompt = {1, 9, 33, 7, 200, 17, 5, 88, 91, 3, 250, 64};

std::vector<float> run(Model& m, const std::vector<std::vector<int32_t>>& chunks) {
  std::vector<int32_t> table;
  int64_t total = 0;
  for (const auto& c : chunks) total += static_cast<int64_t>(c.size());
  m.cache().grow(table, total);
  std::vector<float> all, logits;
  int64_t start = 0;
  for (const auto& c : chunks) {
    m.forward({SeqInput{c, start, table, LogitsWanted::all}}, logits);
    all.insert(all.end(), logits.begin(), logits.end());
    start += static_cast<int64_t>(c.size());
  }
  m.cache().release(table);
  return all;
}

// The fixture's checkpoint on the CPU backend, as a model with a small paged cache.
struct Loaded {
  std::unique_ptr<Checkpoint> ckpt;
  std::unique_ptr<backend::Backend> be;
  std::unique_ptr<Model> m;
  Loaded(int64_t page_size, int64_t n_pages, AttentionForm form = AttentionForm::automatic, bool profile = false,
         int64_t graph_tokens = 0, const std::string& dir = fixture_dir())
      : ckpt(Checkpoint::open(dir)), be(backend::make_cpu_backend()) {
    ForwardOptions opts;
    opts.page_size = page_size;
    opts.n_pages = n_pages;
    opts.attention = form;
    opts.profile_phases = profile;
    opts.cuda_graph_max_tokens = graph_tokens;
    m = std::make_unique<Model>(*ckpt, *be, ShardSpec{}, ParallelComms{}, opts);
  }
};

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double d = 0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) d = std::max(d, double(std::abs(a[i] - b[i])));
  return d;
}

TEST(ModelForward, ChunkedAndAbsorbedMatchOneShot) {
  ASSERT_FALSE(fixture_dir().empty());
  Loaded f(3, 32, AttentionForm::expanded);
  Model& m = *f.m;
  const auto one_shot = run(m, {kPrompt});
  ASSERT_EQ(one_shot.size(), kPrompt.size() * static_cast<std::size_t>(m.config().vocab_size));
  // Chunks 5 + 1 + 6: the cached prefix is read back from pages in the later chunks.
  const std::vector<std::vector<int32_t>> chunks = {
      {kPrompt.begin(), kPrompt.begin() + 5}, {kPrompt[5]}, {kPrompt.begin() + 6, kPrompt.end()}};
  EXPECT_LT(max_abs_diff(run(m, chunks), one_shot), 1e-5);
  m.options().attention = AttentionForm::absorbed;
  EXPECT_LT(max_abs_diff(run(m, {kPrompt}), one_shot), 1e-5);
  EXPECT_LT(max_abs_diff(run(m, chunks), one_shot), 1e-5);
}

// A mixed step (one sequence decoding, absorbed; another prefilling, expanded) gives each the
// logits it gets in a step of its own: the absorbed products run over the decode rows only.
TEST(ModelForward, MixedStepMatchesSeparateSteps) {
  Loaded f(4, 32);
  Model& m = *f.m;
  const std::vector<int32_t> a(kPrompt.begin(), kPrompt.begin() + 8), b(kPrompt.begin() + 2, kPrompt.end());
  std::vector<int32_t> ta, tb;
  m.cache().grow(ta, 9);
  m.cache().grow(tb, static_cast<int64_t>(b.size()));
  std::vector<float> logits, a_alone, b_alone, mixed;
  m.forward({SeqInput{a, 0, ta, LogitsWanted::none}}, logits);
  const std::vector<int32_t> next = {kPrompt[8]};
  m.forward({SeqInput{next, 8, ta, LogitsWanted::all}}, a_alone);
  m.forward({SeqInput{b, 0, tb, LogitsWanted::all}}, b_alone);
  // The same two chunks again in one step (the cache rows they write are the same values).
  m.forward({SeqInput{b, 0, tb, LogitsWanted::all}, SeqInput{next, 8, ta, LogitsWanted::all}}, mixed);
  std::vector<float> expect = b_alone;
  expect.insert(expect.end(), a_alone.begin(), a_alone.end());
  EXPECT_LT(max_abs_diff(mixed, expect), 1e-5);
}

// Several chunks of several tokens in one step take the expanded form packed along the rows
// (one kv_b_proj and one attention call for all): the logits are each chunk's alone, for a
// chunk that starts a sequence and one that continues a cached prefix, in either order.
TEST(ModelForward, PackedPrefillChunksMatchSeparateSteps) {
  Loaded f(4, 48);
  Model& m = *f.m;
  const std::vector<int32_t> a0(kPrompt.begin(), kPrompt.begin() + 5), a1(kPrompt.begin() + 5, kPrompt.end());
  const std::vector<int32_t> b(kPrompt.begin() + 3, kPrompt.begin() + 10), c(kPrompt.rbegin(), kPrompt.rbegin() + 6);
  std::vector<int32_t> ta, tb, tc;
  m.cache().grow(ta, static_cast<int64_t>(kPrompt.size()));
  m.cache().grow(tb, static_cast<int64_t>(b.size()));
  m.cache().grow(tc, static_cast<int64_t>(c.size()));
  std::vector<float> unused, a_alone, b_alone, c_alone, packed;
  m.forward({SeqInput{a0, 0, ta, LogitsWanted::none}}, unused);
  m.forward({SeqInput{a1, 5, ta, LogitsWanted::all}}, a_alone);
  m.forward({SeqInput{b, 0, tb, LogitsWanted::all}}, b_alone);
  m.forward({SeqInput{c, 0, tc, LogitsWanted::all}}, c_alone);
  // Again in one step (the cache rows they write are the same values).
  m.forward({SeqInput{b, 0, tb, LogitsWanted::all}, SeqInput{a1, 5, ta, LogitsWanted::all},
             SeqInput{c, 0, tc, LogitsWanted::all}},
            packed);
  std::vector<float> expect = b_alone;
  expect.insert(expect.end(), a_alone.begin(), a_alone.end());
  expect.insert(expect.end(), c_alone.begin(), c_alone.end());
  ASSERT_EQ(packed.size(), expect.size());
  EXPECT_LT(max_abs_diff(packed, expect), 1e-5);
}

// The floor --profile-phases reports: a decode step reads each cache row once per layer and the
// weights of the routed experts that got rows, so one more row of context and the change in
// experts touched account for the whole difference between two decode steps.
TEST(ModelForward, DecodeFloorBytes) {
  Loaded f(4, 32, AttentionForm::automatic, true);
  Model& m = *f.m;
  const ModelConfig& c = m.config();
  std::vector<int32_t> table;
  m.cache().grow(table, 10);
  std::vector<float> logits;
  const std::vector<int32_t> prompt(kPrompt.begin(), kPrompt.begin() + 8);
  m.forward({SeqInput{prompt, 0, table, LogitsWanted::none}}, logits);
  auto experts_touched = [&] {
    int64_t n = 0;
    for (int64_t x : m.expert_counts()) n += x > 0;
    return n;
  };
  auto decode = [&](int64_t pos) {
    const std::vector<int32_t> tok = {kPrompt[static_cast<std::size_t>(pos)]};
    const double before = m.phase_stats(true).floor_bytes;
    m.forward({SeqInput{tok, pos, table, LogitsWanted::last}}, logits);
    return m.phase_stats(true).floor_bytes - before;
  };
  const double b8 = decode(8);
  const int64_t n8 = experts_touched();
  const double b9 = decode(9);
  const int64_t n9 = experts_touched();
  ASSERT_EQ(m.phase_stats(true).steps, 2);
  ASSERT_GT(n8, 0);
  const double f32 = 4;  // the fixture's weights and the CPU cache are f32
  const double row = static_cast<double>(c.num_hidden_layers * (c.kv_lora_rank + c.qk_rope_head_dim)) * f32;
  const double expert = 3.0 * static_cast<double>(c.moe_intermediate_size * c.hidden_size) * f32;
  EXPECT_DOUBLE_EQ(b9 - b8, row + static_cast<double>(n9 - n8) * expert);
  // At least the LM head and every touched expert.
  EXPECT_GT(b8, static_cast<double>(c.vocab_size * c.hidden_size) * f32 + static_cast<double>(n8) * expert);
}

// A decode step padded to its bucket (ForwardOptions::decode_bucket) runs copies of its first row
// through the experts; the expert statistics leave them out, on the host-count path and on the
// fixed-capacity one (DPA_MOE_FIXED_TOKENS), and the logits are the unpadded step's.
TEST(ModelForward, DecodePaddingStaysOutOfExpertStats) {
  for (const char* fixed : {"0", "64"}) {
    ::setenv("DPA_MOE_FIXED_TOKENS", fixed, 1);
    std::vector<int64_t> counts[2];
    std::vector<float> logits[2];
    int64_t routed_rows = 0;  // MoE layers x K per real row
    for (int padded = 0; padded < 2; ++padded) {
      Loaded f(4, 64);
      Model& m = *f.m;
      m.options().decode_bucket = padded ? 16 : 0;
      std::vector<std::vector<int32_t>> tables(3), prompts, next;
      std::vector<float> unused;
      for (std::size_t i = 0; i < 3; ++i) {
        m.cache().grow(tables[i], 9);
        const auto from = kPrompt.begin() + static_cast<std::ptrdiff_t>(i);
        prompts.emplace_back(from, from + 8);
        next.push_back({kPrompt[8 + i]});
        m.forward({SeqInput{prompts[i], 0, tables[i], LogitsWanted::none}}, unused);
      }
      std::vector<SeqInput> step;
      for (std::size_t i = 0; i < 3; ++i) step.push_back(SeqInput{next[i], 8, tables[i], LogitsWanted::last});
      m.forward(step, logits[padded]);
      counts[padded] = m.expert_counts();
      int64_t moe_layers = 0;
      for (int64_t l = 0; l < m.config().num_hidden_layers; ++l) moe_layers += m.config().is_moe_layer(l);
      routed_rows = moe_layers * m.config().num_experts_per_tok * 3;
    }
    ::unsetenv("DPA_MOE_FIXED_TOKENS");
    ASSERT_GT(routed_rows, 0);
    int64_t sum = 0;
    for (int64_t x : counts[0]) sum += x;
    EXPECT_EQ(sum, routed_rows) << "DPA_MOE_FIXED_TOKENS=" << fixed;
    EXPECT_EQ(counts[1], counts[0]) << "DPA_MOE_FIXED_TOKENS=" << fixed;
    EXPECT_LT(max_abs_diff(logits[1], logits[0]), 1e-5) << "DPA_MOE_FIXED_TOKENS=" << fixed;
  }
}

// launch() / collect(): a step launched before the previous one is collected takes that step's
// draws (argmax and sampled rows, and the decode padding's copies of its first row) where they
// are, and gives what forward() gives with the drawn tokens written out.
TEST(ModelForward, LaunchTakesThePreviousStepsDraws) {
  backend::SampleSpec spec;
  spec.temperature = 0.8f, spec.u = 0.3, spec.n_top = 2;
  const std::vector<backend::SampleSpec> specs = {spec};
  std::vector<std::vector<int32_t>> prompts;
  for (std::size_t i = 0; i < 3; ++i)
    prompts.emplace_back(kPrompt.begin() + static_cast<std::ptrdiff_t>(i), kPrompt.begin() + 8 + static_cast<std::ptrdiff_t>(i));
  // Sequence 1 is sampled, 0 and 2 greedy.
  auto prefill = [&](std::vector<std::vector<int32_t>>& tables) {
    std::vector<SeqInput> b;
    for (std::size_t i = 0; i < 3; ++i) b.push_back(SeqInput{prompts[i], 0, tables[i], LogitsWanted::last, i != 1});
    return b;
  };
  struct Out {
    std::vector<int32_t> argmax;
    std::vector<backend::SampleOut> samples;
    std::vector<int64_t> counts;
  };
  // The fixed-capacity experts keep their counts in backend memory: launch() brings each step's
  // along with its draws (the padded decode step's padding taken out again).
  ::setenv("DPA_MOE_FIXED_TOKENS", "64", 1);
  // Reference: forward() twice, the draws written into the decode step's inputs.
  Out ref[2];
  {
    Loaded f(4, 64);
    f.m->options().decode_bucket = 16;
    std::vector<std::vector<int32_t>> tables(3);
    for (auto& t : tables) f.m->cache().grow(t, 9);
    std::vector<float> none;
    const Sampling s0{specs, {}, &ref[0].samples};
    f.m->forward(prefill(tables), none, &ref[0].argmax, &s0);
    ref[0].counts = f.m->expert_counts();
    ASSERT_EQ(ref[0].argmax.size(), 3u);
    ASSERT_EQ(ref[0].samples.size(), 1u);
    std::vector<std::vector<int32_t>> next = {{ref[0].argmax[0]}, {ref[0].samples[0].token}, {ref[0].argmax[2]}};
    std::vector<SeqInput> step;
    for (std::size_t i = 0; i < 3; ++i) step.push_back(SeqInput{next[i], 8, tables[i], LogitsWanted::last, i != 1});
    const Sampling s1{specs, {}, &ref[1].samples};
    f.m->forward(step, none, &ref[1].argmax, &s1);
    ref[1].counts = f.m->expert_counts();
  }
  Loaded f(4, 64);
  ::unsetenv("DPA_MOE_FIXED_TOKENS");
  Model& m = *f.m;
  m.options().decode_bucket = 16;
  m.keep_expert_counts(true);
  std::vector<std::vector<int32_t>> tables(3);
  for (auto& t : tables) m.cache().grow(t, 9);
  const std::vector<int32_t> placeholder = {-1};
  std::vector<SeqInput> step;
  for (std::size_t i = 0; i < 3; ++i)
    step.push_back(SeqInput{placeholder, 8, tables[i], LogitsWanted::last, i != 1, static_cast<int32_t>(i)});
  EXPECT_THROW(m.collect(ref[0].argmax, ref[0].samples), Error);  // nothing launched
  EXPECT_THROW(m.launch(step, specs, {}), Error);                // no step drew before
  m.launch(prefill(tables), specs, {});
  m.launch(step, specs, {});  // before the first is collected
  std::vector<SeqInput> third = step;
  EXPECT_THROW(m.launch(third, specs, {}), Error);  // two in flight already
  Out got[2];
  m.collect(got[0].argmax, got[0].samples);
  got[0].counts = m.collected_expert_counts();
  m.collect(got[1].argmax, got[1].samples);
  got[1].counts = m.collected_expert_counts();
  for (int k = 0; k < 2; ++k) {
    EXPECT_EQ(got[k].counts, ref[k].counts) << "step " << k;
    int64_t sum = 0;
    for (int64_t x : got[k].counts) sum += x;
    EXPECT_GT(sum, 0) << "step " << k;
    EXPECT_EQ(got[k].argmax, ref[k].argmax) << "step " << k;
    ASSERT_EQ(got[k].samples.size(), 1u);
    EXPECT_EQ(got[k].samples[0].token, ref[k].samples[0].token) << "step " << k;
    EXPECT_EQ(got[k].samples[0].logprob, ref[k].samples[0].logprob) << "step " << k;
  }
  EXPECT_EQ(got[0].argmax[1], -1);
  // A row the previous step did not draw (beyond its rows) is refused.
  step.resize(1);
  step[0].prev_row = 3;
  EXPECT_THROW(m.launch(step, specs, {}), Error);
}

// launch_forward() / launch_sampling(): the sampling half, queued after the step before is
// collected, draws under edits and a mask written from that step's draws, as forward() does.
TEST(ModelForward, LaunchInHalvesTakesEditsAndMasksAfterTheStepBefore) {
  backend::SampleSpec spec;
  spec.temperature = 0.9f, spec.u = 0.6, spec.n_top = 3;
  const std::vector<backend::SampleSpec> specs = {spec, spec};
  const std::vector<int32_t> a(kPrompt.begin(), kPrompt.begin() + 8), b(kPrompt.begin() + 2, kPrompt.begin() + 10);
  std::vector<std::vector<int32_t>> tables(2);
  auto prefill = [&] {
    return std::vector<SeqInput>{{a, 0, tables[0], LogitsWanted::last}, {b, 0, tables[1], LogitsWanted::last}};
  };
  // The second step's edits and mask follow the first step's draws: the first row's token
  // banned by its mask (only ids below half the vocabulary otherwise), the second's pushed down.
  auto late = [&](const std::vector<backend::SampleOut>& first, int64_t V, std::vector<backend::LogitEdit>& edits,
                  std::vector<uint32_t>& bits) {
    edits = {{1, first[1].token, 1.0f, 4.0f}, {1, 5, 1.0f, -3.0f}};
    bits.assign(static_cast<std::size_t>(backend::token_mask_words(V)), 0);
    for (int32_t t = 0; t < V / 2; ++t)
      if (t != first[0].token) bits[static_cast<std::size_t>(t) >> 5] |= 1u << (t & 31);
  };
  const std::vector<int32_t> mask_rows = {0};
  std::vector<backend::SampleOut> ref[2];
  {
    Loaded f(4, 64);
    for (auto& t : tables) f.m->cache().grow(t, 9);
    const int64_t V = f.m->config().vocab_size;
    std::vector<float> none;
    std::vector<int32_t> am;
    const Sampling s0{specs, {}, &ref[0], {}};
    f.m->forward(prefill(), none, &am, &s0);
    ASSERT_EQ(ref[0].size(), 2u);
    const std::vector<int32_t> x = {ref[0][0].token}, y = {ref[0][1].token};
    std::vector<backend::LogitEdit> edits;
    std::vector<uint32_t> bits;
    late(ref[0], V, edits, bits);
    const Sampling s1{specs, edits, &ref[1], {mask_rows, bits}};
    f.m->forward({{x, 8, tables[0], LogitsWanted::last}, {y, 8, tables[1], LogitsWanted::last}}, none, &am, &s1);
    for (auto& t : tables) f.m->cache().release(t);
  }
  Loaded f(4, 64);
  Model& m = *f.m;
  for (auto& t : tables) m.cache().grow(t, 9);
  const int64_t V = m.config().vocab_size;
  const std::vector<int32_t> placeholder = {-1};
  EXPECT_THROW(m.launch_sampling(specs, {}), Error);  // no forward waiting for it
  m.launch(prefill(), specs, {});
  m.launch_forward({{placeholder, 8, tables[0], LogitsWanted::last, false, 0},
                    {placeholder, 8, tables[1], LogitsWanted::last, false, 1}});
  EXPECT_THROW(m.launch_forward(prefill()), Error);  // the one before is not sampled yet
  std::vector<int32_t> am;
  std::vector<backend::SampleOut> got[2];
  m.collect(am, got[0]);
  std::vector<backend::LogitEdit> edits;
  std::vector<uint32_t> bits;
  late(got[0], V, edits, bits);
  m.launch_sampling(specs, edits, {mask_rows, bits});
  m.collect(am, got[1]);
  for (int k = 0; k < 2; ++k) {
    ASSERT_EQ(got[k].size(), 2u);
    for (std::size_t r = 0; r < 2; ++r) {
      EXPECT_EQ(got[k][r].token, ref[k][r].token) << "step " << k << " row " << r;
      EXPECT_EQ(got[k][r].logprob, ref[k][r].logprob) << "step " << k << " row " << r;
    }
  }
  EXPECT_LT(got[1][0].token, V / 2);
  EXPECT_NE(got[1][0].token, got[0][0].token);
}

// Decode graphs asked of a backend that records none (the CPU): the first recording is refused,
// graphs turn off, and the steps, padded to the graphs' bucket over the fixed-capacity experts
// that come with them, give the eager model's logits and expert statistics.
TEST(ModelForward, GraphsOnABackendWithoutThemRunEager) {
  std::vector<float> logits[2];
  std::vector<int64_t> counts[2];
  for (int graphs = 0; graphs < 2; ++graphs) {
    Loaded f(4, 64, AttentionForm::automatic, false, graphs ? 64 : 0);
    Model& m = *f.m;
    EXPECT_EQ(m.options().decode_bucket, graphs ? 16 : 0);
    std::vector<std::vector<int32_t>> tables(3);
    std::vector<float> unused, out;
    for (std::size_t i = 0; i < 3; ++i) {
      m.cache().grow(tables[i], 11);
      const auto from = kPrompt.begin() + static_cast<std::ptrdiff_t>(i);
      m.forward({SeqInput{std::vector<int32_t>(from, from + 8), 0, tables[i], LogitsWanted::none}}, unused);
    }
    for (int64_t pos = 8; pos < 11; ++pos) {  // three decode steps of the same shape: the second records
      std::vector<std::vector<int32_t>> next(3);
      std::vector<SeqInput> step;
      for (std::size_t i = 0; i < 3; ++i) {
        next[i] = {kPrompt[(static_cast<std::size_t>(pos) + i) % kPrompt.size()]};
        step.push_back(SeqInput{next[i], pos, tables[i], LogitsWanted::last});
      }
      m.forward(step, out);
      logits[graphs].insert(logits[graphs].end(), out.begin(), out.end());
      const auto& c = m.expert_counts();
      counts[graphs].insert(counts[graphs].end(), c.begin(), c.end());
    }
    EXPECT_EQ(m.graph_stats().recorded, 0);
    EXPECT_EQ(m.graph_stats().replayed, 0);
    EXPECT_EQ(m.graph_stats().failed, graphs ? 1 : 0);
  }
  ASSERT_FALSE(logits[0].empty());
  EXPECT_LT(max_abs_diff(logits[1], logits[0]), 1e-5);
  EXPECT_EQ(counts[1], counts[0]);
}

TEST(ModelForward, RefusesShortPageTableAndLongPositions) {
  Loaded f(4, 8);
  Model& m = *f.m;
  std::vector<int32_t> table;
  m.cache().grow(table, 4);  // one page for 12 tokens
  std::vector<float> logits;
  EXPECT_THROW(m.forward({SeqInput{kPrompt, 0, table, LogitsWanted::last}}, logits), dpa::Error);
  EXPECT_THROW(m.forward({SeqInput{kPrompt, m.config().max_position_embeddings - 2, table}}, logits),
               dpa::Error);
  // An empty batch is valid (idle ranks still run the step).
  m.forward({}, logits);
  EXPECT_TRUE(logits.empty());
  // A cache view of a layer the cache does not have.
  EXPECT_THROW(m.cache().view(m.config().num_hidden_layers, nullptr), dpa::Error);
  EXPECT_THROW(m.cache().view(-1, nullptr), dpa::Error);
  EXPECT_NO_THROW(m.cache().view(m.config().num_hidden_layers - 1, nullptr));
}

// DPA_PROFILE_DECODE_STEP names a pure decode step for an outside profiler: anything but a step
// number from 1 is refused when the model is built; a window (a no-op on the CPU) changes no
// logits.
TEST(ModelForward, ProfileDecodeStepIsCheckedAndChangesNothing) {
  for (const char* bad : {"0", "-3", "two", "", "5x"}) {
    ::setenv("DPA_PROFILE_DECODE_STEP", bad, 1);
    EXPECT_THROW({ Loaded f(4, 16); }, Error) << "DPA_PROFILE_DECODE_STEP='" << bad << "'";
  }
  std::vector<float> logits[2];
  for (int window = 0; window < 2; ++window) {
    if (window) ::setenv("DPA_PROFILE_DECODE_STEP", "2", 1);
    else ::unsetenv("DPA_PROFILE_DECODE_STEP");
    Loaded f(4, 16);
    Model& m = *f.m;
    std::vector<int32_t> table;
    m.cache().grow(table, 11);
    std::vector<float> step;
    const std::vector<int32_t> prompt(kPrompt.begin(), kPrompt.begin() + 8);
    m.forward({SeqInput{prompt, 0, table, LogitsWanted::last}}, step);
    for (int64_t p = 8; p < 11; ++p) {  // decode steps 1, 2 (the window), 3
      const std::vector<int32_t> token = {kPrompt[static_cast<std::size_t>(p)]};
      m.forward({SeqInput{token, p, table, LogitsWanted::last}}, step);
      logits[window].insert(logits[window].end(), step.begin(), step.end());
    }
  }
  ::unsetenv("DPA_PROFILE_DECODE_STEP");
  ASSERT_FALSE(logits[0].empty());
  EXPECT_EQ(logits[1], logits[0]);
}

// V2 (no q_lora): q_proj's and kv_a_proj's rows are one matrix, the two views its rows, with the
// checkpoint's values; a decode step projects both in one product (DPA_FUSE_Q_KV_A=0: apart),
// with the same logits.
TEST(ModelForward, FusedQKvAProjection) {
  ASSERT_FALSE(v2_fixture_dir().empty());
  const auto ckpt = Checkpoint::open(v2_fixture_dir());
  const ModelConfig& c = ckpt->config();
  ASSERT_EQ(c.q_lora_rank, 0);
  ModelWeights w(*ckpt, ShardSpec{});
  const int64_t q_rows = c.num_attention_heads * c.qk_head_dim(), kv_rows = c.kv_lora_rank + c.qk_rope_head_dim;
  for (const LayerWeights& lw : w.layers) {
    ASSERT_NE(lw.q_kv_a.data, nullptr);
    EXPECT_EQ(lw.q_kv_a.rows, q_rows + kv_rows);
    EXPECT_EQ(lw.q_proj.data, lw.q_kv_a.data);
    EXPECT_EQ(lw.q_proj.rows, q_rows);
    EXPECT_EQ(lw.kv_a_proj.rows, kv_rows);
  }
  const std::vector<float> q0 = ckpt->read_f32("model.layers.1.self_attn.q_proj.weight");
  const std::vector<float> kv0 = ckpt->read_f32("model.layers.1.self_attn.kv_a_proj_with_mqa.weight");
  const LayerWeights& l1 = w.layers[1];
  for (int64_t r : {int64_t{0}, q_rows - 1})
    for (int64_t k : {int64_t{0}, c.hidden_size - 1})
      EXPECT_EQ(l1.q_proj.at(r, k), q0[static_cast<std::size_t>(r * c.hidden_size + k)]);
  for (int64_t r : {int64_t{0}, kv_rows - 1})
    for (int64_t k : {int64_t{0}, c.hidden_size - 1})
      EXPECT_EQ(l1.kv_a_proj.at(r, k), kv0[static_cast<std::size_t>(r * c.hidden_size + k)]);
  // In a shard of the heads too (attn_tp 2, rank 1: the second half of q_proj's rows).
  ModelWeights half(*ckpt, ShardSpec{2, 1, 1, 0});
  EXPECT_EQ(half.layers[1].q_proj.rows, q_rows / 2);
  EXPECT_EQ(half.layers[1].q_proj.at(0, 3), q0[static_cast<std::size_t>((q_rows / 2) * c.hidden_size + 3)]);
  EXPECT_EQ(half.layers[1].kv_a_proj.at(2, 5), kv0[static_cast<std::size_t>(2 * c.hidden_size + 5)]);

  ::setenv("DPA_FUSE_Q_KV_A", "2", 1);
  EXPECT_THROW({ Loaded f(4, 16, AttentionForm::automatic, false, 0, v2_fixture_dir()); }, Error);
  std::vector<float> logits[2];
  for (int fuse = 0; fuse < 2; ++fuse) {
    ::setenv("DPA_FUSE_Q_KV_A", fuse ? "1" : "0", 1);
    Loaded f(4, 16, AttentionForm::automatic, false, 0, v2_fixture_dir());
    Model& m = *f.m;
    std::vector<int32_t> ta, tb;
    m.cache().grow(ta, 11), m.cache().grow(tb, 11);
    std::vector<float> step;
    const std::vector<int32_t> pa(kPrompt.begin(), kPrompt.begin() + 8), pb(kPrompt.begin() + 1, kPrompt.begin() + 9);
    m.forward({SeqInput{pa, 0, ta, LogitsWanted::last}, SeqInput{pb, 0, tb, LogitsWanted::last}}, step);
    for (int64_t p = 8; p < 11; ++p) {  // decode steps of two sequences
      const std::vector<int32_t> a = {kPrompt[static_cast<std::size_t>(p)]}, b = {kPrompt[static_cast<std::size_t>(p - 5)]};
      m.forward({SeqInput{a, p, ta, LogitsWanted::last}, SeqInput{b, p, tb, LogitsWanted::last}}, step);
      logits[fuse].insert(logits[fuse].end(), step.begin(), step.end());
    }
  }
  ::unsetenv("DPA_FUSE_Q_KV_A");
  ASSERT_EQ(logits[0].size(), 3u * 2u * static_cast<std::size_t>(c.vocab_size));
  EXPECT_LT(max_abs_diff(logits[1], logits[0]), 1e-6);
}

}  // namespace
}  // namespace dpa::model
