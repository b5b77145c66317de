// Shared by the parity test files: the CPU and CUDA backends under test, random inputs, the
// result table (one line per op and shape), data mirrored on both backends, paged caches.
#pragma once

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

struct Env {
  std::unique_ptr<Backend> cpu, gpu;
};
inline Env& env() {
  static Env e;
  return e;
}
inline Backend& cpu() { return *env().cpu; }
inline Backend& gpu() { return *env().gpu; }

inline std::mt19937& rng() {
  static std::mt19937 g(12345);
  return g;
}
inline std::vector<float> rnd(std::size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng());
  return v;
}
inline int64_t rnd_int(int64_t lo, int64_t hi) {  // [lo, hi]
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng());
}

// ---- The table.
inline int g_failures = 0;
inline void line(const std::string& op, const std::string& shape, const std::string& what, bool ok) {
  std::printf("%-14s %-46s %-40s %s\n", op.c_str(), shape.c_str(), what.c_str(), ok ? "OK" : "FAIL");
  std::fflush(stdout);
  if (!ok) ++g_failures;
}

// |got - ref| <= atol + rtol * max|ref| everywhere.
inline bool close(const std::string& op, const std::string& shape, const std::vector<float>& ref,
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
inline bool exact(const std::string& op, const std::string& shape, const std::vector<T>& ref,
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
inline const HostWeight& weight(DType dt, int64_t r, int64_t c, float lo = -1.0f, float hi = 1.0f) {
  static std::deque<HostWeight> kept;
  return kept.emplace_back(dt, r, c, lo, hi);
}

inline std::string dt(DType d) { return std::string(dtype_name(d)); }
inline std::string shp(std::initializer_list<std::pair<const char*, int64_t>> kv) {
  std::string s;
  for (auto& [k, v] : kv) s += (s.empty() ? "" : " ") + std::string(k) + "=" + std::to_string(v);
  return s;
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

// Runs fn with the CUDA backend swapped for one made under the environment variable var=value.
inline void with_env_backend(const char* var, const char* value, const std::function<void()>& fn) {
  setenv(var, value, 1);
  std::unique_ptr<Backend> be = make_cuda_backend(0);
  unsetenv(var);
  std::swap(env().gpu, be);
  fn();
  std::swap(env().gpu, be);
}

// DPA_CUDA_ATTN=mode ("kernel": the fused kernel, split over keys for long contexts; "gemm":
// cuBLAS around a masked softmax).
inline void with_attn_mode(const char* mode, const std::function<void()>& fn) {
  with_env_backend("DPA_CUDA_ATTN", mode, fn);
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

// DPA_CUDA_MLA_DECODE=variant (the fp32 kernel's versions, v1 and v2).
inline void with_decode_variant(const char* variant, const std::function<void()>& fn) {
  with_env_backend("DPA_CUDA_MLA_DECODE", variant, fn);
}

}  // namespace dpa::backend
