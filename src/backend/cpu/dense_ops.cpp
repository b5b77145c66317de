// CPU reference: embedding, RMSNorm, linear, elementwise ops, argmax and sampling.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <thread>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"

namespace dpa::backend {

void* CpuBackend::alloc(std::size_t bytes) {
  void* p = std::malloc(bytes ? bytes : 1);
  if (!p) fail_one("cpu", "malloc", __FILE__, __LINE__, fmt::format("out of host memory allocating {} bytes", bytes));
  return p;
}

void load_row(const WeightView& w, int64_t r, float* dst) {
  if (w.dtype == DType::f32) {
    const float* src = static_cast<const float*>(w.data) + r * w.ld;
    for (int64_t c = 0; c < w.cols; ++c) dst[c] = src[c];
  } else if (w.dtype == DType::bf16) {
    const uint16_t* src = static_cast<const uint16_t*>(w.data) + r * w.ld;
    for (int64_t c = 0; c < w.cols; ++c) dst[c] = bf16_to_f32(src[c]);
  } else {
    throw Error(fmt::format("cpu backend: weight dtype {} not supported", dtype_name(w.dtype)));
  }
}

void CpuBackend::embedding(const WeightView& table, const int32_t* ids, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= table.rows)
      throw Error(fmt::format("token id {} outside the vocabulary [0, {})", ids[i], table.rows));
    load_row(table, ids[i], out + i * table.cols);
  }
}

void CpuBackend::rms_norm(const float* x, const WeightView& w, int64_t n, float eps, float* out) {
  const int64_t d = w.cols;
  std::vector<float> g(d);
  load_row(w, 0, g.data());
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = x + i * d;
    double ss = 0;
    for (int64_t j = 0; j < d; ++j) ss += static_cast<double>(xi[j]) * xi[j];
    // transformers: x * rsqrt(mean(x^2) + eps) in fp32, then times the weight.
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(d) + eps));
    float* oi = out + i * d;
    for (int64_t j = 0; j < d; ++j) oi[j] = g[j] * (xi[j] * inv);
  }
}

void CpuBackend::add_rms_norm(float* residual, const float* x, const WeightView& w, int64_t n,
                              float eps, float* out) {
  add(residual, x, n * w.cols);
  rms_norm(residual, w, n, eps, out);
}

void CpuBackend::linear(const float* x, int64_t n, const WeightView& w, float* y) {
  std::vector<float> row(w.cols);
  for (int64_t r = 0; r < w.rows; ++r) {
    load_row(w, r, row.data());  // each weight row is converted once, used by every token
    for (int64_t i = 0; i < n; ++i) {
      const float* xi = x + i * w.cols;
      double acc = 0;
      for (int64_t c = 0; c < w.cols; ++c) acc += static_cast<double>(xi[c]) * row[c];
      y[i * w.rows + r] = static_cast<float>(acc);
    }
  }
}

void CpuBackend::copy2d(float* dst, int64_t ldd, const float* src, int64_t lds, int64_t rows,
                        int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) std::copy_n(src + r * lds, cols, dst + r * ldd);
}

void CpuBackend::linear_batched(const float* x, int64_t ldx, int64_t stride_x, int64_t n,
                                const WeightView& w, int64_t w_stride, int64_t batch, float* y,
                                int64_t ldy, int64_t stride_y) {
  std::vector<float> xb(static_cast<std::size_t>(n * w.cols)), yb(static_cast<std::size_t>(n * w.rows));
  for (int64_t b = 0; b < batch; ++b) {
    WeightView wb = w;
    wb.data = static_cast<const char*>(w.data) + b * w_stride * static_cast<int64_t>(dtype_size(w.dtype));
    copy2d(xb.data(), w.cols, x + b * stride_x, ldx, n, w.cols);
    linear(xb.data(), n, wb, yb.data());
    copy2d(y + b * stride_y, ldy, yb.data(), w.rows, n, w.rows);
  }
}

void require_f32_cache(DType dtype, const char* op) {
  if (dtype != DType::f32)
    throw Error(fmt::format("cpu backend: {} on a {} KV cache (the CPU keeps float32 caches)", op, dtype_name(dtype)));
}

void CpuBackend::kv_write(void* base, DType dtype, int64_t width, const int64_t* slots, int64_t n,
                          int64_t col0, int64_t cols, const float* src, int64_t lds) {
  require_f32_cache(dtype, "kv_write");
  auto* b = static_cast<float*>(base);
  for (int64_t i = 0; i < n; ++i)
    if (slots[i] >= 0) std::copy_n(src + i * lds, cols, b + slots[i] * width + col0);
}

void CpuBackend::add(float* y, const float* x, int64_t count) {
  for (int64_t i = 0; i < count; ++i) y[i] += x[i];
}

void CpuBackend::silu_mul(const float* gate, const float* up, int64_t count, float* out) {
  for (int64_t i = 0; i < count; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void CpuBackend::take_tokens(int32_t* dst, const int32_t* src, int64_t stride, const int32_t* pairs, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[pairs[2 * i]] = src[pairs[2 * i + 1] * stride];
}

void CpuBackend::argmax(const float* logits, int64_t n, int64_t vocab, int32_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float* l = logits + i * vocab;
    int64_t best = 0;
    for (int64_t v = 1; v < vocab; ++v)
      if (l[v] > l[best]) best = v;
    out[i] = static_cast<int32_t>(best);
  }
}

void CpuBackend::edit_logits(float* logits, int64_t vocab, const LogitEdit* edits, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    float& x = logits[static_cast<int64_t>(edits[i].row) * vocab + edits[i].token];
    x = apply_logit_edit(x, edits[i]);
  }
}

void CpuBackend::mask_logits(float* logits, int64_t vocab, const uint32_t* masks, const int32_t* rows, int64_t n) {
  const int64_t words = token_mask_words(vocab);
  for (int64_t i = 0; i < n; ++i) {
    float* l = logits + static_cast<int64_t>(rows[i]) * vocab;
    const uint32_t* m = masks + i * words;
    for (int64_t t = 0; t < vocab; ++t)
      if (!((m[t >> 5] >> (t & 31)) & 1u)) l[t] = -std::numeric_limits<float>::infinity();
  }
}

void CpuBackend::sample(const float* logits, int64_t n, int64_t vocab, const SampleSpec* specs,
                        SampleOut* out) {
  // Rows are independent (a vocabulary-sized row costs about a millisecond): several threads
  // when there are many.
  const int64_t threads = std::min<int64_t>({n / 4, std::thread::hardware_concurrency(), 16});
  auto run = [&](int64_t first, int64_t step) {
    for (int64_t i = first; i < n; i += step) sample_row_reference(logits + i * vocab, vocab, specs[i], out[i]);
  };
  if (threads <= 1) return run(0, 1);
  std::vector<std::thread> pool;
  for (int64_t t = 0; t < threads; ++t) pool.emplace_back(run, t, threads);
  for (auto& th : pool) th.join();
}

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace dpa::backend
