// Op-by-op parity of the CUDA backend against the CPU reference (in the style of llama.cpp's
// test-backend-ops): random inputs at several shapes, n = 0 and n = 1 included, the same data on
// both backends, one table line per op and shape with the largest error and the bound it met.
// Integer outputs (gate ids, sort order and counts, argmax) must match exactly; their inputs are
// built without near-ties. Attention and absorbed MLA run in both CUDA forms (DPA_CUDA_ATTN=kernel
// and =gemm); mla_decode in both kernel versions (DPA_CUDA_MLA_DECODE=v1, v2). Two last tests
// print GPU times of a few decode/prefill shapes and of the batched ops against the loops they
// replace (no bound). Exits 77
// (skipped) when no CUDA device is present.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "core/dtype.h"

namespace dpa::backend {
namespace {

struct Env {
  std::unique_ptr<Backend> cpu, gpu;
};
Env& env() {
  static Env e;
  return e;
}
Backend& cpu() { return *env().cpu; }
Backend& gpu() { return *env().gpu; }

std::mt19937& rng() {
  static std::mt19937 g(12345);
  return g;
}
std::vector<float> rnd(std::size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng());
  return v;
}
int64_t rnd_int(int64_t lo, int64_t hi) {  // [lo, hi]
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng());
}

// ---- The table.
int g_failures = 0;
void line(const std::string& op, const std::string& shape, const std::string& what, bool ok) {
  std::printf("%-14s %-46s %-40s %s\n", op.c_str(), shape.c_str(), what.c_str(), ok ? "OK" : "FAIL");
  std::fflush(stdout);
  if (!ok) ++g_failures;
}

// |got - ref| <= atol + rtol * max|ref| everywhere.
bool close(const std::string& op, const std::string& shape, const std::vector<float>& ref,
           const std::vector<float>& got, double rtol, double atol = 0.0) {
  if (ref.size() != got.size()) {
    line(op, shape, "size mismatch", false);
    return false;
  }
  double scale = 0, max_abs = 0;
  for (float r : ref) scale = std::max(scale, std::fabs(static_cast<double>(r)));
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const double e = std::fabs(static_cast<double>(got[i]) - ref[i]);
    max_abs = std::isnan(e) ? INFINITY : std::max(max_abs, e);
  }
  const double bound = atol + rtol * scale;
  const bool ok = max_abs <= bound;
  char buf[128];
  std::snprintf(buf, sizeof buf, "max_abs=%.2e rel=%.2e bound=%.1e", max_abs,
                scale > 0 ? max_abs / scale : max_abs, bound);
  line(op, shape, buf, ok);
  return ok;
}

template <class T>
bool exact(const std::string& op, const std::string& shape, const std::vector<T>& ref,
           const std::vector<T>& got) {
  std::size_t bad = ref.size() == got.size() ? 0 : 1;
  if (ref.size() == got.size())
    for (std::size_t i = 0; i < ref.size(); ++i) bad += ref[i] != got[i];
  char buf[128];
  std::snprintf(buf, sizeof buf, "exact: %zu of %zu differ", bad, ref.size());
  line(op, shape, buf, bad == 0);
  return bad == 0;
}

// The same host data on both backends.
template <class T>
struct Dual {
  Buffer<T> c, g;
  std::size_t n = 0;
  explicit Dual(std::size_t n_) : c(cpu(), n_), g(gpu(), n_), n(n_) {
    if (n) cpu().fill_zero(c.data(), n * sizeof(T)), gpu().fill_zero(g.data(), n * sizeof(T));
  }
  explicit Dual(const std::vector<T>& h) : Dual(h.size()) { set(h); }
  void set(const std::vector<T>& h) {
    if (!n) return;
    cpu().upload(c.data(), h.data(), n * sizeof(T));
    gpu().upload(g.data(), h.data(), n * sizeof(T));
  }
  std::vector<T> on_cpu() const {
    std::vector<T> h(n);
    if (n) cpu().download(h.data(), c.data(), n * sizeof(T));
    return h;
  }
  std::vector<T> on_gpu() const {
    std::vector<T> h(n);
    if (n) gpu().download(h.data(), g.data(), n * sizeof(T));
    return h;
  }
};

// A random host weight of f32 or bf16.
struct HostWeight {
  std::vector<float> f;
  std::vector<uint16_t> b;
  DType dtype;
  int64_t rows, cols;
  HostWeight(DType dt, int64_t r, int64_t c, float lo = -1.0f, float hi = 1.0f)
      : dtype(dt), rows(r), cols(c) {
    f = rnd(static_cast<std::size_t>(r * c), lo, hi);
    if (dt == DType::bf16) {
      b.resize(f.size());
      for (std::size_t i = 0; i < f.size(); ++i) b[i] = f32_to_bf16(f[i]);
    }
  }
  WeightView view() const {
    return WeightView::dense(dtype == DType::bf16 ? static_cast<const void*>(b.data()) : f.data(),
                             dtype, rows, cols);
  }
};

// Host weights live to the end of the program: prepare_weight caches by host pointer and shape,
// so a freed and reused host buffer of the same shape would alias an old device copy.
const HostWeight& weight(DType dt, int64_t r, int64_t c, float lo = -1.0f, float hi = 1.0f) {
  static std::deque<HostWeight> kept;
  return kept.emplace_back(dt, r, c, lo, hi);
}

std::string dt(DType d) { return std::string(dtype_name(d)); }
std::string shp(std::initializer_list<std::pair<const char*, int64_t>> kv) {
  std::string s;
  for (auto& [k, v] : kv) s += (s.empty() ? "" : " ") + std::string(k) + "=" + std::to_string(v);
  return s;
}

// ---- Dense ops.

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
    for (auto& s : shapes)
      for (int64_t n : {0, 1, 7, 33}) {
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

// A paged latent cache on both backends: a pool of pages and one sequence's page table in a
// shuffled order.
struct Cache {
  int64_t n_pages, page_size, kv_lora, rope_dim;
  Dual<float> pool;
  Dual<int32_t> table;
  Cache(int64_t pages_in_pool, int64_t page_size_, int64_t kv_lora_, int64_t rope_dim_,
        int64_t seq_pages)
      : n_pages(pages_in_pool), page_size(page_size_), kv_lora(kv_lora_), rope_dim(rope_dim_),
        pool(rnd(pages_in_pool * page_size_ * (kv_lora_ + rope_dim_))), table(pick(pages_in_pool, seq_pages)) {}
  static std::vector<int32_t> pick(int64_t pool, int64_t k) {
    std::vector<int32_t> p(pool);
    std::iota(p.begin(), p.end(), 0);
    std::shuffle(p.begin(), p.end(), rng());
    p.resize(k);
    return p;
  }
  PagedLatent view(bool on_gpu) const {
    PagedLatent v;
    v.base = on_gpu ? pool.g.data() : pool.c.data();
    v.pages = on_gpu ? table.g.data() : table.c.data();
    v.page_size = page_size;
    v.kv_lora = kv_lora;
    v.rope_dim = rope_dim;
    return v;
  }
};

TEST(BackendParity, PagedWriteGather) {
  struct C { int64_t page_size, kv_lora, rope, start, n, col0, cols; };
  const C cases[] = {{4, 32, 8, 0, 0, 0, 40}, {4, 32, 8, 5, 1, 0, 40}, {4, 32, 8, 3, 14, 0, 32},
                     {16, 512, 64, 17, 40, 512, 64}, {64, 512, 64, 0, 150, 0, 576}};
  for (const C& c : cases) {
    const int64_t seq_pages = (c.start + c.n + c.page_size - 1) / c.page_size + 1;
    Cache cache(seq_pages + 3, c.page_size, c.kv_lora, c.rope, seq_pages);
    const int64_t lds = c.cols + 3;
    Dual<float> src(rnd(std::max<int64_t>(c.n * lds, 1)));
    cpu().paged_write(cache.view(false), c.col0, c.cols, c.start, c.n, src.c.data(), lds);
    gpu().paged_write(cache.view(true), c.col0, c.cols, c.start, c.n, src.g.data(), lds);
    const std::string s = shp({{"page", c.page_size}, {"width", c.kv_lora + c.rope}, {"start", c.start},
                               {"n", c.n}, {"col0", c.col0}, {"cols", c.cols}});
    EXPECT_TRUE(close("paged_write", s, cache.pool.on_cpu(), cache.pool.on_gpu(), 0.0));
    const int64_t n_read = c.start + c.n, ldo = c.cols + 1;
    Dual<float> out(std::max<int64_t>(n_read * ldo, 1));
    cpu().paged_gather(cache.view(false), c.col0, c.cols, n_read, out.c.data(), ldo);
    gpu().paged_gather(cache.view(true), c.col0, c.cols, n_read, out.g.data(), ldo);
    EXPECT_TRUE(close("paged_gather", s, out.on_cpu(), out.on_gpu(), 0.0));
  }
}

TEST(BackendParity, Rope) {
  const int64_t dim = 64, nope = 128, heads = 3, head_stride = nope + dim;
  std::vector<float> inv(dim / 2);
  for (int64_t i = 0; i < dim / 2; ++i)
    inv[i] = static_cast<float>(1.0 / std::pow(10000.0, 2.0 * i / dim) / (i > 8 ? 40.0 : 1.0));
  Dual<float> dinv(inv);
  for (float scaling : {1.0f, 1.3f})
    for (int64_t n : {0, 1, 9}) {
      std::vector<int64_t> pos(n);
      for (auto& p : pos) p = rnd_int(0, 4000);
      Dual<int64_t> dpos(pos);
      const int64_t token_stride = heads * head_stride + 5;
      Dual<float> x(rnd(std::max<int64_t>(n * token_stride, 1)));
      RopeParams pc{dinv.c.data(), dim, scaling}, pg{dinv.g.data(), dim, scaling};
      cpu().rope(x.c.data() + nope, n, heads, token_stride, head_stride, dpos.c.data(), pc);
      gpu().rope(x.g.data() + nope, n, heads, token_stride, head_stride, dpos.g.data(), pg);
      char sc[32];
      std::snprintf(sc, sizeof sc, " scaling=%.1f", scaling);
      EXPECT_TRUE(close("rope", shp({{"n", n}, {"heads", heads}, {"dim", dim}}) + sc, x.on_cpu(),
                        x.on_gpu(), 1e-5));
    }
}

// ---- Attention.

// Runs fn with the CUDA backend swapped for one made under DPA_CUDA_ATTN=mode ("kernel": the
// fused kernel, split over keys for long contexts; "gemm": cuBLAS around a masked softmax).
void with_attn_mode(const char* mode, const std::function<void()>& fn) {
  setenv("DPA_CUDA_ATTN", mode, 1);
  std::unique_ptr<Backend> be = make_cuda_backend(0);
  unsetenv("DPA_CUDA_ATTN");
  std::swap(env().gpu, be);
  fn();
  std::swap(env().gpu, be);
}

TEST(BackendParity, Attention) {
  struct C { int64_t n_q, q_start, heads, d_qk, d_v; };
  const C cases[] = {{0, 0, 4, 24, 16},    {1, 0, 4, 24, 16},    {7, 0, 4, 24, 16},
                     {1, 299, 4, 24, 16},  {5, 255, 4, 24, 16},  {130, 0, 2, 40, 33},
                     {3, 1000, 2, 192, 128}, {16, 64, 16, 192, 128},
                     // split-KV with splits that are empty for the first queries (132 SMs)
                     {132, 126, 1, 24, 16},  {1, 3000, 1, 192, 128}};
  for (const char* mode : {"kernel", "gemm"})
  with_attn_mode(mode, [&] {
  for (const C& c : cases) {
    const int64_t n_kv = c.q_start + c.n_q;
    Dual<float> q(rnd(std::max<int64_t>(c.n_q * c.heads * c.d_qk, 1), -2, 2)),
        k(rnd(std::max<int64_t>(n_kv * c.heads * c.d_qk, 1), -2, 2)),
        v(rnd(std::max<int64_t>(n_kv * c.heads * c.d_v, 1))), out(std::max<int64_t>(c.n_q * c.heads * c.d_v, 1));
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.d_qk));
    cpu().attention(q.c.data(), k.c.data(), v.c.data(), c.n_q, n_kv, c.heads, c.d_qk, c.d_v,
                    c.q_start, scale, out.c.data());
    gpu().attention(q.g.data(), k.g.data(), v.g.data(), c.n_q, n_kv, c.heads, c.d_qk, c.d_v,
                    c.q_start, scale, out.g.data());
    EXPECT_TRUE(close("attention", std::string(mode) + " " + shp({{"n_q", c.n_q}, {"q_start", c.q_start}, {"H", c.heads},
                                        {"d_qk", c.d_qk}, {"d_v", c.d_v}}),
                      out.on_cpu(), out.on_gpu(), 1e-4, 1e-6));
  }
  });
}

TEST(BackendParity, MlaAbsorbed) {
  struct C { int64_t n_q, q_start, heads, page_size, kv_lora, rope; };
  const C cases[] = {{0, 5, 4, 16, 512, 64},  {1, 0, 4, 16, 512, 64},   {1, 299, 4, 16, 512, 64},
                     {4, 50, 4, 16, 512, 64},  {1, 2047, 16, 64, 512, 64}, {9, 3, 3, 4, 40, 8},
                     {8, 700, 2, 64, 512, 64},  {1, 4095, 128, 64, 512, 64}};
  for (const char* mode : {"kernel", "gemm"})
  with_attn_mode(mode, [&] {
  for (const C& c : cases) {
    const int64_t n_ctx = c.q_start + c.n_q;
    const int64_t seq_pages = (n_ctx + c.page_size - 1) / c.page_size + 1;
    Cache cache(seq_pages + 5, c.page_size, c.kv_lora, c.rope, seq_pages);
    Dual<float> ql(rnd(std::max<int64_t>(c.n_q * c.heads * c.kv_lora, 1))),
        qp(rnd(std::max<int64_t>(c.n_q * c.heads * c.rope, 1))),
        out(std::max<int64_t>(c.n_q * c.heads * c.kv_lora, 1));
    const float scale = 1.0f / std::sqrt(192.0f);
    cpu().mla_absorbed(ql.c.data(), qp.c.data(), c.n_q, c.heads, cache.view(false), c.q_start,
                       scale, out.c.data());
    gpu().mla_absorbed(ql.g.data(), qp.g.data(), c.n_q, c.heads, cache.view(true), c.q_start,
                       scale, out.g.data());
    EXPECT_TRUE(close("mla_absorbed", std::string(mode) + " " + shp({{"n_q", c.n_q}, {"q_start", c.q_start}, {"H", c.heads},
                                           {"page", c.page_size}, {"lora", c.kv_lora}, {"rope", c.rope}}),
                      out.on_cpu(), out.on_gpu(), 1e-4, 1e-6));
  }
  });
}

// ---- MoE.

// Host scores as the reference computes them, to keep ties away from the selection.
bool well_separated(const float* l, const GateParams& p, const std::vector<float>& bias) {
  const int64_t E = p.n_experts;
  std::vector<double> score(E), choice(E);
  double mx = l[0], sum = 0;
  for (int64_t e = 1; e < E; ++e) mx = std::max<double>(mx, l[e]);
  for (int64_t e = 0; e < E; ++e)
    score[e] = p.scoring == Scoring::softmax ? std::exp(l[e] - mx) : 1.0 / (1.0 + std::exp(-l[e]));
  for (int64_t e = 0; e < E; ++e) sum += score[e];
  for (int64_t e = 0; e < E; ++e) {
    if (p.scoring == Scoring::softmax) score[e] /= sum;
    choice[e] = score[e] + (bias.empty() ? 0.0 : bias[e]);
  }
  auto separated = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    for (std::size_t i = 1; i < v.size(); ++i)
      if (v[i] - v[i - 1] <= 2e-5 * std::max(std::fabs(v[i]), std::fabs(v[i - 1])) + 1e-9) return false;
    return true;
  };
  if (!separated(choice)) return false;
  if (p.n_group > 1 && p.method != TopkMethod::greedy) {
    const int64_t per = E / p.n_group;
    std::vector<double> g(p.n_group);
    for (int64_t i = 0; i < p.n_group; ++i) {
      std::vector<double> m(choice.begin() + i * per, choice.begin() + (i + 1) * per);
      std::sort(m.begin(), m.end(), std::greater<>());
      g[i] = p.method == TopkMethod::noaux_tc ? m[0] + (per > 1 ? m[1] : 0.0) : m[0];
    }
    if (!separated(g)) return false;
  }
  return true;
}

TEST(BackendParity, MoeGate) {
  struct C { const char* name; int64_t E, K, G, TG; Scoring sc; TopkMethod m; bool norm, bias; float rsf; };
  const C cases[] = {
      {"softmax greedy", 64, 6, 1, 1, Scoring::softmax, TopkMethod::greedy, false, false, 1.0f},
      {"softmax greedy norm", 64, 6, 1, 1, Scoring::softmax, TopkMethod::greedy, true, false, 1.0f},
      {"softmax group_limited", 160, 6, 8, 3, Scoring::softmax, TopkMethod::group_limited_greedy, false, false, 16.0f},
      {"softmax group_limited norm", 160, 6, 8, 3, Scoring::softmax, TopkMethod::group_limited_greedy, true, false, 16.0f},
      {"sigmoid noaux_tc bias norm", 256, 8, 8, 4, Scoring::sigmoid, TopkMethod::noaux_tc, true, true, 2.5f},
      {"sigmoid noaux_tc bias", 256, 8, 8, 4, Scoring::sigmoid, TopkMethod::noaux_tc, false, true, 2.5f},
      {"sigmoid noaux_tc nobias norm", 256, 8, 8, 4, Scoring::sigmoid, TopkMethod::noaux_tc, true, false, 1.0f},
      {"sigmoid greedy K=1 norm", 32, 1, 1, 1, Scoring::sigmoid, TopkMethod::greedy, true, false, 1.0f},
  };
  for (const C& c : cases)
    for (int64_t n : {0, 1, 17, 200}) {
      GateParams p;
      p.n_experts = c.E, p.top_k = c.K, p.n_group = c.G, p.topk_group = c.TG;
      p.scoring = c.sc, p.method = c.m, p.norm_topk_prob = c.norm, p.routed_scaling_factor = c.rsf;
      std::vector<float> bias;
      if (c.bias) bias = rnd(c.E, -0.05f, 0.05f);
      std::vector<float> logits(n * c.E);
      for (int64_t t = 0; t < n; ++t) {
        for (int tries = 0;; ++tries) {
          auto row = rnd(c.E, -4.0f, 4.0f);
          std::copy(row.begin(), row.end(), logits.begin() + t * c.E);
          if (well_separated(logits.data() + t * c.E, p, bias)) break;
          ASSERT_LT(tries, 1000) << "no well separated logits";
        }
      }
      Dual<float> dl(logits), dw(n * c.K);
      Dual<int32_t> di(n * c.K);
      Dual<float> db(bias.empty() ? std::vector<float>(1, 0.0f) : bias);
      GateParams pc = p, pg = p;
      if (c.bias) pc.correction_bias = db.c.data(), pg.correction_bias = db.g.data();
      cpu().moe_gate(dl.c.data(), n, pc, di.c.data(), dw.c.data());
      gpu().moe_gate(dl.g.data(), n, pg, di.g.data(), dw.g.data());
      const std::string s = std::string(c.name) + " " + shp({{"n", n}, {"E", c.E}, {"K", c.K}});
      EXPECT_TRUE(exact("moe_gate ids", s, di.on_cpu(), di.on_gpu()));
      EXPECT_TRUE(close("moe_gate w", s, dw.on_cpu(), dw.on_gpu(), 1e-6));
    }
}

TEST(BackendParity, MoeSort) {
  for (int64_t E : {8, 64, 256})
    for (int64_t n_slots : {0, 1, 6 * 37, 8 * 300}) {
      std::vector<int32_t> ids(n_slots);
      for (auto& id : ids) id = static_cast<int32_t>(rnd_int(0, E - 1));
      Dual<int32_t> di(ids), order(n_slots);
      std::vector<int64_t> cc(E, -1), cg(E, -1);
      cpu().moe_sort(di.c.data(), n_slots, E, order.c.data(), cc.data());
      gpu().moe_sort(di.g.data(), n_slots, E, order.g.data(), cg.data());
      const std::string s = shp({{"slots", n_slots}, {"E", E}});
      EXPECT_TRUE(exact("moe_sort order", s, order.on_cpu(), order.on_gpu()));
      EXPECT_TRUE(exact("moe_sort counts", s, cc, cg));
    }
}

TEST(BackendParity, GatherScatterCombine) {
  for (int64_t d : {7, 256})
    for (int64_t n : {0, 1, 50}) {
      const int64_t m = 64;
      const std::string s = shp({{"n", n}, {"d", d}});
      {
        std::vector<int32_t> rows(n);
        for (auto& r : rows) r = static_cast<int32_t>(rnd_int(0, m - 1));
        Dual<float> x(rnd(m * d)), out(std::max<int64_t>(n * d, 1));
        Dual<int32_t> dr(rows);
        cpu().gather_rows(x.c.data(), dr.c.data(), n, d, out.c.data());
        gpu().gather_rows(x.g.data(), dr.g.data(), n, d, out.g.data());
        EXPECT_TRUE(close("gather_rows", s, out.on_cpu(), out.on_gpu(), 0.0));
      }
      {
        std::vector<int32_t> rows(m);
        std::iota(rows.begin(), rows.end(), 0);
        std::shuffle(rows.begin(), rows.end(), rng());
        rows.resize(n);
        Dual<float> x(rnd(std::max<int64_t>(n * d, 1))), out(rnd(m * d));
        Dual<int32_t> dr(rows.empty() ? std::vector<int32_t>(1, 0) : rows);
        cpu().scatter_rows(x.c.data(), dr.c.data(), n, d, out.c.data());
        gpu().scatter_rows(x.g.data(), dr.g.data(), n, d, out.g.data());
        EXPECT_TRUE(close("scatter_rows", s, out.on_cpu(), out.on_gpu(), 0.0));
      }
      for (int64_t k : {1, 8}) {
        Dual<float> y(rnd(std::max<int64_t>(n * k * d, 1))), w(rnd(std::max<int64_t>(n * k, 1), 0, 1)),
            out(rnd(std::max<int64_t>(n * d, 1)));
        cpu().moe_combine(y.c.data(), w.c.data(), n, k, d, out.c.data());
        gpu().moe_combine(y.g.data(), w.g.data(), n, k, d, out.g.data());
        EXPECT_TRUE(close("moe_combine", s + " top_k=" + std::to_string(k), out.on_cpu(), out.on_gpu(), 3e-6));
      }
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
TEST(BackendParity, Timing) {
  auto time_ms = [](auto&& fn) {
    cudaStream_t st = static_cast<cudaStream_t>(gpu().stream());
    fn();  // warm-up
    cudaEvent_t a, b;
    cudaEventCreate(&a), cudaEventCreate(&b);
    cudaEventRecord(a, st);
    const int reps = 20;
    for (int r = 0; r < reps; ++r) fn();
    cudaEventRecord(b, st);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    cudaEventDestroy(a), cudaEventDestroy(b);
    return ms / reps;
  };
  for (const char* mode : {"kernel", "gemm"})
  with_attn_mode(mode, [&] {
  for (int64_t heads : {16, 128})
    for (int64_t n_ctx : {1024, 8192}) {
      const int64_t page = 64, pages = (n_ctx + page - 1) / page;
      Buffer<float> pool(gpu(), pages * page * 576), ql(gpu(), heads * 512), qp(gpu(), heads * 64),
          out(gpu(), heads * 512);
      Buffer<int32_t> table(gpu(), pages);
      std::vector<int32_t> t(pages);
      std::iota(t.begin(), t.end(), 0);
      gpu().upload(table.data(), t.data(), pages * sizeof(int32_t));
      gpu().fill_zero(pool.data(), pages * page * 576 * sizeof(float));
      gpu().fill_zero(ql.data(), heads * 512 * sizeof(float));
      gpu().fill_zero(qp.data(), heads * 64 * sizeof(float));
      PagedLatent c{pool.data(), table.data(), page, 512, 64};
      const float ms = time_ms([&] {
        gpu().mla_absorbed(ql.data(), qp.data(), 1, heads, c, n_ctx - 1, 0.07f, out.data());
      });
      char buf[96];
      std::snprintf(buf, sizeof buf, "%.3f ms (%.0f GB/s of cache)", ms,
                    n_ctx * 576 * 4.0 / (ms * 1e-3) / 1e9);
      line("time mla_abs", std::string(mode) + " " + shp({{"n_q", 1}, {"H", heads}, {"n_ctx", n_ctx}}), buf, true);
    }
  for (int64_t n_q : {512, 2048}) {
    const int64_t H = 16;
    Buffer<float> q(gpu(), n_q * H * 192), k(gpu(), n_q * H * 192), v(gpu(), n_q * H * 128),
        out(gpu(), n_q * H * 128);
    gpu().fill_zero(q.data(), n_q * H * 192 * sizeof(float));
    gpu().fill_zero(k.data(), n_q * H * 192 * sizeof(float));
    gpu().fill_zero(v.data(), n_q * H * 128 * sizeof(float));
    const float ms = time_ms([&] {
      gpu().attention(q.data(), k.data(), v.data(), n_q, n_q, H, 192, 128, 0, 0.07f, out.data());
    });
    char buf[96];
    std::snprintf(buf, sizeof buf, "%.3f ms", ms);
    line("time attention", std::string(mode) + " " + shp({{"n_q", n_q}, {"H", H}, {"d_qk", 192}, {"d_v", 128}}), buf, true);
  }
  });
  for (int64_t n : {1, 64}) {
    const WeightView w = gpu().prepare_weight(weight(DType::bf16, 4096, 7168).view());
    Buffer<float> x(gpu(), n * 7168), y(gpu(), n * 4096);
    gpu().fill_zero(x.data(), n * 7168 * sizeof(float));
    const float ms = time_ms([&] { gpu().linear(x.data(), n, w, y.data()); });
    char buf[96];
    std::snprintf(buf, sizeof buf, "%.3f ms (%.0f GB/s of weight)", ms, 4096 * 7168 * 2.0 / (ms * 1e-3) / 1e9);
    line("time linear", "bf16 " + shp({{"n", n}, {"rows", 4096}, {"cols", 7168}}), buf, true);
  }
}

// ---- Batched ops: linear_batched, kv_write, mla_decode, moe_experts.

TEST(BackendParity, LinearBatched) {
  // batch, n, rows, cols; ld_extra and col0 make the per-batch views strided (ld != cols).
  struct C { int64_t batch, n, rows, cols, ld_extra, col0; };
  const C cases[] = {{16, 0, 32, 24, 0, 0},  {16, 1, 32, 24, 0, 0},  {16, 7, 64, 128, 0, 0},
                     {4, 9, 40, 20, 12, 5},  {128, 3, 16, 32, 8, 8}, {3, 33, 100, 60, 4, 0},
                     {1, 5, 17, 9, 0, 0},    {16, 1, 48, 32, 16, 16}};
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
      const int64_t sx = c.cols + 3, sy = c.rows + 2;  // x [n, batch, sx], y [n, batch, sy]
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

TEST(BackendParity, KvWrite) {
  struct C { int64_t width, n, col0, cols; };
  const C cases[] = {{576, 0, 0, 576}, {576, 1, 0, 512}, {576, 37, 512, 64}, {48, 100, 3, 40},
                     {576, 300, 0, 576}};
  for (const C& c : cases) {
    const int64_t n_slots = 300;
    std::vector<int64_t> slots(n_slots);
    std::iota(slots.begin(), slots.end(), 0);
    std::shuffle(slots.begin(), slots.end(), rng());
    slots.resize(std::max<int64_t>(c.n, 1));
    const int64_t lds = c.cols + 5;
    Dual<int64_t> ds(slots);
    Dual<float> pool(rnd(n_slots * c.width)), src(rnd(std::max<int64_t>(c.n * lds, 1)));
    cpu().kv_write(pool.c.data(), c.width, ds.c.data(), c.n, c.col0, c.cols, src.c.data(), lds);
    gpu().kv_write(pool.g.data(), c.width, ds.g.data(), c.n, c.col0, c.cols, src.g.data(), lds);
    EXPECT_TRUE(close("kv_write", shp({{"width", c.width}, {"n", c.n}, {"col0", c.col0}, {"cols", c.cols}}),
                      pool.on_cpu(), pool.on_gpu(), 0.0));
  }
}

// A batch of sequences over one shuffled page pool: each sequence's table is a slice of a
// permutation of the pool, tables packed with gaps (so table_offset matters).
struct DecodeBatch {
  int64_t page_size, kv_lora, rope_dim, max_ctx = 0;
  std::vector<int32_t> ctx;
  Dual<float> pool;
  Dual<int32_t> pages, offsets, lens;
  static int64_t pool_pages(const std::vector<int64_t>& ctx, int64_t page) {
    int64_t p = 7;
    for (int64_t c : ctx) p += (c + page - 1) / page;
    return p;
  }
  static std::vector<int32_t> tables(const std::vector<int64_t>& ctx, int64_t page, int64_t n_pool,
                                     std::vector<int32_t>& off) {
    std::vector<int32_t> perm(n_pool), t;
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng());
    std::size_t next = 0;
    for (int64_t c : ctx) {
      off.push_back(static_cast<int32_t>(t.size()));
      for (int64_t p = 0; p < (c + page - 1) / page; ++p) t.push_back(perm[next++]);
      t.push_back(perm[n_pool - 1]), t.push_back(perm[n_pool - 2]);  // gap
    }
    if (t.empty()) t.push_back(0);
    return t;
  }
  DecodeBatch(const std::vector<int64_t>& c, int64_t page, int64_t lora, int64_t rope)
      : page_size(page), kv_lora(lora), rope_dim(rope),
        pool(rnd(pool_pages(c, page) * page * (lora + rope))), pages(1), offsets(1), lens(1) {
    std::vector<int32_t> off;
    const auto t = tables(c, page, pool_pages(c, page), off);
    for (int64_t v : c) ctx.push_back(static_cast<int32_t>(v)), max_ctx = std::max(max_ctx, v);
    if (off.empty()) off.push_back(0);
    std::vector<int32_t> len = ctx;
    if (len.empty()) len.push_back(1);
    pages = Dual<int32_t>(t), offsets = Dual<int32_t>(off), lens = Dual<int32_t>(len);
  }
  PagedBatch view(bool on_gpu) const {
    PagedBatch b;
    b.base = on_gpu ? pool.g.data() : pool.c.data();
    b.pages = on_gpu ? pages.g.data() : pages.c.data();
    b.table_offset = on_gpu ? offsets.g.data() : offsets.c.data();
    b.ctx_len = on_gpu ? lens.g.data() : lens.c.data();
    b.n_seqs = static_cast<int64_t>(ctx.size());
    b.page_size = page_size, b.kv_lora = kv_lora, b.rope_dim = rope_dim, b.max_ctx_len = max_ctx;
    return b;
  }
};

// Runs fn with the CUDA backend swapped for one made under DPA_CUDA_MLA_DECODE=variant.
void with_decode_variant(const char* variant, const std::function<void()>& fn) {
  setenv("DPA_CUDA_MLA_DECODE", variant, 1);
  std::unique_ptr<Backend> be = make_cuda_backend(0);
  unsetenv("DPA_CUDA_MLA_DECODE");
  std::swap(env().gpu, be);
  fn();
  std::swap(env().gpu, be);
}

TEST(BackendParity, MlaDecode) {
  struct C { const char* name; int64_t heads, page, lora, rope; std::vector<int64_t> ctx; };
  std::vector<int64_t> many(40);
  for (auto& c : many) c = rnd_int(1, 600);
  const std::vector<C> cases = {
      {"no seqs", 16, 16, 512, 64, {}},
      {"one seq ctx=1", 16, 16, 512, 64, {1}},
      {"one seq", 16, 16, 512, 64, {3001}},
      {"varied ctx", 16, 16, 512, 64, {1, 17, 300, 2049, 4100}},
      {"H=128", 128, 16, 512, 64, {1, 700, 2500}},
      {"H=20", 20, 16, 512, 64, {65, 1, 129, 16}},
      {"small dims H=3", 3, 4, 40, 8, {5, 1, 33, 64, 200}},
      {"40 seqs", 16, 16, 512, 64, many},
      {"lora 520 (fallback)", 4, 8, 520, 8, {9, 1, 40}},
  };
  for (const char* variant : {"v1", "v2"})
  with_decode_variant(variant, [&] {
  for (const C& c : cases) {
    DecodeBatch b(c.ctx, c.page, c.lora, c.rope);
    const int64_t n = static_cast<int64_t>(c.ctx.size());
    Dual<float> ql(rnd(std::max<int64_t>(n * c.heads * c.lora, 1))),
        qp(rnd(std::max<int64_t>(n * c.heads * c.rope, 1))),
        out(rnd(std::max<int64_t>(n * c.heads * c.lora, 1)));
    const float scale = 1.0f / std::sqrt(192.0f);
    cpu().mla_decode(ql.c.data(), qp.c.data(), c.heads, b.view(false), scale, out.c.data());
    gpu().mla_decode(ql.g.data(), qp.g.data(), c.heads, b.view(true), scale, out.g.data());
    EXPECT_TRUE(close("mla_decode", std::string(variant) + " " + c.name + " " +
                                        shp({{"seqs", n}, {"H", c.heads}, {"page", c.page},
                                             {"lora", c.lora}, {"rope", c.rope}, {"max_ctx", b.max_ctx}}),
                      out.on_cpu(), out.on_gpu(), 1e-4, 1e-6));
  }
  });
}

TEST(BackendParity, MoeExperts) {
  struct C { const char* name; DType dt; int64_t D, I; std::vector<int64_t> counts; int64_t ld_extra; bool mixed; };
  const std::vector<int64_t> few = {3, 0, 1, 10, 0, 7, 2, 5};
  const std::vector<int64_t> skewed = {0, 200, 1, 37, 0, 0, 90, 3, 150, 8, 0, 60, 2, 17, 33, 120};
  const std::vector<C> cases = {
      {"few", DType::f32, 64, 48, few, 0, false},
      {"few", DType::bf16, 64, 48, few, 0, false},
      {"skewed", DType::f32, 40, 24, skewed, 0, false},
      {"skewed", DType::bf16, 128, 96, skewed, 0, false},
      {"no rows", DType::bf16, 64, 48, {0, 0, 0, 0}, 0, false},
      {"one expert", DType::bf16, 64, 48, {0, 0, 5, 0}, 0, false},
      {"one row", DType::f32, 64, 48, {0, 1, 0}, 0, false},
      {"ld!=cols", DType::f32, 32, 24, {4, 0, 9, 1, 30, 2}, 8, false},
      {"ld!=cols", DType::bf16, 32, 24, {4, 0, 9, 1, 30, 2}, 8, false},
      {"mixed ld (loop)", DType::bf16, 32, 24, {4, 0, 9, 1, 30, 2}, 8, true},
  };
  for (const C& c : cases) {
    const int64_t E = static_cast<int64_t>(c.counts.size());
    int64_t total = 0;
    for (int64_t k : c.counts) total += k;
    std::vector<WeightView> gc, uc, dc, gg, ug, dg;
    for (int64_t e = 0; e < E; ++e) {
      const int64_t extra = c.ld_extra + (c.mixed && e == 2 ? 8 : 0);
      auto add = [&](int64_t rows, int64_t cols, std::vector<WeightView>& vc, std::vector<WeightView>& vg) {
        const HostWeight& w = weight(c.dt, rows, cols + extra, -0.5f, 0.5f);
        vc.push_back(cpu().prepare_weight(w.view()).col_slice(0, cols));
        vg.push_back(gpu().prepare_weight(w.view()).col_slice(0, cols));
      };
      add(c.I, c.D, gc, gg);
      add(c.I, c.D, uc, ug);
      add(c.D, c.I, dc, dg);
    }
    std::vector<int32_t> order(std::max<int64_t>(total, 1));
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng());
    Dual<int32_t> dord(order);
    Dual<float> x(rnd(std::max<int64_t>(total * c.D, 1))), out(rnd(std::max<int64_t>(total * c.D, 1)));
    cpu().moe_experts(x.c.data(), dord.c.data(), c.counts.data(), E, gc.data(), uc.data(), dc.data(), out.c.data());
    gpu().moe_experts(x.g.data(), dord.g.data(), c.counts.data(), E, gg.data(), ug.data(), dg.data(), out.g.data());
    EXPECT_TRUE(close("moe_experts", dt(c.dt) + " " + c.name + " " +
                                         shp({{"E", E}, {"rows", total}, {"D", c.D}, {"I", c.I}}),
                      out.on_cpu(), out.on_gpu(), c.dt == DType::f32 ? 2e-5 : 2e-2, 1e-5));
  }
}

// Not a parity check: the batched ops against the loops they replace (GPU times).
TEST(BackendParity, TimingBatched) {
  auto time_ms = [](auto&& fn) {
    cudaStream_t st = static_cast<cudaStream_t>(gpu().stream());
    fn();  // warm-up
    cudaEvent_t a, b;
    cudaEventCreate(&a), cudaEventCreate(&b);
    cudaEventRecord(a, st);
    const int reps = 20;
    for (int r = 0; r < reps; ++r) fn();
    cudaEventRecord(b, st);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    cudaEventDestroy(a), cudaEventDestroy(b);
    return ms / reps;
  };
  // mla_decode vs one mla_absorbed per sequence (default attention form).
  struct M { int64_t seqs, ctx, heads; };
  const M ms[] = {{1, 512, 16},  {1, 4096, 16},  {32, 512, 16},  {32, 4096, 16},
                  {128, 512, 16}, {128, 4096, 16}, {32, 4096, 128}};
  for (const M& m : ms) {
    const int64_t page = 16, per = (m.ctx + page - 1) / page, n_pages = m.seqs * per, L = 512, R = 64;
    Buffer<float> pool(gpu(), n_pages * page * (L + R)), ql(gpu(), m.seqs * m.heads * L),
        qp(gpu(), m.seqs * m.heads * R), out(gpu(), m.seqs * m.heads * L);
    gpu().fill_zero(pool.data(), n_pages * page * (L + R) * sizeof(float));
    gpu().fill_zero(ql.data(), m.seqs * m.heads * L * sizeof(float));
    gpu().fill_zero(qp.data(), m.seqs * m.heads * R * sizeof(float));
    std::vector<int32_t> t(n_pages), off(m.seqs), len(m.seqs, static_cast<int32_t>(m.ctx));
    std::iota(t.begin(), t.end(), 0);
    std::shuffle(t.begin(), t.end(), rng());
    for (int64_t s = 0; s < m.seqs; ++s) off[s] = static_cast<int32_t>(s * per);
    Buffer<int32_t> table(gpu(), n_pages), doff(gpu(), m.seqs), dlen(gpu(), m.seqs);
    gpu().upload(table.data(), t.data(), n_pages * sizeof(int32_t));
    gpu().upload(doff.data(), off.data(), m.seqs * sizeof(int32_t));
    gpu().upload(dlen.data(), len.data(), m.seqs * sizeof(int32_t));
    PagedBatch pb;
    pb.base = pool.data(), pb.pages = table.data(), pb.table_offset = doff.data(), pb.ctx_len = dlen.data();
    pb.n_seqs = m.seqs, pb.page_size = page, pb.kv_lora = L, pb.rope_dim = R, pb.max_ctx_len = m.ctx;
    float v1 = 0;
    gpu().synchronize();  // the inputs are written on this backend's stream
    with_decode_variant("v1", [&] {
      v1 = time_ms([&] { gpu().mla_decode(ql.data(), qp.data(), m.heads, pb, 0.07f, out.data()); });
    });
    const float fused = time_ms([&] { gpu().mla_decode(ql.data(), qp.data(), m.heads, pb, 0.07f, out.data()); });
    const float loop = time_ms([&] {
      for (int64_t s = 0; s < m.seqs; ++s) {
        PagedLatent c{pool.data(), table.data() + off[s], page, L, R};
        gpu().mla_absorbed(ql.data() + s * m.heads * L, qp.data() + s * m.heads * R, 1, m.heads, c,
                           m.ctx - 1, 0.07f, out.data() + s * m.heads * L);
      }
    });
    char buf[128];
    std::snprintf(buf, sizeof buf, "%.3f ms (%.0f GB/s) v1 %.3f ms loop %.3f ms: x%.1f", fused,
                  m.seqs * m.ctx * (L + R) * 4.0 / (fused * 1e-3) / 1e9, v1, loop, loop / fused);
    line("time mla_dec", shp({{"seqs", m.seqs}, {"ctx", m.ctx}, {"H", m.heads}, {"page", page}}), buf, true);
  }
  // moe_experts vs the per-expert loop (gather, gate, up, silu_mul, down, scatter).
  {
    const int64_t E = 64, D = 2048, I = 1408;
    const std::size_t per = static_cast<std::size_t>(I * D);
    Buffer<uint16_t> wbuf(gpu(), 3 * E * per);
    gpu().fill_zero(wbuf.data(), 3 * E * per * sizeof(uint16_t));
    std::vector<WeightView> g, u, d;
    for (int64_t e = 0; e < E; ++e) {
      g.push_back(WeightView::dense(wbuf.data() + (3 * e) * per, DType::bf16, I, D));
      u.push_back(WeightView::dense(wbuf.data() + (3 * e + 1) * per, DType::bf16, I, D));
      d.push_back(WeightView::dense(wbuf.data() + (3 * e + 2) * per, DType::bf16, D, I));
    }
    for (int64_t total : {192, 3072}) {
      std::vector<int64_t> counts(E, 0);
      for (int64_t r = 0; r < total; ++r) ++counts[rnd_int(0, E - 1)];
      int64_t mx = 0, nz = 0;
      for (int64_t c : counts) mx = std::max(mx, c), nz += c > 0;
      std::vector<int32_t> order(total);
      std::iota(order.begin(), order.end(), 0);
      Buffer<int32_t> dord(gpu(), total);
      gpu().upload(dord.data(), order.data(), total * sizeof(int32_t));
      Buffer<float> x(gpu(), total * D), out(gpu(), total * D), xe(gpu(), total * D), ye(gpu(), total * D),
          ge(gpu(), total * I), ue(gpu(), total * I);
      gpu().fill_zero(x.data(), total * D * sizeof(float));
      const float fused = time_ms([&] {
        gpu().moe_experts(x.data(), dord.data(), counts.data(), E, g.data(), u.data(), d.data(), out.data());
      });
      const float loop = time_ms([&] {
        int64_t pos = 0;
        for (int64_t e = 0; e < E; ++e) {
          const int64_t c = counts[e];
          if (!c) continue;
          gpu().gather_rows(x.data(), dord.data() + pos, c, D, xe.data());
          gpu().linear(xe.data(), c, g[e], ge.data());
          gpu().linear(xe.data(), c, u[e], ue.data());
          gpu().silu_mul(ge.data(), ue.data(), c * I, ge.data());
          gpu().linear(ge.data(), c, d[e], ye.data());
          gpu().scatter_rows(ye.data(), dord.data() + pos, c, D, out.data());
          pos += c;
        }
      });
      char buf[128];
      std::snprintf(buf, sizeof buf, "%.3f ms (%.0f GB/s of weight) loop %.3f ms: x%.1f", fused,
                    nz * 3.0 * per * 2 / (fused * 1e-3) / 1e9, loop, loop / fused);
      line("time moe_exp", "bf16 " + shp({{"E", E}, {"rows", total}, {"max", mx}, {"D", D}, {"I", I}}), buf, true);
    }
  }
  // linear_batched vs a loop of copy2d + linear + copy2d (MLA's per-head W_UK absorption).
  for (DType dtp : {DType::f32, DType::bf16})
    for (int64_t n : {1, 64, 256}) {
      const int64_t H = 16, rows = 512, cols = 128;
      Buffer<char> w(gpu(), H * rows * cols * dtype_size(dtp));
      gpu().fill_zero(w.data(), H * rows * cols * dtype_size(dtp));
      const WeightView wv = WeightView::dense(w.data(), dtp, rows, cols);
      Buffer<float> x(gpu(), n * H * 192), y(gpu(), n * H * rows), xb(gpu(), n * cols), yb(gpu(), n * rows);
      gpu().fill_zero(x.data(), n * H * 192 * sizeof(float));
      const float fused = time_ms([&] {
        gpu().linear_batched(x.data(), H * 192, 192, n, wv, rows * cols, H, y.data(), H * rows, rows);
      });
      const float loop = time_ms([&] {
        for (int64_t b = 0; b < H; ++b) {
          WeightView wb = wv;
          wb.data = static_cast<const char*>(wv.data) + b * rows * cols * static_cast<int64_t>(dtype_size(dtp));
          gpu().copy2d(xb.data(), cols, x.data() + b * 192, H * 192, n, cols);
          gpu().linear(xb.data(), n, wb, yb.data());
          gpu().copy2d(y.data() + b * rows, H * rows, yb.data(), rows, n, rows);
        }
      });
      char buf[128];
      std::snprintf(buf, sizeof buf, "%.3f ms loop %.3f ms: x%.1f", fused, loop, loop / fused);
      line("time lin_bat", dt(dtp) + " " + shp({{"batch", H}, {"n", n}, {"rows", rows}, {"cols", cols}}), buf, true);
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

}  // namespace
}  // namespace dpa::backend

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("backend_parity: no CUDA device, skipped\n");
    return 77;
  }
  ::testing::InitGoogleTest(&argc, argv);
  auto& e = dpa::backend::env();
  e.cpu = dpa::backend::make_cpu_backend();
  e.gpu = dpa::backend::make_cuda_backend(0);
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("backend_parity: cpu vs %s on %s\n", e.gpu->name().c_str(), prop.name);
  std::printf("%-14s %-46s %-40s %s\n", "op", "shape", "max error", "result");
  const int rc = RUN_ALL_TESTS();
  std::printf("backend_parity: %d table line(s) failed\n", dpa::backend::g_failures);
  e.gpu.reset();
  e.cpu.reset();
  return rc;
}
