// CPU backend: embedding, the KV write by slot, RMSNorm, linear (f32 and bf16 views), SiLU-gate, RoPE, attention and
// absorbed MLA, each checked against a naive formula written independently here.
#include <gtest/gtest.h>

#include <cmath>
#include <complex>
#include <random>
#include <vector>

#include "backend/backend.h"

namespace dpa::backend {
namespace {

std::vector<float> random_vec(std::size_t n, unsigned seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

TEST(BackendOps, EmbeddingAndBf16Rows) {
  auto be = make_cpu_backend();
  std::vector<float> table = random_vec(5 * 3, 1);
  std::vector<uint16_t> tb(table.size());
  for (std::size_t i = 0; i < table.size(); ++i) tb[i] = f32_to_bf16(table[i]);
  const int32_t ids[2] = {4, 1};
  std::vector<float> out(6);
  be->embedding(WeightView::dense(tb.data(), DType::bf16, 5, 3), ids, 2, out.data());
  for (int c = 0; c < 3; ++c) {
    EXPECT_EQ(out[c], bf16_to_f32(tb[4 * 3 + c]));
    EXPECT_EQ(out[3 + c], bf16_to_f32(tb[1 * 3 + c]));
  }
  const int32_t bad = 5;
  EXPECT_ANY_THROW(be->embedding(WeightView::dense(tb.data(), DType::bf16, 5, 3), &bad, 1, out.data()));
}

// mask_logits: a masked row keeps exactly the ids whose bits are set (the last word partly past
// the vocabulary); the other rows are untouched.
TEST(BackendOps, MaskLogitsKeepsTheSetBits) {
  auto be = make_cpu_backend();
  const int64_t vocab = 70, rows = 4;
  ASSERT_EQ(token_mask_words(vocab), 3);
  std::vector<float> logits = random_vec(static_cast<std::size_t>(vocab * rows), 7);
  const std::vector<float> before = logits;
  const std::vector<int32_t> which = {3, 1};
  // Row 3: ids 0, 31, 32 and 69 kept, and bit 70 (past the vocabulary) set; row 1: none but 5.
  const std::vector<uint32_t> masks = {1u | 1u << 31, 1u, 1u << 5 | 1u << 6, 1u << 5, 0u, 0u};
  be->mask_logits(logits.data(), vocab, masks.data(), which.data(), 2);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t = 0; t < vocab; ++t) {
      const float x = logits[r * vocab + t], was = before[r * vocab + t];
      const bool kept = r == 0 || r == 2 || (r == 3 && (t == 0 || t == 31 || t == 32 || t == 69)) || (r == 1 && t == 5);
      if (kept) EXPECT_EQ(x, was) << r << "," << t;
      else EXPECT_TRUE(std::isinf(x) && x < 0) << r << "," << t;
    }
}

// kv_write: rows land at their slots' columns [col0, col0 + cols) of the cache rows; a negative
// slot (a padding row of a decode step) writes nothing.
TEST(BackendOps, KvWriteBySlotSkippingNegative) {
  auto be = make_cpu_backend();
  const int64_t width = 6, n_slots = 5, cols = 4, col0 = 1, lds = 5;
  std::vector<float> cache(static_cast<std::size_t>(n_slots * width), -7.0f);
  const std::vector<float> src = random_vec(3 * lds, 3);
  const int64_t slots[3] = {3, -1, 0};
  be->kv_write(cache.data(), DType::f32, width, slots, 3, col0, cols, src.data(), lds);
  for (int64_t s = 0; s < n_slots; ++s)
    for (int64_t c = 0; c < width; ++c) {
      float want = -7.0f;
      if (c >= col0 && c < col0 + cols && (s == 3 || s == 0)) want = src[(s == 3 ? 0 : 2) * lds + c - col0];
      EXPECT_EQ(cache[s * width + c], want) << "slot " << s << " column " << c;
    }
}

TEST(BackendOps, RmsNorm) {
  auto be = make_cpu_backend();
  const int n = 3, d = 8;
  auto x = random_vec(n * d, 2, 3.0f);
  auto w = random_vec(d, 3);
  std::vector<float> out(n * d), res(x), out2(n * d);
  be->rms_norm(x.data(), WeightView::dense(w.data(), DType::f32, 1, d), n, 1e-6f, out.data());
  for (int i = 0; i < n; ++i) {
    double ms = 0;
    for (int j = 0; j < d; ++j) ms += std::pow(x[i * d + j], 2) / d;
    for (int j = 0; j < d; ++j)
      EXPECT_NEAR(out[i * d + j], x[i * d + j] / std::sqrt(ms + 1e-6) * w[j], 1e-5);
  }
  // add_rms_norm: residual += x then the norm.
  auto y = random_vec(n * d, 4);
  be->add_rms_norm(res.data(), y.data(), WeightView::dense(w.data(), DType::f32, 1, d), n, 1e-6f, out2.data());
  for (int i = 0; i < n * d; ++i) EXPECT_FLOAT_EQ(res[i], x[i] + y[i]);
}

TEST(BackendOps, LinearF32Bf16AndSlices) {
  auto be = make_cpu_backend();
  const int n = 2, in = 7, outd = 5;
  auto x = random_vec(n * in, 5);
  auto w = random_vec(outd * in, 6);
  std::vector<float> y(n * outd);
  be->linear(x.data(), n, WeightView::dense(w.data(), DType::f32, outd, in), y.data());
  for (int i = 0; i < n; ++i)
    for (int r = 0; r < outd; ++r) {
      double s = 0;
      for (int c = 0; c < in; ++c) s += double(w[r * in + c]) * x[i * in + c];
      EXPECT_NEAR(y[i * outd + r], s, 1e-5);
    }
  // bf16 weights: same as f32 weights rounded to bf16 first.
  std::vector<uint16_t> wb(w.size());
  for (std::size_t i = 0; i < w.size(); ++i) wb[i] = f32_to_bf16(w[i]);
  be->linear(x.data(), n, WeightView::dense(wb.data(), DType::bf16, outd, in), y.data());
  for (int i = 0; i < n; ++i)
    for (int r = 0; r < outd; ++r) {
      double s = 0;
      for (int c = 0; c < in; ++c) s += double(bf16_to_f32(wb[r * in + c])) * x[i * in + c];
      EXPECT_NEAR(y[i * outd + r], s, 1e-5);
    }
  // Column slice [2, 5) and row slice [1, 4): a sub-matrix without copies.
  const auto sub = WeightView::dense(w.data(), DType::f32, outd, in).slice(1, 4, 2, 5);
  std::vector<float> xs(n * 3), ys(n * 3);
  for (int i = 0; i < n; ++i)
    for (int c = 0; c < 3; ++c) xs[i * 3 + c] = x[i * in + c];
  be->linear(xs.data(), n, sub, ys.data());
  for (int i = 0; i < n; ++i)
    for (int r = 0; r < 3; ++r) {
      double s = 0;
      for (int c = 0; c < 3; ++c) s += double(w[(r + 1) * in + c + 2]) * xs[i * 3 + c];
      EXPECT_NEAR(ys[i * 3 + r], s, 1e-5);
    }
  EXPECT_ANY_THROW(sub.slice(0, 4, 0, 1));
}

TEST(BackendOps, SiluMulAndArgmax) {
  auto be = make_cpu_backend();
  std::vector<float> g = {-2.0f, 0.0f, 1.5f}, u = {3.0f, 2.0f, -1.0f}, o(3);
  be->silu_mul(g.data(), u.data(), 3, o.data());
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(o[i], g[i] * u[i] / (1 + std::exp(-double(g[i]))), 1e-6);
  std::vector<float> l = {1, 5, 5, 2, /**/ -1, -3, -0.5f, -0.5f};
  int32_t best[2];
  be->argmax(l.data(), 2, 4, best);
  EXPECT_EQ(best[0], 1);  // lowest index on ties
  EXPECT_EQ(best[1], 2);
}

// RoPE as complex multiplication: pair (x[2i], x[2i+1]) is x[2i] + i·x[2i+1], rotated by
// e^{i·pos·f_i} and scaled.
TEST(BackendOps, RopeIsComplexRotation) {
  auto be = make_cpu_backend();
  const int n = 3, heads = 2, stride_head = 10, rope_off = 4, dim = 6;
  auto x = random_vec(n * heads * stride_head, 7);
  auto orig = x;
  std::vector<float> inv = {1.0f, 0.1f, 0.01f};
  const int64_t pos[3] = {0, 5, 17};
  RopeParams p{inv.data(), dim, 1.25f};
  be->rope(x.data() + rope_off, n, heads, heads * stride_head, stride_head, pos, p);
  for (int t = 0; t < n; ++t)
    for (int h = 0; h < heads; ++h) {
      const int base = t * heads * stride_head + h * stride_head;
      for (int j = 0; j < rope_off; ++j) EXPECT_EQ(x[base + j], orig[base + j]);
      for (int i = 0; i < dim / 2; ++i) {
        std::complex<double> z(orig[base + rope_off + 2 * i], orig[base + rope_off + 2 * i + 1]);
        z *= std::polar(1.25, double(pos[t]) * inv[i]);
        EXPECT_NEAR(x[base + rope_off + 2 * i], z.real(), 2e-5);
        EXPECT_NEAR(x[base + rope_off + 2 * i + 1], z.imag(), 2e-5);
      }
    }
}

// Naive causal attention in double: scores, softmax with the max trick omitted, weighted sum.
std::vector<double> naive_attention(const std::vector<float>& q, const std::vector<float>& k,
                                    const std::vector<float>& v, int nq, int nkv, int H, int dqk,
                                    int dv, int start, double scale) {
  std::vector<double> out(nq * H * dv, 0.0);
  for (int i = 0; i < nq; ++i)
    for (int h = 0; h < H; ++h) {
      std::vector<double> e;
      double z = 0;
      for (int j = 0; j <= start + i && j < nkv; ++j) {
        double s = 0;
        for (int c = 0; c < dqk; ++c) s += double(q[(i * H + h) * dqk + c]) * k[(j * H + h) * dqk + c];
        e.push_back(std::exp(s * scale));
        z += e.back();
      }
      for (std::size_t j = 0; j < e.size(); ++j)
        for (int c = 0; c < dv; ++c) out[(i * H + h) * dv + c] += e[j] / z * v[(j * H + h) * dv + c];
    }
  return out;
}

TEST(BackendOps, CausalAttentionWithCachedPrefix) {
  auto be = make_cpu_backend();
  const int nq = 3, nkv = 7, H = 2, dqk = 5, dv = 4, start = 4;
  auto q = random_vec(nq * H * dqk, 8), k = random_vec(nkv * H * dqk, 9), v = random_vec(nkv * H * dv, 10);
  std::vector<float> out(nq * H * dv);
  be->attention(q.data(), k.data(), v.data(), nq, nkv, H, dqk, dv, start, 0.3f, out.data());
  auto ref = naive_attention(q, k, v, nq, nkv, H, dqk, dv, start, 0.3);
  for (std::size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], ref[i], 1e-5);
  // The first query of a fresh sequence sees only itself: output = its own value.
  be->attention(q.data(), k.data(), v.data(), 1, nkv, H, dqk, dv, 0, 0.3f, out.data());
  for (int h = 0; h < H; ++h)
    for (int c = 0; c < dv; ++c) EXPECT_NEAR(out[h * dv + c], v[h * dv + c], 1e-6);
}

// Absorbed MLA over scattered pages equals the expanded attention with k = [latent, k_pe] for
// every head and v = latent (W_UK and W_UV as identities).
TEST(BackendOps, AbsorbedMlaOverPages) {
  auto be = make_cpu_backend();
  const int L = 6, R = 4, H = 3, page = 2, nq = 2, start = 3, nctx = start + nq;
  const int n_pages = 5;
  auto pool = random_vec(n_pages * page * (L + R), 11);
  const int32_t table[3] = {4, 0, 2};
  PagedLatent c{pool.data(), table, page, L, R};
  auto ql = random_vec(nq * H * L, 12), qp = random_vec(nq * H * R, 13);
  std::vector<float> out(nq * H * L);
  be->mla_absorbed(ql.data(), qp.data(), nq, H, c, start, 0.7f, out.data());
  std::vector<float> q(nq * H * (L + R)), k(nctx * H * (L + R)), v(nctx * H * L);
  for (int i = 0; i < nq; ++i)
    for (int h = 0; h < H; ++h)
      for (int a = 0; a < L + R; ++a)
        q[(i * H + h) * (L + R) + a] = a < L ? ql[(i * H + h) * L + a] : qp[(i * H + h) * R + a - L];
  for (int j = 0; j < nctx; ++j) {
    const float* tok = pool.data() + (table[j / page] * page + j % page) * (L + R);
    for (int h = 0; h < H; ++h) {
      for (int a = 0; a < L + R; ++a) k[(j * H + h) * (L + R) + a] = tok[a];
      for (int a = 0; a < L; ++a) v[(j * H + h) * L + a] = tok[a];
    }
  }
  auto ref = naive_attention(q, k, v, nq, nctx, H, L + R, L, start, 0.7);
  for (std::size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], ref[i], 1e-5);
}

}  // namespace
}  // namespace dpa::backend
