// Issue 6, target 2: the routed experts' grouped GEMMs (moe_experts: gate and up, SwiGLU, down per
// expert) in DeepSeek-V2-Lite's shapes (hidden 2048, expert width 1408, bf16 weights, fp32
// activations) on one GPU, for EP 1 (64 local experts) and EP 2 (32), at 256 and 8192 tokens per
// GPU with top-6 routing spread uniformly at random over the experts (each GPU gets tokens x 6 rows
// either way; at EP 1 the experts read them from the tokens, x_div 6, as the engine does). The
// forms: `grouped` (moe_experts as the engine runs it: host counts, the choice below by rows an
// expert), `cublas` (moe_experts with DPA_MOE_WGMMA=0: cuBLAS batched GEMMs over padded groups),
// `wgmma` (DPA_MOE_WGMMA=1: the warpgroup-MMA kernels over compact rows) and `fixed`
// (moe_experts_fixed: counts in device memory, the capacity the tokens rounded up to 16, as a
// decode step without a host trip runs it). First checks them against the CPU reference on a few
// of the same experts, then times them (CUDA events, median of --reps after warm-up) and prints
// them against both floors measured in the same process: the weight bytes over the copy bandwidth
// (the small-batch floor) and the FLOPs over cuBLAS's bf16 GEMM rate (the large-batch floor).
// The results are written in bf16, as the engine's local experts write them for bf16 weights
// (--results f32: in f32, as every run before this option timed them).
//   moe_experts_bench [--reps N] [--tokens N,N...] [--forms F,F...] [--results bf16|f32] [--json]
//   (tokens: default 256,8192; forms: default grouped,cublas,wgmma,fixed, timed in that order)
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "core/dtype.h"
#include "gpu_ceilings.h"

namespace {

using dpa::DType;
using dpa::backend::Backend;
using dpa::backend::Buffer;
using dpa::backend::WeightView;

constexpr int64_t kD = 2048, kI = 1408, kTopK = 6, kMaxExperts = 64;

struct Experts {  // views of the experts on one backend: gate, up (I x D), down (D x I)
  std::vector<WeightView> gate, up, down;   // prepared on a backend
};

// Random bf16 expert weights, scaled so that activations stay O(1).
std::vector<std::vector<uint16_t>> make_weights(int64_t n_experts, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-0.03f, 0.03f);
  std::vector<std::vector<uint16_t>> w(static_cast<std::size_t>(3 * n_experts));
  for (auto& m : w) {
    m.resize(static_cast<std::size_t>(kI * kD));
    for (auto& v : m) v = dpa::f32_to_bf16(u(rng));
  }
  return w;
}

void prepare(Backend& be, const std::vector<std::vector<uint16_t>>& w, int64_t n_experts, Experts& e) {
  for (int64_t x = 0; x < n_experts; ++x) {
    e.gate.push_back(be.prepare_weight(WeightView::dense(w[3 * x].data(), DType::bf16, kI, kD)));
    e.up.push_back(be.prepare_weight(WeightView::dense(w[3 * x + 1].data(), DType::bf16, kI, kD)));
    e.down.push_back(be.prepare_weight(WeightView::dense(w[3 * x + 2].data(), DType::bf16, kD, kI)));
  }
}

// The CUDA op on experts 0 and 1 (5 and 3 rows) against the CPU reference, in both forms (host
// counts, and counts in device memory with a capacity); then on experts 0..2 with 200, 0 and 129
// rows on `wg` (DPA_MOE_WGMMA=1: two partial 128-row tiles and a full one); the largest max
// relative error.
double check(Backend& cpu, Backend& gpu, Backend& wg, const std::vector<std::vector<uint16_t>>& w, std::mt19937& rng) {
  Experts ec, eg;
  prepare(cpu, w, 2, ec);
  prepare(gpu, w, 2, eg);
  const std::vector<int64_t> counts = {5, 3};
  const int64_t rows = 8;
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(rows * kD)), ref(x.size()), got(x.size());
  for (auto& v : x) v = u(rng);
  std::vector<int32_t> order = {3, 0, 6, 1, 7, 2, 5, 4};
  cpu.moe_experts(x.data(), order.data(), 1, counts.data(), 2, ec.gate.data(), ec.up.data(), ec.down.data(), ref.data());
  Buffer<float> gx(gpu, x.size()), gout(gpu, x.size());
  Buffer<int32_t> gord(gpu, order.size());
  gpu.upload(gx.data(), x.data(), x.size() * 4);
  gpu.upload(gord.data(), order.data(), order.size() * 4);
  gpu.fill_zero(gout.data(), x.size() * 4);
  auto rel = [&] {
    gpu.download(got.data(), gout.data(), got.size() * 4);
    return dpa::perf::max_rel_error(got.data(), ref.data(), ref.size());
  };
  gpu.moe_experts(gx.data(), gord.data(), 1, counts.data(), 2, eg.gate.data(), eg.up.data(), eg.down.data(), gout.data());
  const double grouped = rel();
  Buffer<int64_t> gcounts(gpu, counts.size());
  gpu.upload(gcounts.data(), counts.data(), counts.size() * 8);
  gpu.fill_zero(gout.data(), x.size() * 4);
  gpu.moe_experts_fixed(gx.data(), gord.data(), 1, gcounts.data(), 2, 16, rows, eg.gate.data(), eg.up.data(),
                        eg.down.data(), gout.data());
  const double fixed = rel();
  // The same in bf16 results, widened.
  Buffer<uint16_t> gb(gpu, x.size());
  std::vector<uint16_t> bits(x.size());
  gpu.moe_experts_fixed(gx.data(), gord.data(), 1, gcounts.data(), 2, 16, rows, eg.gate.data(), eg.up.data(),
                        eg.down.data(), gb.data(), DType::bf16, rows);
  gpu.download(bits.data(), gb.data(), bits.size() * 2);
  for (std::size_t i = 0; i < bits.size(); ++i) got[i] = dpa::bf16_to_f32(bits[i]);
  const double fixed_bf16 = dpa::perf::max_rel_error(got.data(), ref.data(), ref.size());

  Experts ec3, eg3;
  prepare(cpu, w, 3, ec3);
  prepare(wg, w, 3, eg3);
  const std::vector<int64_t> counts3 = {200, 0, 129};
  const int64_t rows3 = 329;
  std::vector<float> x3(static_cast<std::size_t>(rows3 * kD)), ref3(x3.size()), got3(x3.size());
  for (auto& v : x3) v = u(rng);
  std::vector<int32_t> order3(static_cast<std::size_t>(rows3));
  std::iota(order3.begin(), order3.end(), 0);
  std::shuffle(order3.begin(), order3.end(), rng);
  cpu.moe_experts(x3.data(), order3.data(), 1, counts3.data(), 3, ec3.gate.data(), ec3.up.data(), ec3.down.data(),
                  ref3.data());
  Buffer<float> wx(wg, x3.size()), wout(wg, x3.size());
  Buffer<int32_t> word(wg, order3.size());
  wg.upload(wx.data(), x3.data(), x3.size() * 4);
  wg.upload(word.data(), order3.data(), order3.size() * 4);
  wg.fill_zero(wout.data(), x3.size() * 4);
  wg.moe_experts(wx.data(), word.data(), 1, counts3.data(), 3, eg3.gate.data(), eg3.up.data(), eg3.down.data(),
                 wout.data());
  wg.download(got3.data(), wout.data(), got3.size() * 4);
  const double wgmma = dpa::perf::max_rel_error(got3.data(), ref3.data(), ref3.size());
  // And the warpgroup-MMA form's bf16 results (rounded in its epilogue).
  Buffer<uint16_t> wb(wg, x3.size());
  std::vector<uint16_t> bits3(x3.size());
  wg.moe_experts(wx.data(), word.data(), 1, counts3.data(), 3, eg3.gate.data(), eg3.up.data(), eg3.down.data(),
                 wb.data(), DType::bf16, rows3);
  wg.download(bits3.data(), wb.data(), bits3.size() * 2);
  for (std::size_t i = 0; i < bits3.size(); ++i) got3[i] = dpa::bf16_to_f32(bits3[i]);
  const double wgmma_bf16 = dpa::perf::max_rel_error(got3.data(), ref3.data(), ref3.size());
  return std::max({grouped, fixed, wgmma, fixed_bf16, wgmma_bf16});
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 20;
  bool json = false;
  std::vector<int64_t> token_counts{256, 8192};
  std::vector<std::string> forms{"grouped", "cublas", "wgmma", "fixed"};
  DType results = DType::bf16;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reps" && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--results" && i + 1 < argc) {
      const std::string r = argv[++i];
      if (r != "bf16" && r != "f32") {
        std::fprintf(stderr, "moe_experts_bench: --results: '%s' is not bf16 or f32\n", r.c_str());
        return 2;
      }
      results = r == "bf16" ? DType::bf16 : DType::f32;
    }
    else if (a == "--json") json = true;
    else if (a == "--tokens" && i + 1 < argc) {
      token_counts.clear();
      for (const std::string& t : dpa::perf::split_list(argv[++i])) {
        const long long v = std::atoll(t.c_str());
        if (v <= 0) {
          std::fprintf(stderr, "moe_experts_bench: --tokens: '%s' is not a positive count\n", t.c_str());
          return 2;
        }
        token_counts.push_back(v);
      }
    } else if (a == "--forms" && i + 1 < argc) {
      forms = dpa::perf::split_list(argv[++i]);
      for (const std::string& f : forms)
        if (f != "grouped" && f != "cublas" && f != "wgmma" && f != "fixed") {
          std::fprintf(stderr, "moe_experts_bench: --forms: '%s' is not grouped, cublas, wgmma or fixed\n", f.c_str());
          return 2;
        }
    } else {
      std::fprintf(stderr,
                   "usage: moe_experts_bench [--reps N] [--tokens N,N...] [--forms F,F...] [--results bf16|f32] "
                   "[--json]\n");
      return 2;
    }
  }
  cudaDeviceProp prop{};
  if (!dpa::perf::first_gpu("moe_experts_bench", prop)) return 77;
  auto cpu = dpa::backend::make_cpu_backend();
  auto gpu = dpa::backend::make_cuda_backend(0);
  auto with_env = [](const char* value) {  // a backend with DPA_MOE_WGMMA=value
    setenv("DPA_MOE_WGMMA", value, 1);
    auto be = dpa::backend::make_cuda_backend(0);
    unsetenv("DPA_MOE_WGMMA");
    return be;
  };
  auto gpu_cublas = with_env("0"), gpu_wgmma = with_env("1");
  const double bw = gpu->copy_bandwidth_gbs(), gemm = dpa::perf::bf16_gemm_tflops();
  std::mt19937 rng(11);
  const auto w = make_weights(kMaxExperts, rng);
  const double rel = check(*cpu, *gpu, *gpu_wgmma, w, rng);
  const bool ok = rel <= 2e-2;
  std::printf("moe_experts_bench on %s: copy %.0f GB/s, bf16 GEMM %.0f TFLOP/s (8192^3, cuBLAS); %s results; "
              "check vs CPU: max rel %.2e (bound 2e-2) %s\n",
              prop.name, bw, gemm, std::string(dpa::dtype_name(results)).c_str(), rel, ok ? "OK" : "FAIL");
  if (!ok) return 1;
  Experts e;
  prepare(*gpu, w, kMaxExperts, e);
  std::printf("%-4s %-7s %-6s %-6s %-9s %-11s %-9s %-11s %s\n", "EP", "tokens", "rows", "form", "ms", "weight GB/s",
              "of HBM", "TFLOP/s", "of GEMM");
  for (int ep : {1, 2})
    for (int64_t tokens : token_counts) {
      const int64_t E = kMaxExperts / ep, rows = tokens * kTopK;
      std::vector<int64_t> counts(static_cast<std::size_t>(E), 0);
      std::uniform_int_distribution<int64_t> pick(0, E - 1);
      for (int64_t r = 0; r < rows; ++r) ++counts[static_cast<std::size_t>(pick(rng))];
      int64_t active = 0;
      for (int64_t c : counts) active += c > 0;
      std::vector<int32_t> order(static_cast<std::size_t>(rows));
      std::iota(order.begin(), order.end(), 0);
      std::shuffle(order.begin(), order.end(), rng);
      // EP 1: the experts read the tokens by slot (x_div = top-k), as the engine's local experts
      // do; EP 2: the rows an exchange delivered, one per slot.
      const int64_t x_div = ep == 1 ? kTopK : 1;
      std::vector<float> x(static_cast<std::size_t>(rows / x_div * kD));
      std::uniform_real_distribution<float> u(-1.0f, 1.0f);
      for (auto& v : x) v = u(rng);
      Buffer<float> gx(*gpu, x.size()), gout(*gpu, static_cast<std::size_t>(rows * kD));  // f32 rows fit bf16 ones
      Buffer<int32_t> gord(*gpu, order.size());
      gpu->upload(gx.data(), x.data(), x.size() * 4);
      gpu->upload(gord.data(), order.data(), order.size() * 4);
      Buffer<int64_t> gcounts(*gpu, counts.size());
      gpu->upload(gcounts.data(), counts.data(), counts.size() * 8);
      gpu->synchronize();
      // grouped: host counts, cuBLAS batched GEMMs over padded groups; fixed: counts in device
      // memory, every expert's capacity the tokens rounded up to 16 (what a decode step without a
      // host trip gives it).
      const int64_t capacity = (tokens + 15) / 16 * 16;
      for (const std::string& f : forms) {
        const char* form = f.c_str();
        Backend& be = f == "cublas" ? *gpu_cublas : f == "wgmma" ? *gpu_wgmma : *gpu;
        const double ms = dpa::perf::median_ms(
            [&] {
              if (f == "fixed")
                be.moe_experts_fixed(gx.data(), gord.data(), x_div, gcounts.data(), E, capacity, rows, e.gate.data(),
                                     e.up.data(), e.down.data(), gout.data(), results, rows);
              else
                be.moe_experts(gx.data(), gord.data(), x_div, counts.data(), E, e.gate.data(), e.up.data(),
                               e.down.data(), gout.data(), results, rows);
            },
            reps, 3, static_cast<cudaStream_t>(be.stream()));
        const double weight_bytes = static_cast<double>(active) * 3.0 * kD * kI * 2.0;
        const double flops = 2.0 * static_cast<double>(rows) * 3.0 * kD * kI;
        const double gbs = weight_bytes / (ms * 1e-3) / 1e9, tf = flops / (ms * 1e-3) / 1e12;
        std::printf("%-4d %-7lld %-6lld %-6s %-9.3f %-11.0f %-8.1f%% %-11.1f %.1f%%\n", ep,
                    static_cast<long long>(tokens), static_cast<long long>(rows), form, ms, gbs, 100.0 * gbs / bw, tf,
                    100.0 * tf / gemm);
        if (json)
          std::printf("{\"bench\":\"moe_experts\",\"form\":\"%s\",\"results\":\"%s\",\"gpu\":\"%s\",\"ep\":%d,\"experts\":%lld,"
                      "\"tokens\":%lld,\"rows\":%lld,\"ms\":%.4f,\"weight_gbs\":%.1f,\"hbm_gbs\":%.1f,\"tflops\":%.2f,"
                      "\"gemm_tflops\":%.1f}\n",
                      form, std::string(dpa::dtype_name(results)).c_str(), prop.name, ep, static_cast<long long>(E),
                      static_cast<long long>(tokens),
                      static_cast<long long>(rows), ms, gbs, bw, tf, gemm);
      }
    }
  return 0;
}
