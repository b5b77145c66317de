// Op-by-op parity of the CUDA backend against the CPU reference (in the style of llama.cpp's
// test-backend-ops): random inputs at several shapes, n = 0 and n = 1 included, the same data on
// both backends, one table line per op and shape with the largest error and the bound it met.
// Integer outputs (gate ids, sort order and counts, argmax) must match exactly; their inputs are
// built without near-ties. This file: dense and memory ops; moe_parity_test.cpp: the MoE ops;
// attention_parity_test.cpp: the attention ops and the paged cache; timing_test.cpp: GPU times
// (no bound). The executable (parity_main.cpp) exits 77 (skipped) when no CUDA device is present.
#include "core/error.h"
#include "parity_util.h"

namespace dpa::backend {
namespace {

TEST(BackendParity, Embedding) {
  for (DType d : {DType::f32, DType::bf16})
    for (int64_t cols : {64, 300})
      for (int64_t n : {0, 1, 5, 37}) {
        const HostWeight& t = weight(d, 100, cols);
        const WeightView tc = cpu().prepare_weight(t.view()), tg = gpu().prepare_weight(t.view());
        std::vector<int32_t> ids(n);
        for (auto& id : ids) id = static_cast<int32_t>(rnd_int(0, 99));
        Dual<int32_t> di(ids);
        Dual<float> out(n * cols);
        cpu().embedding(tc, di.c.data(), n, out.c.data());
        gpu().embedding(tg, di.g.data(), n, out.g.data());
        EXPECT_TRUE(close("embedding", dt(d) + " " + shp({{"n", n}, {"d", cols}}), out.on_cpu(),
                          out.on_gpu(), 0.0));
      }
}

TEST(BackendParity, RmsNorm) {
  for (DType d : {DType::f32, DType::bf16})
    for (int64_t dim : {64, 1000, 7168})
      for (int64_t n : {0, 1, 7}) {
        const HostWeight& w = weight(d, 1, dim, 0.5f, 1.5f);
        const WeightView wc = cpu().prepare_weight(w.view()), wg = gpu().prepare_weight(w.view());
        const auto x = rnd(n * dim, -3.0f, 3.0f);
        const std::string s = dt(d) + " " + shp({{"n", n}, {"d", dim}});
        {
          Dual<float> dx(x), out(n * dim);
          cpu().rms_norm(dx.c.data(), wc, n, 1e-6f, out.c.data());
          gpu().rms_norm(dx.g.data(), wg, n, 1e-6f, out.g.data());
          EXPECT_TRUE(close("rms_norm", s, out.on_cpu(), out.on_gpu(), 1e-5));
        }
        {  // in place
          Dual<float> dx(x);
          cpu().rms_norm(dx.c.data(), wc, n, 1e-6f, dx.c.data());
          gpu().rms_norm(dx.g.data(), wg, n, 1e-6f, dx.g.data());
          EXPECT_TRUE(close("rms_norm", s + " inplace", dx.on_cpu(), dx.on_gpu(), 1e-5));
        }
        {
          Dual<float> res(rnd(n * dim, -3.0f, 3.0f)), dx(x), out(n * dim);
          cpu().add_rms_norm(res.c.data(), dx.c.data(), wc, n, 1e-6f, out.c.data());
          gpu().add_rms_norm(res.g.data(), dx.g.data(), wg, n, 1e-6f, out.g.data());
          EXPECT_TRUE(close("add_rms_norm", s + " out", out.on_cpu(), out.on_gpu(), 1e-5));
          EXPECT_TRUE(close("add_rms_norm", s + " residual", res.on_cpu(), res.on_gpu(), 1e-6));
        }
      }
}

// fp32 dot products of length cols, terms of magnitude <= 1: an absolute floor for outputs that
// cancel to near zero (bf16 runs are bounded relative to the largest output alone).
double linear_atol(const WeightView& w) {
  return w.dtype == DType::f32 ? 1e-6 * std::sqrt(static_cast<double>(w.cols)) : 0.0;
}

void linear_case(const std::string& what, const WeightView& host_view, int64_t n, double rtol) {
  const WeightView wc = cpu().prepare_weight(host_view), wg = gpu().prepare_weight(host_view);
  const WeightView wg2 = gpu().prepare_weight(host_view);
  EXPECT_EQ(wg.data, wg2.data) << "prepare_weight copied the same view twice";
  Dual<float> x(rnd(n * host_view.cols)), y(n * host_view.rows);
  cpu().linear(x.c.data(), n, wc, y.c.data());
  gpu().linear(x.g.data(), n, wg, y.g.data());
  EXPECT_TRUE(close("linear", dt(host_view.dtype) + " " + what + " " +
                                  shp({{"n", n}, {"rows", host_view.rows}, {"cols", host_view.cols}}),
                    y.on_cpu(), y.on_gpu(), rtol, linear_atol(host_view)));
}

TEST(BackendParity, Linear) {
  for (DType d : {DType::f32, DType::bf16}) {
    const double rtol = d == DType::f32 ? 1e-5 : 1e-2;
    const int64_t shapes[][2] = {{16, 32}, {64, 128}, {100, 300}, {256, 512}, {1, 7168}};
    // n: none, the small-row kernel's 16-, 32- and 64-row tiles (bf16), and cuBLAS past 64 rows.
    for (auto& s : shapes)
      for (int64_t n : {0, 1, 7, 20, 33, 65}) {
        const HostWeight& w = weight(d, s[0], s[1]);
        linear_case("dense", w.view(), n, rtol);
      }
    // Strided host views: heads (rows) and o_proj inputs (columns) of a bigger weight.
    const HostWeight& big = weight(d, 96, 160);
    for (int64_t n : {0, 1, 9}) {
      linear_case("row_slice[16,80)", big.view().row_slice(16, 80), n, rtol);
      linear_case("col_slice[32,96)", big.view().col_slice(32, 96), n, rtol);
      linear_case("slice[8,40)x[100,160)", big.view().slice(8, 40, 100, 160), n, rtol);
    }
    // A slice of an already prepared device weight (strided in device memory).
    {
      const WeightView full_g = gpu().prepare_weight(big.view());
      const WeightView sc = big.view().col_slice(40, 120), sg = full_g.col_slice(40, 120);
      EXPECT_EQ(gpu().prepare_weight(sg).data, sg.data) << "a device view is used in place";
      for (int64_t n : {1, 5}) {
        Dual<float> x(rnd(n * sc.cols)), y(n * sc.rows);
        cpu().linear(x.c.data(), n, sc, y.c.data());
        gpu().linear(x.g.data(), n, sg, y.g.data());
        EXPECT_TRUE(close("linear", dt(d) + " device col_slice[40,120) " +
                                        shp({{"n", n}, {"rows", sc.rows}, {"cols", sc.cols}}),
                          y.on_cpu(), y.on_gpu(), rtol, linear_atol(sc)));
      }
    }
  }
}

// Several weights over the same rows: on the GPU the rows are rounded to bf16 once for every
// weight that goes through cuBLAS; weights the small-row kernel or SGEMM take read them as f32.
TEST(BackendParity, LinearMany) {
  const HostWeight &a = weight(DType::bf16, 96, 160), &b = weight(DType::bf16, 40, 160);
  const HostWeight& f = weight(DType::f32, 24, 160);
  const WeightView ac = cpu().prepare_weight(a.view()), ag = gpu().prepare_weight(a.view());
  const WeightView bc = cpu().prepare_weight(b.view()), bg = gpu().prepare_weight(b.view());
  const WeightView fc = cpu().prepare_weight(f.view()), fg = gpu().prepare_weight(f.view());
  for (int64_t n : {0, 1, 33, 65, 300}) {
    Dual<float> x(rnd(n * 160)), ya(n * 96), yb(n * 40), yf(n * 24);
    const Backend::LinearOut oc[] = {{&ac, ya.c.data()}, {&fc, yf.c.data()}, {&bc, yb.c.data()}};
    const Backend::LinearOut og[] = {{&ag, ya.g.data()}, {&fg, yf.g.data()}, {&bg, yb.g.data()}};
    cpu().linear_many(x.c.data(), n, oc);
    gpu().linear_many(x.g.data(), n, og);
    const std::string s = shp({{"n", n}});
    EXPECT_TRUE(close("linear_many", "bf16 96x160 " + s, ya.on_cpu(), ya.on_gpu(), 1e-2));
    EXPECT_TRUE(close("linear_many", "f32 24x160 " + s, yf.on_cpu(), yf.on_gpu(), 1e-5, linear_atol(f.view())));
    EXPECT_TRUE(close("linear_many", "bf16 40x160 " + s, yb.on_cpu(), yb.on_gpu(), 1e-2));
  }
  const WeightView narrow = gpu().prepare_weight(weight(DType::bf16, 8, 32).view());
  Dual<float> x(rnd(100 * 160)), y(100 * 96), z(100 * 8);
  const Backend::LinearOut mixed[] = {{&ag, y.g.data()}, {&narrow, z.g.data()}};
  EXPECT_THROW(gpu().linear_many(x.g.data(), 100, mixed), Error);
}

TEST(BackendParity, NormLinear) {
  // The pre-norm and its projections in one call: against the CPU, and on the GPU against the
  // two calls it stands for, bit for bit (the rows the norm rounds as it writes them are the
  // rows linear_many would round). Widths on the wide norm path (160, 2048) and off it (162);
  // rows on the small-row kernel (1, 33) and past it (65, 300); bf16 and f32 projections.
  for (int64_t dim : {160, 162, 2048})
    for (DType nd : {DType::bf16, DType::f32}) {
      const HostWeight& nw = weight(nd, 1, dim, 0.5f, 1.5f);
      const WeightView nc = cpu().prepare_weight(nw.view()), ng = gpu().prepare_weight(nw.view());
      const HostWeight &a = weight(DType::bf16, 96, dim), &f = weight(DType::f32, 24, dim);
      const WeightView ac = cpu().prepare_weight(a.view()), ag = gpu().prepare_weight(a.view());
      const WeightView fc = cpu().prepare_weight(f.view()), fg = gpu().prepare_weight(f.view());
      for (int64_t n : {0, 1, 33, 65, 300})
        for (bool add : {false, true}) {
          const std::string s = dt(nd) + " norm " + shp({{"n", n}, {"d", dim}}) + (add ? " add" : "");
          const auto r0 = rnd(n * dim, -3.0f, 3.0f);
          Dual<float> res(r0), x(rnd(n * dim, -3.0f, 3.0f)), h(n * dim), ya(n * 96), yf(n * 24);
          const Backend::LinearOut oc[] = {{&ac, ya.c.data()}, {&fc, yf.c.data()}};
          const Backend::LinearOut og[] = {{&ag, ya.g.data()}, {&fg, yf.g.data()}};
          float* rc = add ? res.c.data() : nullptr;
          float* rg = add ? res.g.data() : nullptr;
          cpu().norm_linear(rc, add ? x.c.data() : res.c.data(), nc, n, 1e-6f, h.c.data(), oc);
          gpu().norm_linear(rg, add ? x.g.data() : res.g.data(), ng, n, 1e-6f, h.g.data(), og);
          EXPECT_TRUE(close("norm_linear", s + " h", h.on_cpu(), h.on_gpu(), 1e-5));
          EXPECT_TRUE(close("norm_linear", s + " residual", res.on_cpu(), res.on_gpu(), 1e-6));
          EXPECT_TRUE(close("norm_linear", s + " bf16 96", ya.on_cpu(), ya.on_gpu(), 1e-2));
          EXPECT_TRUE(close("norm_linear", s + " f32 24", yf.on_cpu(), yf.on_gpu(), 1e-5, linear_atol(f.view())));
          // The same on the GPU in two calls, from the same inputs.
          Dual<float> res2(r0), h2(n * dim), ya2(n * 96), yf2(n * 24);
          const Backend::LinearOut og2[] = {{&ag, ya2.g.data()}, {&fg, yf2.g.data()}};
          if (add) gpu().add_rms_norm(res2.g.data(), x.g.data(), ng, n, 1e-6f, h2.g.data());
          else gpu().rms_norm(res2.g.data(), ng, n, 1e-6f, h2.g.data());
          gpu().linear_many(h2.g.data(), n, og2);
          EXPECT_TRUE(close("norm_linear", s + " h vs two calls", h2.on_gpu(), h.on_gpu(), 0.0));
          EXPECT_TRUE(close("norm_linear", s + " bf16 96 vs two calls", ya2.on_gpu(), ya.on_gpu(), 0.0));
          EXPECT_TRUE(close("norm_linear", s + " f32 24 vs two calls", yf2.on_gpu(), yf.on_gpu(), 0.0));
        }
    }
}

TEST(BackendParity, AddSiluMul) {
  for (int64_t count : {0, 1, 1000, 100003}) {
    const auto a = rnd(count, -4, 4), b = rnd(count, -2, 2);
    {
      Dual<float> y(a), x(b);
      cpu().add(y.c.data(), x.c.data(), count);
      gpu().add(y.g.data(), x.g.data(), count);
      EXPECT_TRUE(close("add", shp({{"count", count}}), y.on_cpu(), y.on_gpu(), 0.0));
    }
    {
      Dual<float> g(a), u(b), out(count);
      cpu().silu_mul(g.c.data(), u.c.data(), count, out.c.data());
      gpu().silu_mul(g.g.data(), u.g.data(), count, out.g.data());
      EXPECT_TRUE(close("silu_mul", shp({{"count", count}}), out.on_cpu(), out.on_gpu(), 1e-6));
      cpu().silu_mul(g.c.data(), u.c.data(), count, g.c.data());  // out aliases gate
      gpu().silu_mul(g.g.data(), u.g.data(), count, g.g.data());
      EXPECT_TRUE(close("silu_mul", shp({{"count", count}}) + " inplace", g.on_cpu(), g.on_gpu(), 1e-6));
    }
    if (count > 1) {  // arrays off 16-byte alignment: every element one by one
      const int64_t m = count - 1;
      Dual<float> y(a), x(b), g(a), u(b), out(count);
      cpu().add(y.c.data() + 1, x.c.data(), m);
      gpu().add(y.g.data() + 1, x.g.data(), m);
      EXPECT_TRUE(close("add", shp({{"count", m}}) + " unaligned", y.on_cpu(), y.on_gpu(), 0.0));
      cpu().silu_mul(g.c.data() + 1, u.c.data(), m, out.c.data());
      gpu().silu_mul(g.g.data() + 1, u.g.data(), m, out.g.data());
      EXPECT_TRUE(close("silu_mul", shp({{"count", m}}) + " unaligned", out.on_cpu(), out.on_gpu(), 1e-6));
    }
  }
}

TEST(BackendParity, Copy2d) {
  const int64_t cases[][4] = {{0, 5, 9, 7}, {1, 5, 9, 7}, {13, 64, 100, 80}, {40, 33, 33, 57}};
  for (auto& c : cases) {
    const int64_t rows = c[0], cols = c[1], ldd = c[2], lds = c[3];
    Dual<float> src(rnd(std::max<int64_t>(rows * lds, 1))), dst(rnd(std::max<int64_t>(rows * ldd, 1)));
    cpu().copy2d(dst.c.data(), ldd, src.c.data(), lds, rows, cols);
    gpu().copy2d(dst.g.data(), ldd, src.g.data(), lds, rows, cols);
    EXPECT_TRUE(close("copy2d", shp({{"rows", rows}, {"cols", cols}, {"ldd", ldd}, {"lds", lds}}),
                      dst.on_cpu(), dst.on_gpu(), 0.0));
  }
}


TEST(BackendParity, Argmax) {
  for (int64_t vocab : {1, 1000, 129280})
    for (int64_t n : {0, 1, 9}) {
      // Distinct values (a shuffled grid), except that row 1 repeats its maximum at a higher
      // index (ties go to the lower one).
      std::vector<float> l(n * vocab);
      for (int64_t i = 0; i < n; ++i) {
        std::vector<int32_t> perm(vocab);
        std::iota(perm.begin(), perm.end(), 0);
        std::shuffle(perm.begin(), perm.end(), rng());
        for (int64_t v = 0; v < vocab; ++v) l[i * vocab + v] = static_cast<float>(perm[v]) * 1e-3f - 20.0f;
        if (i == 1 && vocab > 2) {
          const int64_t best = std::max_element(l.begin() + i * vocab, l.begin() + (i + 1) * vocab) - (l.begin() + i * vocab);
          const int64_t other = best == vocab - 1 ? 0 : vocab - 1;
          l[i * vocab + other] = l[i * vocab + best];
        }
      }
      Dual<float> dl(l);
      Dual<int32_t> out(n);
      cpu().argmax(dl.c.data(), n, vocab, out.c.data());
      gpu().argmax(dl.g.data(), n, vocab, out.g.data());
      EXPECT_TRUE(exact("argmax", shp({{"n", n}, {"vocab", vocab}}), out.on_cpu(), out.on_gpu()));
    }
}

// Not a parity check: GPU time of a few decode-shaped ops, for the record.
// ---- Batched linear (MLA's per-head projections).

TEST(BackendParity, LinearBatched) {
  // batch, n, rows, cols; ld_extra and col0 make the per-batch views strided (ld != cols).
  struct C { int64_t batch, n, rows, cols, ld_extra, col0; };
  const C cases[] = {{16, 0, 32, 24, 0, 0},  {16, 1, 32, 24, 0, 0},  {16, 7, 64, 128, 0, 0},
                     {4, 9, 40, 20, 12, 5},  {128, 3, 16, 32, 8, 8}, {3, 33, 100, 60, 4, 0},
                     {1, 5, 17, 9, 0, 0},    {16, 1, 48, 32, 16, 16},
                     // rows past the small-row kernel: the rounding pass by float4 (even batch, sx
                     // aligned) and element by element (odd batch)
                     {16, 150, 64, 128, 0, 0}, {5, 130, 40, 128, 0, 0}};
  for (DType d : {DType::f32, DType::bf16}) {
    const double rtol = d == DType::f32 ? 1e-5 : 1e-2;
    for (const C& c : cases) {
      const int64_t ldw = c.col0 + c.cols + c.ld_extra;
      const HostWeight& full = weight(d, c.batch * c.rows, ldw);
      const WeightView fc = cpu().prepare_weight(full.view()), fg = gpu().prepare_weight(full.view());
      auto head0 = [&](const WeightView& f) {  // batch b's weight: + b * rows * ldw elements
        WeightView v = f;
        v.data = static_cast<const char*>(f.data) + c.col0 * static_cast<int64_t>(dtype_size(d));
        v.rows = c.rows, v.cols = c.cols, v.ld = ldw;
        return v;
      };
      // x [n, batch, sx], y [n, batch, sy]; sx a multiple of 4 for even batches (the small-batch
      // kernel takes those, with K and the weight strides multiples of 8), odd otherwise.
      const int64_t sx = c.cols + (c.batch % 2 ? 3 : 4), sy = c.rows + 2;
      Dual<float> x(rnd(std::max<int64_t>(c.n * c.batch * sx, 1))),
          y(rnd(std::max<int64_t>(c.n * c.batch * sy, 1)));
      cpu().linear_batched(x.c.data(), c.batch * sx, sx, c.n, head0(fc), c.rows * ldw, c.batch,
                           y.c.data(), c.batch * sy, sy);
      gpu().linear_batched(x.g.data(), c.batch * sx, sx, c.n, head0(fg), c.rows * ldw, c.batch,
                           y.g.data(), c.batch * sy, sy);
      EXPECT_TRUE(close("linear_batched",
                        dt(d) + " " + shp({{"batch", c.batch}, {"n", c.n}, {"rows", c.rows},
                                           {"cols", c.cols}, {"ld", ldw}}),
                        y.on_cpu(), y.on_gpu(), rtol, linear_atol(head0(fc))));
    }
  }
}

TEST(BackendParity, EnvSwitchesRejectUnknownValues) {
  // The backend's switches: an unknown value is an error that names the choices; empty is the
  // default.
  const std::pair<const char*, const char*> cases[] = {
      {"DPA_CUDA_ATTN", "DPA_CUDA_ATTN=fused: expected auto, kernel or gemm"},
      {"DPA_CUDA_MLA_DECODE_STAGES", "DPA_CUDA_MLA_DECODE_STAGES=fused: expected 2 or 3"},
      {"DPA_CUDA_MLA_WGMMA_FORM", "DPA_CUDA_MLA_WGMMA_FORM=fused: expected seesaw or cp.async"},
      {"DPA_CUDA_SMALL_LINEAR", "DPA_CUDA_SMALL_LINEAR=fused: expected 0, 1 or force"},
      {"DPA_MOE_WGMMA", "DPA_MOE_WGMMA=fused: expected auto, 1 or 0"},
      {"DPA_MOE_WGMMA_BLOCKS", "DPA_MOE_WGMMA_BLOCKS=fused: expected auto, wide or narrow"}};
  for (const auto& [var, message] : cases) {
    setenv(var, "fused", 1);
    std::string what;
    try {
      make_cuda_backend(0);
    } catch (const Error& e) {
      what = e.what();
    }
    setenv(var, "", 1);
    EXPECT_NE(make_cuda_backend(0), nullptr) << var << " empty";
    unsetenv(var);
    EXPECT_EQ(what, message) << var;
  }
}

TEST(BackendParity, MemoryOps) {
  // copy, fill_zero and download of a partly written buffer.
  const auto h = rnd(1000);
  Dual<float> a(h), b(1000);
  cpu().copy(b.c.data(), a.c.data(), 400 * sizeof(float));
  gpu().copy(b.g.data(), a.g.data(), 400 * sizeof(float));
  cpu().fill_zero(a.c.data() + 10, 20 * sizeof(float));
  gpu().fill_zero(a.g.data() + 10, 20 * sizeof(float));
  EXPECT_TRUE(close("copy", "bytes=1600", b.on_cpu(), b.on_gpu(), 0.0));
  EXPECT_TRUE(close("fill_zero", "bytes=80", a.on_cpu(), a.on_gpu(), 0.0));
  gpu().synchronize();
  EXPECT_NE(gpu().stream(), nullptr);
  EXPECT_TRUE(gpu().supports_weight(DType::bf16));
}

TEST(BackendParity, Lanes) {
  // Lane 1 copies what lane 0 writes last, after a long queue of lane-0 copies: without the
  // wait on lane 0's mark it would read the zeros there before. Then lane 0 waits for lane 1.
  Backend& g = gpu();
  ASSERT_EQ(g.lanes(), 2);
  EXPECT_EQ(cpu().lanes(), 1);
  const std::size_t n = std::size_t{32} << 20;  // 128 MiB of floats a buffer
  const auto host = rnd(n);
  Buffer<float> x(g, n), a(g, n), b(g, n), c(g, n), d(g, n);
  g.upload(x.data(), host.data(), n * sizeof(float));
  g.fill_zero(a.data(), n * sizeof(float));
  g.fill_zero(b.data(), n * sizeof(float));
  g.synchronize();
  for (int i = 0; i < 40; ++i) g.copy(i % 2 ? c.data() : d.data(), i % 2 ? d.data() : c.data(), n * sizeof(float));
  g.copy(a.data(), x.data(), n * sizeof(float));
  const uint64_t written = g.lane_signal();
  g.set_lane(1);
  EXPECT_EQ(g.stream(), g.lane_stream(0));  // stream() names lane 0 whatever the current lane
  g.lane_wait(written);
  g.copy(b.data(), a.data(), n * sizeof(float));
  const uint64_t copied = g.lane_signal();
  g.set_lane(0);
  g.lane_wait(copied);
  std::vector<float> got(n);
  g.download(got.data(), b.data(), n * sizeof(float));
  EXPECT_EQ(got, host);
  EXPECT_THROW(g.lane_wait(copied + 1), Error);  // not signalled yet
  EXPECT_THROW(g.set_lane(2), Error);
  g.synchronize();
}

TEST(BackendParity, StagedUploads) {
  // Uploads of 1 B to 5 MB (the staging halves start at 1 MB and grow to the largest upload) and
  // one of 65 MB (past the halves' cap: pageable) from one host array rewritten after every call,
  // behind a long queue of device copies so that the staged copies are still pending when the
  // halves come round again; a third of them from lane 1. Each region must hold what the host
  // held at its call.
  Backend& g = gpu();
  const std::size_t big = std::size_t{32} << 20;
  Buffer<float> c(g, big), d(g, big);
  g.fill_zero(c.data(), big * sizeof(float));
  for (int i = 0; i < 20; ++i) g.copy(i % 2 ? c.data() : d.data(), i % 2 ? d.data() : c.data(), big * sizeof(float));
  std::vector<std::size_t> sizes;
  for (int i = 0; i < 300; ++i)
    sizes.push_back(static_cast<std::size_t>(i == 150   ? 5 << 20
                                             : i == 200 ? (65 << 20) + 3
                                             : i % 25 == 0 ? rnd_int(1 << 20, 3 << 19)
                                                           : rnd_int(1, 300000)));
  std::size_t total = 0;
  for (std::size_t b : sizes) total += b;
  Buffer<uint8_t> dst(g, total);
  std::vector<uint8_t> expect(total), host(*std::max_element(sizes.begin(), sizes.end()));
  std::size_t off = 0;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    for (std::size_t k = 0; k < sizes[i]; ++k) host[k] = static_cast<uint8_t>(rnd_int(0, 255));
    std::copy_n(host.begin(), sizes[i], expect.begin() + static_cast<std::ptrdiff_t>(off));
    g.set_lane(i % 3 == 2 ? 1 : 0);
    g.upload(dst.data() + off, host.data(), sizes[i]);
    std::fill(host.begin(), host.begin() + static_cast<std::ptrdiff_t>(sizes[i]), uint8_t{0xAB});  // taken at the call
    off += sizes[i];
  }
  g.set_lane(0);
  std::vector<uint8_t> got(total);
  g.synchronize();
  g.download(got.data(), dst.data(), total);
  EXPECT_TRUE(got == expect) << "staged uploads: " << total << " bytes in " << sizes.size() << " calls";
}

TEST(BackendParity, PinnedUploads) {
  // upload_pinned copies from the caller's page-locked memory when the stream gets there: 3 MB
  // behind a long queue of device copies, the source left as it is until then.
  Backend& g = gpu();
  const std::size_t big = std::size_t{32} << 20, n = std::size_t{3} << 20;
  Buffer<float> c(g, big), d(g, big);
  g.fill_zero(c.data(), big * sizeof(float));
  for (int i = 0; i < 20; ++i) g.copy(i % 2 ? c.data() : d.data(), i % 2 ? d.data() : c.data(), big * sizeof(float));
  auto* pinned = static_cast<uint8_t*>(g.host_alloc(n));
  std::vector<uint8_t> expect(n);
  for (std::size_t k = 0; k < n; ++k) expect[k] = pinned[k] = static_cast<uint8_t>(rnd_int(0, 255));
  Buffer<uint8_t> dst(g, n);
  g.upload_pinned(dst.data(), pinned, n);
  std::vector<uint8_t> got(n);
  g.download(got.data(), dst.data(), n);
  EXPECT_TRUE(got == expect) << "pinned upload of " << n << " bytes";
  g.host_release(pinned);
}

}  // namespace
}  // namespace dpa::backend
