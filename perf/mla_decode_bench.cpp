// Issue 6, target 1: batched MLA paged decode attention (absorbed, latent 512 + rope 64) on one
// GPU against the HBM floor. Per shape: checks a few sequences against the CPU reference first
// (the same bf16-rounded cache and queries on the CPU in f32), then times the CUDA backend's
// mla_decode with CUDA events (warm-up, median of --reps), and prints the bytes it must read
// (the cache rows of every sequence, once), the achieved rate, and that rate over the measured
// device-to-device copy bandwidth. FLOP/s counts QK (latent + rope) and PV per head.
// --stages times the bf16 kernel at several load-ring depths (DPA_CUDA_MLA_DECODE_STAGES),
// --loads with its tiles loaded either way (DPA_CUDA_MLA_DECODE_LOAD: bulk, cp.async), --mma on
// the mma.sync kernel or the warpgroup-MMA one (DPA_CUDA_MLA_DECODE_MMA: auto, wgmma, mma), --form
// with the latter's forms (DPA_CUDA_MLA_WGMMA_FORM: seesaw, cp.async); --shapes picks the batches (sequences x context x heads).
// --calls N times N calls back to back between the events and reports the time a call: the host's
// part of a call (its launch) then overlaps the previous call's kernel, as in a CUDA graph's
// replay; with the default 1 each timed call starts on an idle GPU and the host's part shows.
//   mla_decode_bench [--reps N] [--calls N] [--kv f32|bf16|both] [--stages 2,3] [--loads bulk,cp.async]
//                    [--mma auto,wgmma,mma] [--form seesaw,cp.async] [--shapes 128x4096x128,...]
//                    [--json]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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
using dpa::backend::PagedBatch;

using dpa::perf::split_list;

struct Shape {
  int64_t seqs, ctx, heads;
};

// "128x4096x128,64x2048x16" -> shapes; false (usage) on anything else.
bool parse_shapes(const std::string& arg, std::vector<Shape>& out) {
  std::vector<Shape> v;
  for (const std::string& item : split_list(arg)) {
    long long s = 0, c = 0, h = 0;
    char tail = 0;
    if (std::sscanf(item.c_str(), "%lldx%lldx%lld%c", &s, &c, &h, &tail) != 3 || s < 1 || c < 1 || h < 1) return false;
    v.push_back({s, c, h});
  }
  if (v.empty()) return false;
  out = v;
  return true;
}

struct Result {
  bool ok;
  double max_err, ms;
};

Result run(Backend& cpu, Backend& gpu, const Shape& sh, DType kv, int reps, int calls, std::mt19937& rng) {
  const int64_t page = 64, L = 512, R = 64, W = L + R;
  const int64_t per = (sh.ctx + page - 1) / page, n_pages = sh.seqs * per;
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  // Cache values and queries, rounded to bf16 (exact in either cache type).
  std::vector<float> pool(static_cast<std::size_t>(n_pages * page * W));
  for (auto& x : pool) x = dpa::bf16_to_f32(dpa::f32_to_bf16(u(rng)));
  std::vector<float> ql(static_cast<std::size_t>(sh.seqs * sh.heads * L)), qp(static_cast<std::size_t>(sh.seqs * sh.heads * R));
  for (auto& x : ql) x = dpa::bf16_to_f32(dpa::f32_to_bf16(u(rng)));
  for (auto& x : qp) x = dpa::bf16_to_f32(dpa::f32_to_bf16(u(rng)));
  std::vector<int32_t> table(static_cast<std::size_t>(n_pages)), off(static_cast<std::size_t>(sh.seqs)),
      len(static_cast<std::size_t>(sh.seqs), static_cast<int32_t>(sh.ctx));
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), rng);
  for (int64_t s = 0; s < sh.seqs; ++s) off[static_cast<std::size_t>(s)] = static_cast<int32_t>(s * per);

  const std::size_t esz = dpa::dtype_size(kv);
  Buffer<unsigned char> gpool(gpu, pool.size() * esz);
  if (kv == DType::bf16) {
    std::vector<uint16_t> b(pool.size());
    for (std::size_t i = 0; i < b.size(); ++i) b[i] = dpa::f32_to_bf16(pool[i]);
    gpu.upload(gpool.data(), b.data(), b.size() * 2);
  } else {
    gpu.upload(gpool.data(), pool.data(), pool.size() * 4);
  }
  Buffer<float> gql(gpu, ql.size()), gqp(gpu, qp.size()), gout(gpu, ql.size());
  Buffer<int32_t> gtab(gpu, table.size()), goff(gpu, off.size()), glen(gpu, len.size());
  gpu.upload(gql.data(), ql.data(), ql.size() * 4);
  gpu.upload(gqp.data(), qp.data(), qp.size() * 4);
  gpu.upload(gtab.data(), table.data(), table.size() * 4);
  gpu.upload(goff.data(), off.data(), off.size() * 4);
  gpu.upload(glen.data(), len.data(), len.size() * 4);
  PagedBatch pb;
  pb.base = gpool.data(), pb.pages = gtab.data(), pb.table_offset = goff.data(), pb.ctx_len = glen.data();
  pb.n_seqs = sh.seqs, pb.page_size = page, pb.kv_lora = L, pb.rope_dim = R, pb.max_ctx_len = sh.ctx, pb.dtype = kv;
  const float scale = 1.0f / std::sqrt(192.0f);

  // Check: the first few sequences against the CPU reference on the same values.
  const int64_t n_check = std::min<int64_t>(sh.seqs, 3);
  gpu.mla_decode(gql.data(), gqp.data(), sh.heads, pb, scale, gout.data());
  std::vector<float> got(ql.size());
  gpu.download(got.data(), gout.data(), got.size() * 4);
  PagedBatch cb = pb;
  cb.base = pool.data(), cb.pages = table.data(), cb.table_offset = off.data(), cb.ctx_len = len.data();
  cb.n_seqs = n_check, cb.dtype = DType::f32;
  std::vector<float> ref(static_cast<std::size_t>(n_check * sh.heads * L));
  cpu.mla_decode(ql.data(), qp.data(), sh.heads, cb, scale, ref.data());
  const double rel = dpa::perf::max_rel_error(got.data(), ref.data(), ref.size());
  const bool ok = rel <= (kv == DType::bf16 ? 1e-2 : 1e-4);

  const double ms = dpa::perf::median_ms(
                        [&] {
                          for (int c = 0; c < calls; ++c) gpu.mla_decode(gql.data(), gqp.data(), sh.heads, pb, scale, gout.data());
                        },
                        reps, 3, static_cast<cudaStream_t>(gpu.stream())) /
                    calls;
  return Result{ok, rel, ms};
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 20, calls = 1;
  bool json = false;
  std::string kv_arg = "both";
  std::vector<std::string> stages = {"2"}, loads = {""}, mmas = {""}, forms = {""};
  std::vector<Shape> shapes = {{128, 4096, 16}, {128, 4096, 128}, {512, 1536, 16}, {64, 2048, 16}, {1, 4096, 16}};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reps" && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--calls" && i + 1 < argc) calls = std::max(1, std::atoi(argv[++i]));
    else if (a == "--kv" && i + 1 < argc) kv_arg = argv[++i];
    else if (a == "--json") json = true;
    else if (a == "--stages" && i + 1 < argc) stages = split_list(argv[++i]);
    else if (a == "--loads" && i + 1 < argc) loads = split_list(argv[++i]);
    else if (a == "--mma" && i + 1 < argc) mmas = split_list(argv[++i]);
    else if (a == "--form" && i + 1 < argc) forms = split_list(argv[++i]);
    else if (a == "--shapes" && i + 1 < argc && parse_shapes(argv[++i], shapes)) continue;
    else {
      std::fprintf(stderr,
                   "usage: mla_decode_bench [--reps N] [--calls N] [--kv f32|bf16|both] [--stages 2,3] [--loads bulk,cp.async]\n"
                   "                        [--mma auto,wgmma,mma] [--form seesaw,cp.async]\n"
                   "                        [--shapes 128x4096x128,...] [--json]\n");
      return 2;
    }
  }
  cudaDeviceProp prop{};
  if (!dpa::perf::first_gpu("mla_decode_bench", prop)) return 77;
  auto cpu = dpa::backend::make_cpu_backend();
  const double bw = dpa::backend::make_cuda_backend(0)->copy_bandwidth_gbs();
  std::printf("mla_decode_bench on %s: measured copy bandwidth %.0f GB/s (the floor's denominator)\n", prop.name, bw);
  std::printf("%-24s %-22s %-10s %-9s %-10s %-8s %-10s %s\n", "kv", "seqs x ctx x heads", "max rel", "ms", "GB/s",
              "of HBM", "TFLOP/s", "check");
  struct Kind {
    DType kv;
    std::string stages, load, mma, form, label;
  };
  std::vector<Kind> kinds;
  if (kv_arg == "f32" || kv_arg == "both") kinds.push_back({DType::f32, "", "", "", "", "f32"});
  if (kv_arg == "bf16" || kv_arg == "both")
    for (const std::string& mm : mmas)
      for (const std::string& fm : forms)
        for (const std::string& ld : loads)
          for (const std::string& st : stages)
            kinds.push_back({DType::bf16, st, ld, mm, fm,
                             (ld.empty() ? "bf16" : ld) + " s" + st + (mm.empty() ? "" : " " + mm) +
                                 (fm.empty() ? "" : " " + fm)});
  std::mt19937 rng(7);
  int failed = 0;
  for (const Kind& k : kinds) {
    if (!k.stages.empty()) setenv("DPA_CUDA_MLA_DECODE_STAGES", k.stages.c_str(), 1);
    if (!k.load.empty()) setenv("DPA_CUDA_MLA_DECODE_LOAD", k.load.c_str(), 1);
    if (!k.mma.empty()) setenv("DPA_CUDA_MLA_DECODE_MMA", k.mma.c_str(), 1);
    if (!k.form.empty()) setenv("DPA_CUDA_MLA_WGMMA_FORM", k.form.c_str(), 1);
    auto gpu = dpa::backend::make_cuda_backend(0);
    unsetenv("DPA_CUDA_MLA_DECODE_STAGES");
    unsetenv("DPA_CUDA_MLA_DECODE_LOAD");
    unsetenv("DPA_CUDA_MLA_DECODE_MMA");
    unsetenv("DPA_CUDA_MLA_WGMMA_FORM");
    const DType kv = k.kv;
    for (const Shape& sh : shapes) {
      const Result r = run(*cpu, *gpu, sh, kv, reps, calls, rng);
      const double bytes = static_cast<double>(sh.seqs * sh.ctx * 576) * static_cast<double>(dpa::dtype_size(kv));
      const double gbs = bytes / (r.ms * 1e-3) / 1e9;
      const double flops = 2.0 * static_cast<double>(sh.seqs * sh.ctx * sh.heads) * (576 + 512);
      const double tf = flops / (r.ms * 1e-3) / 1e12;
      char shape[64];
      std::snprintf(shape, sizeof shape, "%lld x %lld x %lld", static_cast<long long>(sh.seqs),
                    static_cast<long long>(sh.ctx), static_cast<long long>(sh.heads));
      std::printf("%-24s %-22s %-10.2e %-9.3f %-10.0f %-7.1f%% %-10.1f %s\n", k.label.c_str(),
                  shape, r.max_err, r.ms, gbs, 100.0 * gbs / bw, tf, r.ok ? "OK" : "FAIL");
      if (json)
        std::printf("{\"bench\":\"mla_decode\",\"gpu\":\"%s\",\"kv\":\"%s\",\"seqs\":%lld,\"ctx\":%lld,\"heads\":%lld,"
                    "\"ms\":%.4f,\"gbs\":%.1f,\"hbm_gbs\":%.1f,\"tflops\":%.2f,\"max_rel_err\":%.3e,\"ok\":%s}\n",
                    prop.name, k.label.c_str(), static_cast<long long>(sh.seqs),
                    static_cast<long long>(sh.ctx), static_cast<long long>(sh.heads), r.ms, gbs, bw, tf, r.max_err,
                    r.ok ? "true" : "false");
      failed += !r.ok;
    }
  }
  return failed ? 1 : 0;
}
