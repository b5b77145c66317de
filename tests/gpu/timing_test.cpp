// Not parity checks: GPU times of a few decode-shaped ops and of the batched ops against the
// loops they replace, printed in the table for the record (no bound).
#include <chrono>

#include "parity_util.h"

namespace dpa::backend {
namespace {

// Mean GPU time of fn over 20 runs on the CUDA backend's stream, after one warm-up.
template <class F>
float time_ms(F&& fn) {
  cudaStream_t st = static_cast<cudaStream_t>(gpu().stream());
  fn();
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
}

TEST(BackendParity, Timing) {
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

TEST(BackendParity, TimingBatched) {
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
        gpu().moe_experts(x.data(), dord.data(), 1, counts.data(), E, g.data(), u.data(), d.data(), out.data());
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
// Prefill attention over a bf16 cache (TF32 allowed): the GEMM form (cuBLAS, scores in fp32
// memory, masked softmax) against the flash kernel, one sequence of n tokens, 16 heads.
TEST(BackendParity, TimingFlash) {
  for (const char* mode : {"gemm", "auto"})
    with_attn_mode(mode, [&] {
      gpu().set_attention_tf32(true);
      for (int64_t n_q : {1024, 4096}) {
        const int64_t H = 16;
        Buffer<float> q(gpu(), n_q * H * 192), k(gpu(), n_q * H * 192), v(gpu(), n_q * H * 128),
            out(gpu(), n_q * H * 128);
        const auto hq = rnd(n_q * H * 192), hk = rnd(n_q * H * 192), hv = rnd(n_q * H * 128);
        gpu().upload(q.data(), hq.data(), hq.size() * sizeof(float));
        gpu().upload(k.data(), hk.data(), hk.size() * sizeof(float));
        gpu().upload(v.data(), hv.data(), hv.size() * sizeof(float));
        const float ms = time_ms([&] {
          gpu().attention(q.data(), k.data(), v.data(), n_q, n_q, H, 192, 128, 0, 0.07f, out.data());
        });
        const double flops = static_cast<double>(H) * n_q * (n_q + 1) / 2 * (192 + 128) * 2;
        char buf[96];
        std::snprintf(buf, sizeof buf, "%.3f ms, %.0f TFLOP/s (causal)", ms, flops / (ms * 1e-3) / 1e12);
        line("time attention", std::string(mode == std::string("auto") ? "flash" : "gemm tf32") + " " +
                                   shp({{"n_q", n_q}, {"H", H}, {"d_qk", 192}, {"d_v", 128}}), buf, true);
      }
    });
}

// A prefill step's expanded attention: 8 sequences of 1,024 tokens, one call each against one
// packed call (attention_packed).
TEST(BackendParity, TimingFlashPacked) {
  with_attn_mode("auto", [&] {
    gpu().set_attention_tf32(true);
    const int64_t H = 16, n = 1024, S = 8, rows = S * n;
    Buffer<float> q(gpu(), rows * H * 192), k(gpu(), rows * H * 192), v(gpu(), rows * H * 128),
        out(gpu(), rows * H * 128);
    const auto hq = rnd(rows * H * 192), hv = rnd(rows * H * 128);
    gpu().upload(q.data(), hq.data(), hq.size() * sizeof(float));
    gpu().upload(k.data(), hq.data(), hq.size() * sizeof(float));
    gpu().upload(v.data(), hv.data(), hv.size() * sizeof(float));
    std::vector<PackedSeq> seqs;
    for (int64_t i = 0; i < S; ++i) seqs.push_back(PackedSeq{i * n, n, i * n, n, 0});
    const double flops = static_cast<double>(S) * H * n * (n + 1) / 2 * (192 + 128) * 2;
    for (bool packed : {false, true}) {
      const float ms = time_ms([&] {
        if (packed) {
          gpu().attention_packed(q.data(), k.data(), v.data(), seqs.data(), S, H, 192, 128, 0.07f, out.data());
        } else {
          for (const PackedSeq& s : seqs)
            gpu().attention(q.data() + s.q0 * H * 192, k.data() + s.kv0 * H * 192, v.data() + s.kv0 * H * 128, n,
                            n, H, 192, 128, 0, 0.07f, out.data() + s.q0 * H * 128);
        }
      });
      char buf[96];
      std::snprintf(buf, sizeof buf, "%.3f ms, %.0f TFLOP/s (causal)", ms, flops / (ms * 1e-3) / 1e12);
      line("time attention", std::string(packed ? "flash packed" : "flash per sequence") + " " +
                                 shp({{"seqs", S}, {"n", n}, {"H", H}}), buf, true);
    }
  });
}

// The MoE slot sort of a decode step (512 tokens x top-6) and of a prefill step (8,704 x 6).
TEST(BackendParity, TimingMoeSort) {
  for (int64_t n_slots : {6 * 512, 6 * 8704}) {
    const int64_t E = 64;
    std::vector<int32_t> ids(n_slots);
    for (auto& id : ids) id = static_cast<int32_t>(rnd_int(0, E - 1));
    Buffer<int32_t> d_ids(gpu(), n_slots), order(gpu(), n_slots);
    gpu().upload(d_ids.data(), ids.data(), ids.size() * sizeof(int32_t));
    std::vector<int64_t> counts(E);
    // With its counts' trip to the host (a host sync), so timed on the host.
    auto sort = [&] {
      gpu().moe_sort(d_ids.data(), n_slots, E, order.data(), nullptr);
      gpu().moe_counts(counts.data());
    };
    sort();
    const auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < 20; ++r) sort();
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / 20;
    char buf[96];
    std::snprintf(buf, sizeof buf, "%.3f ms with its counts download", ms);
    line("time moe_sort", shp({{"slots", n_slots}, {"E", E}}), buf, true);
  }
}

// moe_sort's device time a call as a decode graph runs it (its counts kept on the device, no copy
// to the host): 100 calls recorded in one graph, the graph timed. V2-Lite's 64 routed experts and
// 2 shared-expert slots for 64 and 512 tokens (top 6 + 2), and V3's 256 + 1 for 512 (top 8 + 1).
TEST(BackendParity, TimingMoeSortGraphed) {
  struct C { int64_t tokens, k, E; };
  for (const C& c : {C{64, 8, 66}, C{512, 8, 66}, C{512, 9, 257}}) {
    const int64_t n_slots = c.tokens * c.k;
    std::vector<int32_t> ids(n_slots);
    for (auto& id : ids) id = static_cast<int32_t>(rnd_int(0, c.E - 1));
    Buffer<int32_t> d_ids(gpu(), n_slots), order(gpu(), n_slots), position(gpu(), n_slots);
    gpu().upload(d_ids.data(), ids.data(), ids.size() * sizeof(int32_t));
    std::vector<int64_t> counts(c.E);
    gpu().moe_sort(d_ids.data(), n_slots, c.E, order.data(), position.data());  // its buffers, before recording
    gpu().moe_counts(counts.data());
    ASSERT_TRUE(gpu().capture_begin());
    for (int r = 0; r < 100; ++r) gpu().moe_sort(d_ids.data(), n_slots, c.E, order.data(), position.data());
    void* g = gpu().capture_end();
    ASSERT_NE(g, nullptr);
    const float ms = time_ms([&] { gpu().replay(g); });
    gpu().drop_graph(g);
    char buf[96];
    std::snprintf(buf, sizeof buf, "%.2f us a call in a graph", ms * 1e3 / 100);
    line("time moe_sort", shp({{"slots", n_slots}, {"E", c.E}}), buf, true);
  }
}

// Sampling a decode batch where the logits are, against the host reference per row (the path
// that downloads every row's logits first).
TEST(BackendParity, TimingSample) {
  for (int64_t vocab : {102400, 129280})
    for (const char* kind : {"t=1", "t=0.7 top_p=0.9 top=5"}) {
      const int64_t n = 512;
      std::normal_distribution<float> d(0.0f, 3.0f);
      std::vector<float> l(static_cast<std::size_t>(n * vocab));
      for (auto& x : l) x = d(rng());
      std::vector<SampleSpec> specs(n);
      for (int64_t r = 0; r < n; ++r) {
        specs[r].temperature = kind[2] == '1' ? 1.0f : 0.7f;
        specs[r].top_p = kind[2] == '1' ? 1.0f : 0.9f;
        specs[r].n_top = kind[2] == '1' ? 0 : 5;
        specs[r].u = (r + 0.5) / n;
      }
      Buffer<float> dl(gpu(), l.size());
      Buffer<SampleSpec> ds(gpu(), n);
      Buffer<SampleOut> out(gpu(), n);
      gpu().upload(dl.data(), l.data(), l.size() * sizeof(float));
      gpu().upload(ds.data(), specs.data(), n * sizeof(SampleSpec));
      const float ms = time_ms([&] { gpu().sample(dl.data(), n, vocab, ds.data(), out.data()); });
      std::vector<SampleOut> host(8);
      const auto t0 = std::chrono::steady_clock::now();
      cpu().sample(l.data(), 8, vocab, specs.data(), host.data());
      const double host_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / 8;
      char buf[96];
      std::snprintf(buf, sizeof buf, "gpu %.3f ms / batch, host %.2f ms / row", ms, host_ms);
      line("time sample", std::string(kind) + " " + shp({{"n", n}, {"vocab", vocab}}), buf, true);
    }
}

}  // namespace
}  // namespace dpa::backend
