// Parity of the attention ops and the paged KV cache (f32 and bf16) between the CUDA backend
// and the CPU reference: paged write / gather, kv_write, RoPE, expanded attention and absorbed
// MLA in both CUDA forms, and batched MLA decode in every kernel version. A bf16 cache is checked
// against the CPU's f32 cache holding the same bf16-rounded values (the CPU keeps f32 caches).
#include "parity_util.h"

namespace dpa::backend {
namespace {

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
    cpu().paged_gather(cache.view(false), c.col0, c.cols, n_read, out.c.data(), ldo, 1, 0);
    gpu().paged_gather(cache.view(true), c.col0, c.cols, n_read, out.g.data(), ldo, 1, 0);
    EXPECT_TRUE(close("paged_gather", s, out.on_cpu(), out.on_gpu(), 0.0));
    // The same columns into 3 interleaved copies per row (MLA's rope key into every head).
    const int64_t copies = 3, stride = c.cols + 5, ldc = copies * stride;
    Dual<float> rep(std::max<int64_t>(n_read * ldc, 1));
    cpu().paged_gather(cache.view(false), c.col0, c.cols, n_read, rep.c.data(), ldc, copies, stride);
    gpu().paged_gather(cache.view(true), c.col0, c.cols, n_read, rep.g.data(), ldc, copies, stride);
    EXPECT_TRUE(close("paged_gather", s + " copies=3", rep.on_cpu(), rep.on_gpu(), 0.0));
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

// Decode batches for both caches: varied contexts, head counts not a multiple of 16, other
// latent widths, and shapes the fused kernels do not take (the per-sequence fallback).
struct DecodeCase { const char* name; int64_t heads, page, lora, rope; std::vector<int64_t> ctx; };
std::vector<DecodeCase> decode_cases() {
  std::vector<int64_t> many(40);
  for (auto& c : many) c = rnd_int(1, 600);
  return {
      {"no seqs", 16, 16, 512, 64, {}},
      {"one seq ctx=1", 16, 16, 512, 64, {1}},
      {"one seq", 16, 16, 512, 64, {3001}},
      {"varied ctx", 16, 16, 512, 64, {1, 17, 300, 2049, 4100}},
      {"page 64", 16, 64, 512, 64, {33, 64, 65, 1000}},
      {"H=128", 128, 16, 512, 64, {1, 700, 2500}},
      {"H=128 page 64", 128, 64, 512, 64, {64, 63, 129, 4100, 2, 1000}},
      {"H=72", 72, 32, 512, 64, {200, 1, 65}},
      {"H=20", 20, 16, 512, 64, {65, 1, 129, 16}},
      {"small dims H=3", 3, 4, 40, 8, {5, 1, 33, 64, 200}},
      {"lora 64 rope 16", 3, 4, 64, 16, {5, 1, 33, 64, 200}},
      {"lora 128 rope 0", 5, 8, 128, 0, {7, 90}},
      {"lora 64 rope 0", 2, 16, 64, 0, {70, 3}},
      {"lora 256 rope 64", 17, 32, 256, 64, {1, 95, 300}},
      {"40 seqs", 16, 16, 512, 64, many},
      {"lora 520 (fallback)", 4, 8, 520, 8, {9, 1, 40}},
      {"lora 30 rope 6 (fallback)", 5, 16, 30, 6, {1, 31, 32, 33, 150}},
  };
}

TEST(BackendParity, MlaDecode) {
  const std::vector<DecodeCase> cases = decode_cases();
  for (const char* variant : {"v1", "v2"})
  with_decode_variant(variant, [&] {
  for (const DecodeCase& c : cases) {
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

// ---- bf16 KV cache.

std::vector<float> bf16_round(std::vector<float> v) {
  for (auto& x : v) x = bf16_to_f32(f32_to_bf16(x));
  return v;
}

// Rounds a mirrored pool to bf16 in place (the CPU copy keeps the rounded values as f32) and
// returns the GPU's bf16 copy of it.
Buffer<uint16_t> bf16_pool(Dual<float>& pool) {
  std::vector<float> h = pool.on_cpu();
  std::vector<uint16_t> b(h.size());
  for (std::size_t i = 0; i < h.size(); ++i) b[i] = f32_to_bf16(h[i]), h[i] = bf16_to_f32(b[i]);
  pool.set(h);
  Buffer<uint16_t> g(gpu(), std::max<std::size_t>(b.size(), 1));
  if (!b.empty()) gpu().upload(g.data(), b.data(), b.size() * sizeof(uint16_t));
  return g;
}

// Several sequences' gathers at once (the expanded prefill's latents and rope keys): 40
// sequences (two launches), some empty, each with its own page table into one pool, into rows
// with gaps between them; f32 and bf16 caches.
TEST(BackendParity, PagedGatherMany) {
  const int64_t page = 16, L = 32, R = 8, W = L + R, pool_pages = 96, n_seqs = 40;
  for (bool bf16 : {false, true}) {
    Dual<float> pool(rnd(pool_pages * page * W));
    Buffer<uint16_t> g = bf16 ? bf16_pool(pool) : Buffer<uint16_t>();
    std::vector<Dual<int32_t>> tables;
    std::vector<int64_t> n, row0;
    int64_t rows = 0;
    for (int64_t i = 0; i < n_seqs; ++i) {
      n.push_back(i % 7 == 3 ? 0 : rnd_int(1, 70));
      row0.push_back(rows);
      rows += n.back() + (i % 3);
      tables.emplace_back(Cache::pick(pool_pages, (n.back() + page - 1) / page + 1));
    }
    for (auto [col0, cols] : {std::pair<int64_t, int64_t>{0, L}, {L, R}}) {
      std::vector<PagedLatent> vc, vg;
      for (const Dual<int32_t>& t : tables) {
        PagedLatent v;
        v.page_size = page, v.kv_lora = L, v.rope_dim = R;
        v.base = pool.c.data(), v.pages = t.c.data();
        vc.push_back(v);
        v.base = bf16 ? static_cast<void*>(g.data()) : pool.g.data(), v.pages = t.g.data();
        v.dtype = bf16 ? DType::bf16 : DType::f32;
        vg.push_back(v);
      }
      const int64_t ldo = cols + 3;
      Dual<float> out(rnd(rows * ldo));
      cpu().paged_gather_many(vc.data(), n.data(), row0.data(), n_seqs, col0, cols, out.c.data(), ldo);
      gpu().paged_gather_many(vg.data(), n.data(), row0.data(), n_seqs, col0, cols, out.g.data(), ldo);
      EXPECT_TRUE(close("paged_gather_many", shp({{"bf16", bf16}, {"col0", col0}, {"cols", cols}}), out.on_cpu(),
                        out.on_gpu(), 0.0));
    }
  }
}

std::vector<float> bf16_on_gpu(const Buffer<uint16_t>& g, std::size_t n) {
  std::vector<uint16_t> b(n);
  if (n) gpu().download(b.data(), g.data(), n * sizeof(uint16_t));
  std::vector<float> f(n);
  for (std::size_t i = 0; i < n; ++i) f[i] = bf16_to_f32(b[i]);
  return f;
}

// A bf16 cache: the GPU rounds the written values to nearest even; the CPU (f32) writes them
// pre-rounded, so both hold the same values.
TEST(BackendParity, KvWrite) {
  struct C { int64_t width, n, col0, cols; bool skips = false; };
  const C cases[] = {{576, 0, 0, 576}, {576, 1, 0, 512}, {576, 37, 512, 64}, {48, 100, 3, 40},
                     {576, 300, 0, 576}, {576, 40, 0, 576, true}};  // skips: every 3rd slot -1
  for (DType dtp : {DType::f32, DType::bf16})
    for (const C& c : cases) {
      const int64_t n_slots = 300;
      std::vector<int64_t> slots(n_slots);
      std::iota(slots.begin(), slots.end(), 0);
      std::shuffle(slots.begin(), slots.end(), rng());
      slots.resize(std::max<int64_t>(c.n, 1));
      if (c.skips)
        for (std::size_t i = 0; i < slots.size(); i += 3) slots[i] = -1;
      const int64_t lds = c.cols + 5;
      Dual<int64_t> ds(slots);
      Dual<float> pool(rnd(n_slots * c.width));
      const bool bf16 = dtp == DType::bf16;
      Buffer<uint16_t> g = bf16 ? bf16_pool(pool) : Buffer<uint16_t>();
      const std::vector<float> h = rnd(std::max<int64_t>(c.n * lds, 1), -3, 3);
      Dual<float> src(h), src_r(bf16 ? bf16_round(h) : h);
      cpu().kv_write(pool.c.data(), DType::f32, c.width, ds.c.data(), c.n, c.col0, c.cols, src_r.c.data(), lds);
      gpu().kv_write(bf16 ? static_cast<void*>(g.data()) : pool.g.data(), dtp, c.width, ds.g.data(), c.n, c.col0,
                     c.cols, src.g.data(), lds);
      EXPECT_TRUE(close("kv_write", dt(dtp) + " " + shp({{"width", c.width}, {"n", c.n}, {"col0", c.col0}, {"cols", c.cols}, {"skips", c.skips}}),
                        pool.on_cpu(), bf16 ? bf16_on_gpu(g, pool.n) : pool.on_gpu(), 0.0));
    }
}

// mla_prepare against the CPU's rope / rms_norm / kv_write in sequence: the rotated queries and
// q_pe, and the cache rows (the untouched ones and the skipped slots' included). A bf16 cache
// holds the GPU's own rounding of values the CPU computes in f32: one bf16 step apart at most.
TEST(BackendParity, MlaPrepare) {
  struct C { int64_t heads, nope, rope, lora, n; bool q_pe, skips; };
  const C cases[] = {{16, 128, 64, 512, 64, true, false}, {16, 128, 64, 512, 40, true, true},
                     {3, 16, 8, 32, 9, false, false}, {128, 128, 64, 512, 5, true, false}, {2, 8, 4, 24, 0, true, false},
                     {2, 8, 5, 24, 3, true, false}};  // an odd rope part: its last element stays
  const int64_t n_slots = 200;
  for (DType cdt : {DType::f32, DType::bf16})
    for (DType wdt : {DType::f32, DType::bf16})
      for (const C& c : cases) {
        const int64_t dqk = c.nope + c.rope, q_stride = c.heads * dqk + 3, kva_stride = c.lora + c.rope + 5;
        const int64_t width = c.lora + c.rope, n = c.n;
        std::vector<float> inv(c.rope / 2);
        for (std::size_t i = 0; i < inv.size(); ++i) inv[i] = static_cast<float>(1.0 / std::pow(10000.0, 2.0 * i / c.rope));
        Dual<float> dinv(inv);
        std::vector<int64_t> pos(std::max<int64_t>(n, 1)), slots(n_slots);
        for (auto& p : pos) p = rnd_int(0, 4000);
        std::iota(slots.begin(), slots.end(), 0);
        std::shuffle(slots.begin(), slots.end(), rng());
        slots.resize(std::max<int64_t>(n, 1));
        if (c.skips)
          for (std::size_t i = 0; i < slots.size(); i += 3) slots[i] = -1;
        Dual<int64_t> dpos(pos), ds(slots);
        Dual<float> q(rnd(std::max<int64_t>(n * q_stride, 1))), kva(rnd(std::max<int64_t>(n * kva_stride, 1), -3, 3));
        Dual<float> qpe(std::max<int64_t>(n * c.heads * c.rope, 1));
        Dual<float> pool(rnd(n_slots * width));
        const bool bf16 = cdt == DType::bf16;
        Buffer<uint16_t> g = bf16 ? bf16_pool(pool) : Buffer<uint16_t>();
        const HostWeight& w = weight(wdt, 1, c.lora, 0.5f, 1.5f);
        MlaPrepare a;
        a.n = n, a.n_heads = c.heads, a.q_stride = q_stride, a.q_head_dim = dqk, a.nope = c.nope;
        a.kva_stride = kva_stride, a.kv_lora = c.lora, a.eps = 1e-6f;
        MlaPrepare ac = a, ag = a;
        ac.q = q.c.data(), ac.q_pe = c.q_pe ? qpe.c.data() : nullptr, ac.kva = kva.c.data();
        ac.kv_norm = cpu().prepare_weight(w.view()), ac.positions = dpos.c.data(), ac.rope = {dinv.c.data(), c.rope, 1.2f};
        ac.cache = pool.c.data(), ac.cache_dtype = DType::f32, ac.slots = ds.c.data();
        ag.q = q.g.data(), ag.q_pe = c.q_pe ? qpe.g.data() : nullptr, ag.kva = kva.g.data();
        ag.kv_norm = gpu().prepare_weight(w.view()), ag.positions = dpos.g.data(), ag.rope = {dinv.g.data(), c.rope, 1.2f};
        ag.cache = bf16 ? static_cast<void*>(g.data()) : pool.g.data(), ag.cache_dtype = cdt, ag.slots = ds.g.data();
        cpu().mla_prepare(ac);
        gpu().mla_prepare(ag);
        const std::string s = dt(cdt) + " w " + dt(wdt) + " " +
                              shp({{"heads", c.heads}, {"rope", c.rope}, {"lora", c.lora}, {"n", n}, {"skips", c.skips}});
        EXPECT_TRUE(close("mla_prepare", s + " q", q.on_cpu(), q.on_gpu(), 1e-5));
        if (c.q_pe) {
          EXPECT_TRUE(close("mla_prepare", s + " q_pe", qpe.on_cpu(), qpe.on_gpu(), 1e-5));
        }
        EXPECT_TRUE(close("mla_prepare", s + " cache", pool.on_cpu(), bf16 ? bf16_on_gpu(g, pool.n) : pool.on_gpu(),
                          bf16 ? 8e-3 : 1e-5));
        EXPECT_TRUE(close("mla_prepare", s + " kva kept", kva.on_cpu(), kva.on_gpu(), 0.0));
      }
}

// mla_prepare and W_UK in one call: on the GPU against the two calls, bit for bit (the prepare
// kernel rounds the nope parts as linear_batched would, in the same layout; rows of an even and
// of an odd stride, one load path each), and against the CPU. Rows past the small-row kernel,
// where the CUDA backend fuses, and few rows, where it makes the two calls.
TEST(BackendParity, MlaPrepareUk) {
  struct C { int64_t heads, n, pad; };
  const C cases[] = {{16, 100, 0}, {16, 300, 3}, {20, 80, 0}, {16, 5, 0}};
  const int64_t nope = 128, R = 64, L = 512, n_slots = 320;
  for (const C& c : cases) {
    const int64_t dqk = nope + R, q_stride = c.heads * dqk + c.pad, kva_stride = L + R, H = c.heads, n = c.n;
    std::vector<float> inv(R / 2);
    for (std::size_t i = 0; i < inv.size(); ++i) inv[i] = static_cast<float>(1.0 / std::pow(10000.0, 2.0 * i / R));
    Dual<float> dinv(inv);
    std::vector<int64_t> pos(n), slots(n_slots);
    for (auto& p : pos) p = rnd_int(0, 4000);
    std::iota(slots.begin(), slots.end(), 0);
    std::shuffle(slots.begin(), slots.end(), rng());
    slots.resize(n);
    Dual<int64_t> dpos(pos), ds(slots);
    const std::vector<float> hq = rnd(n * q_stride), hkva = rnd(n * kva_stride, -3, 3), hpool = rnd(n_slots * (L + R));
    Dual<float> q(hq), q2(hq), kva(hkva), qpe(n * H * R), qpe2(n * H * R), pool(hpool), pool2(hpool);
    Dual<float> lat(n * H * L), lat2(n * H * L);
    const HostWeight& nw = weight(DType::bf16, 1, L, 0.5f, 1.5f);
    const HostWeight& w = weight(DType::bf16, H * L, nope);  // each head's W_UK: [L, nope]
    const WeightView wc = cpu().prepare_weight(w.view()).row_slice(0, L);
    const WeightView wg = gpu().prepare_weight(w.view()).row_slice(0, L);
    MlaPrepare a;
    a.n = n, a.n_heads = H, a.q_stride = q_stride, a.q_head_dim = dqk, a.nope = nope;
    a.kva_stride = kva_stride, a.kv_lora = L, a.eps = 1e-6f, a.cache_dtype = DType::f32;
    MlaPrepare ac = a, ag = a, ag2 = a;
    ac.q = q.c.data(), ac.q_pe = qpe.c.data(), ac.kva = kva.c.data(), ac.kv_norm = cpu().prepare_weight(nw.view());
    ac.positions = dpos.c.data(), ac.rope = {dinv.c.data(), R, 1.0f}, ac.cache = pool.c.data(), ac.slots = ds.c.data();
    ag.q = q.g.data(), ag.q_pe = qpe.g.data(), ag.kva = kva.g.data(), ag.kv_norm = gpu().prepare_weight(nw.view());
    ag.positions = dpos.g.data(), ag.rope = {dinv.g.data(), R, 1.0f}, ag.cache = pool.g.data(), ag.slots = ds.g.data();
    ag2 = ag, ag2.q = q2.g.data(), ag2.q_pe = qpe2.g.data(), ag2.cache = pool2.g.data();
    cpu().mla_prepare_uk(ac, wc, L * nope, lat.c.data());
    gpu().mla_prepare_uk(ag, wg, L * nope, lat.g.data());
    gpu().mla_prepare(ag2);
    gpu().linear_batched(q2.g.data(), q_stride, dqk, n, wg, L * nope, H, lat2.g.data(), H * L, L);
    const std::string s = shp({{"heads", H}, {"n", n}, {"q_stride", q_stride}});
    EXPECT_TRUE(close("mla_prepare_uk", s + " q_lat", lat.on_cpu(), lat.on_gpu(), 1e-2));
    EXPECT_TRUE(close("mla_prepare_uk", s + " q", q.on_cpu(), q.on_gpu(), 1e-5));
    EXPECT_TRUE(close("mla_prepare_uk", s + " q_lat vs two calls", lat2.on_gpu(), lat.on_gpu(), 0.0));
    EXPECT_TRUE(close("mla_prepare_uk", s + " q vs two calls", q2.on_gpu(), q.on_gpu(), 0.0));
    EXPECT_TRUE(close("mla_prepare_uk", s + " q_pe vs two calls", qpe2.on_gpu(), qpe.on_gpu(), 0.0));
    EXPECT_TRUE(close("mla_prepare_uk", s + " cache vs two calls", pool2.on_gpu(), pool.on_gpu(), 0.0));
  }
}

TEST(BackendParity, PagedWriteGatherBf16) {
  struct C { int64_t page_size, kv_lora, rope, start, n, col0, cols; };
  const C cases[] = {{4, 32, 8, 5, 1, 0, 40}, {16, 512, 64, 17, 40, 512, 64}, {64, 512, 64, 0, 150, 0, 576}};
  for (const C& c : cases) {
    const int64_t seq_pages = (c.start + c.n + c.page_size - 1) / c.page_size + 1;
    Cache cache(seq_pages + 3, c.page_size, c.kv_lora, c.rope, seq_pages);
    Buffer<uint16_t> g = bf16_pool(cache.pool);
    PagedLatent gv = cache.view(true);
    gv.base = g.data(), gv.dtype = DType::bf16;
    const int64_t lds = c.cols + 3;
    const std::vector<float> h = rnd(std::max<int64_t>(c.n * lds, 1));
    Dual<float> src(h), src_r(bf16_round(h));
    cpu().paged_write(cache.view(false), c.col0, c.cols, c.start, c.n, src_r.c.data(), lds);
    gpu().paged_write(gv, c.col0, c.cols, c.start, c.n, src.g.data(), lds);
    const std::string s = "bf16 " + shp({{"page", c.page_size}, {"width", c.kv_lora + c.rope}, {"start", c.start},
                                         {"n", c.n}, {"col0", c.col0}, {"cols", c.cols}});
    EXPECT_TRUE(close("paged_write", s, cache.pool.on_cpu(), bf16_on_gpu(g, cache.pool.n), 0.0));
    const int64_t n_read = c.start + c.n, W = c.kv_lora + c.rope;
    Dual<float> out(std::max<int64_t>(n_read * W, 1));
    cpu().paged_gather(cache.view(false), 0, W, n_read, out.c.data(), W, 1, 0);
    gpu().paged_gather(gv, 0, W, n_read, out.g.data(), W, 1, 0);
    EXPECT_TRUE(close("paged_gather", s, out.on_cpu(), out.on_gpu(), 0.0));
  }
}

// Queries rounded to bf16 on both sides, so the differences left are the kernel's: bf16
// probabilities and fp32 sums in another order.
TEST(BackendParity, MlaAbsorbedBf16) {
  struct C { int64_t n_q, q_start, heads, page_size, kv_lora, rope; };
  const C cases[] = {{1, 0, 4, 16, 512, 64}, {4, 50, 4, 16, 512, 64}, {9, 3, 3, 4, 40, 8}, {1, 2047, 16, 64, 512, 64}};
  for (const C& c : cases) {
    const int64_t n_ctx = c.q_start + c.n_q;
    const int64_t seq_pages = (n_ctx + c.page_size - 1) / c.page_size + 1;
    Cache cache(seq_pages + 5, c.page_size, c.kv_lora, c.rope, seq_pages);
    Buffer<uint16_t> g = bf16_pool(cache.pool);
    PagedLatent gv = cache.view(true);
    gv.base = g.data(), gv.dtype = DType::bf16;
    Dual<float> ql(rnd(std::max<int64_t>(c.n_q * c.heads * c.kv_lora, 1))),
        qp(rnd(std::max<int64_t>(c.n_q * c.heads * c.rope, 1))),
        out(std::max<int64_t>(c.n_q * c.heads * c.kv_lora, 1));
    const float scale = 1.0f / std::sqrt(192.0f);
    cpu().mla_absorbed(ql.c.data(), qp.c.data(), c.n_q, c.heads, cache.view(false), c.q_start, scale, out.c.data());
    gpu().mla_absorbed(ql.g.data(), qp.g.data(), c.n_q, c.heads, gv, c.q_start, scale, out.g.data());
    EXPECT_TRUE(close("mla_absorbed", "bf16 " + shp({{"n_q", c.n_q}, {"q_start", c.q_start}, {"H", c.heads},
                                                    {"page", c.page_size}, {"lora", c.kv_lora}, {"rope", c.rope}}),
                      out.on_cpu(), out.on_gpu(), 1e-4, 1e-6));
  }
}

// NaN (bf16 0x7FC0) into the GPU pool's rows past each sequence's context in its last page:
// kernels that copy whole pages must not let them reach a result (0 * NaN).
void poison_stale_rows(const DecodeBatch& b, Buffer<uint16_t>& g) {
  const std::vector<int32_t> table = b.pages.on_cpu(), off = b.offsets.on_cpu();
  const int64_t W = b.kv_lora + b.rope_dim;
  const std::vector<uint16_t> nan(static_cast<std::size_t>(b.page_size * W), 0x7FC0);
  for (std::size_t s = 0; s < b.ctx.size(); ++s) {
    const int64_t used = b.ctx[s] % b.page_size;
    if (used == 0) continue;
    const int64_t page = table[off[s] + b.ctx[s] / b.page_size];
    gpu().upload(g.data() + (page * b.page_size + used) * W, nan.data(),
                 static_cast<std::size_t>((b.page_size - used) * W) * sizeof(uint16_t));
  }
}

TEST(BackendParity, MlaDecodeBf16) {
  const std::vector<DecodeCase> cases = decode_cases();
  auto run_cases = [&](const std::string& label) {
    for (std::size_t i = 0; i < cases.size(); ++i) {
      const DecodeCase& c = cases[i];
      DecodeBatch b(c.ctx, c.page, c.lora, c.rope);
      Buffer<uint16_t> g = bf16_pool(b.pool);
      poison_stale_rows(b, g);
      PagedBatch gv = b.view(true);
      gv.base = g.data(), gv.dtype = DType::bf16;
      // Every other case says the pool's rows (as the model does); the others leave the extent to
      // the allocator (the seesaw form's tensor map either way).
      if (i % 2) gv.pool_rows = DecodeBatch::pool_pages(c.ctx, c.page) * c.page;
      const int64_t n = static_cast<int64_t>(c.ctx.size());
      const std::vector<float> hl = rnd(std::max<int64_t>(n * c.heads * c.lora, 1)),
                               hp = rnd(std::max<int64_t>(n * c.heads * c.rope, 1), -3, 3);
      Dual<float> ql(hl), qp(hp), ql_r(bf16_round(hl)), qp_r(bf16_round(hp)),
          out(rnd(std::max<int64_t>(n * c.heads * c.lora, 1)));
      const float scale = 1.0f / std::sqrt(192.0f);
      cpu().mla_decode(ql_r.c.data(), qp_r.c.data(), c.heads, b.view(false), scale, out.c.data());
      gpu().mla_decode(ql.g.data(), qp.g.data(), c.heads, gv, scale, out.g.data());
      EXPECT_TRUE(close("mla_decode", label + c.name + " " +
                                          shp({{"seqs", n}, {"H", c.heads}, {"page", c.page},
                                               {"lora", c.lora}, {"rope", c.rope}, {"max_ctx", b.max_ctx}}),
                        out.on_cpu(), out.on_gpu(), 1e-2, 1e-5));
    }
  };
  // The mma.sync kernel's both ways of loading tiles at both ring depths (every head count), and
  // the warpgroup-MMA kernel's two forms wherever it applies (latent 512 + rope 64, any head
  // count; sm_90; the seesaw form on pages of 16, 32 and 64 rows).
  struct Variant { const char* load; const char* stages; const char* mma; const char* form; };
  for (const Variant v : {Variant{"bulk", "2", "mma", ""}, Variant{"bulk", "3", "mma", ""},
                          Variant{"cp.async", "2", "mma", ""}, Variant{"cp.async", "3", "mma", ""},
                          Variant{"bulk", "2", "wgmma", "cp.async"}, Variant{"bulk", "2", "wgmma", "seesaw"}}) {
    setenv("DPA_CUDA_MLA_DECODE_LOAD", v.load, 1);
    setenv("DPA_CUDA_MLA_DECODE_MMA", v.mma, 1);
    setenv("DPA_CUDA_MLA_WGMMA_FORM", v.form, 1);
    with_env_backend("DPA_CUDA_MLA_DECODE_STAGES", v.stages, [&] {
      run_cases(std::string("bf16 ") + v.mma + " " + v.load + " s" + v.stages + " " + v.form + " ");
    });
    unsetenv("DPA_CUDA_MLA_DECODE_LOAD");
    unsetenv("DPA_CUDA_MLA_DECODE_MMA");
    unsetenv("DPA_CUDA_MLA_WGMMA_FORM");
  }
}

// The shapes no fused kernel takes (the tiny model's latent 32 + rope 8, odd and wide latents)
// inside a recorded graph, as a decode step runs them: recording must succeed, and the replay
// must match the CPU (so nothing in the path reads the host or waits).
TEST(BackendParity, MlaDecodeFallbackRecords) {
  std::vector<int64_t> c64(64);
  for (auto& c : c64) c = rnd_int(1, 700);
  const std::vector<DecodeCase> cases = {
      {"tiny model 64 seqs", 4, 16, 32, 8, c64},
      {"lora 30 rope 6", 5, 16, 30, 6, {1, 31, 32, 33, 150}},
      {"lora 520", 4, 8, 520, 8, {9, 1, 40}},
      {"lora 2048 rope 0", 2, 64, 2048, 0, {3, 200}},
  };
  for (bool bf16 : {false, true})
    for (const DecodeCase& c : cases) {
      DecodeBatch b(c.ctx, c.page, c.lora, c.rope);
      Buffer<uint16_t> g = bf16 ? bf16_pool(b.pool) : Buffer<uint16_t>();
      PagedBatch gv = b.view(true);
      if (bf16) gv.base = g.data(), gv.dtype = DType::bf16;
      const int64_t n = static_cast<int64_t>(c.ctx.size());
      const std::vector<float> hl = rnd(n * c.heads * c.lora), hp = rnd(std::max<int64_t>(n * c.heads * c.rope, 1));
      Dual<float> ql(hl), qp(hp), out(n * c.heads * c.lora);
      const float scale = 1.0f / std::sqrt(192.0f);
      // The kernel reads f32 queries as they are; the CPU cache holds the bf16 pool's values.
      cpu().mla_decode(ql.c.data(), qp.c.data(), c.heads, b.view(false), scale, out.c.data());
      ASSERT_TRUE(gpu().capture_begin());
      gpu().mla_decode(ql.g.data(), qp.g.data(), c.heads, gv, scale, out.g.data());
      void* graph = gpu().capture_end();
      ASSERT_NE(graph, nullptr) << c.name;
      gpu().replay(graph);
      gpu().drop_graph(graph);
      EXPECT_TRUE(close("mla_decode recorded", std::string(bf16 ? "bf16 " : "f32 ") + c.name + " " +
                                                   shp({{"seqs", n}, {"H", c.heads}, {"lora", c.lora},
                                                        {"rope", c.rope}, {"max_ctx", b.max_ctx}}),
                        out.on_cpu(), out.on_gpu(), 1e-4, 1e-6));
    }
}

TEST(BackendParity, MlaDecodeUv) {
  // mla_decode and the value projection in one call: on the GPU against the two calls, bit for
  // bit (the decode kernel rounds the latents as linear_batched would, in the same layout), and
  // against the CPU. Rows past the small-row kernel, where the CUDA backend fuses (one split and
  // several, two head groups), and few rows, where it makes the two calls. Then with the output
  // projection as well: o rounded by the value projection's GEMM (the f32 sums rounded once, as
  // linear rounds o; cuBLAS may sum in another order for a bf16 output, so not bit for bit).
  std::vector<int64_t> c100(100), c300(300), c80(80);
  for (auto& c : c100) c = rnd_int(1, 600);
  for (auto& c : c300) c = rnd_int(1, 60);
  for (auto& c : c80) c = rnd_int(1, 300);
  const std::vector<DecodeCase> cases = {
      {"100 seqs", 16, 16, 512, 64, c100},
      {"300 short seqs page 64", 16, 64, 512, 64, c300},
      {"80 seqs H=20", 20, 32, 512, 64, c80},
      {"5 seqs (two calls)", 16, 16, 512, 64, {1, 17, 300, 2049, 4100}},
  };
  const int64_t nope = 128, dv = 128;
  for (const DecodeCase& c : cases) {
    DecodeBatch b(c.ctx, c.page, c.lora, c.rope);
    Buffer<uint16_t> g = bf16_pool(b.pool);
    poison_stale_rows(b, g);
    PagedBatch gv = b.view(true);
    gv.base = g.data(), gv.dtype = DType::bf16;
    const int64_t n = static_cast<int64_t>(c.ctx.size()), H = c.heads, L = c.lora;
    // Each head's W_UV: the last dv rows of its (nope + dv) x L block of kv_b_proj.
    const HostWeight& w = weight(DType::bf16, H * (nope + dv), L);
    const WeightView wc = cpu().prepare_weight(w.view()).row_slice(nope, nope + dv);
    const WeightView wg = gpu().prepare_weight(w.view()).row_slice(nope, nope + dv);
    const std::vector<float> hl = rnd(n * H * L), hp = rnd(n * H * c.rope, -3, 3);
    Dual<float> ql(hl), qp(hp), ql_r(bf16_round(hl)), qp_r(bf16_round(hp)), lat(n * H * L), lat2(n * H * L),
        o(rnd(n * H * dv)), o2(n * H * dv);
    const float scale = 1.0f / std::sqrt(192.0f);
    cpu().mla_decode_uv(ql_r.c.data(), qp_r.c.data(), H, b.view(false), scale, lat.c.data(), wc, (nope + dv) * L,
                        o.c.data(), H * dv, dv, nullptr);
    gpu().mla_decode_uv(ql.g.data(), qp.g.data(), H, gv, scale, lat.g.data(), wg, (nope + dv) * L, o.g.data(),
                        H * dv, dv, nullptr);
    gpu().mla_decode(ql.g.data(), qp.g.data(), H, gv, scale, lat2.g.data());
    gpu().linear_batched(lat2.g.data(), H * L, L, n, wg, (nope + dv) * L, H, o2.g.data(), H * dv, dv);
    const std::string s = c.name + std::string(" ") + shp({{"seqs", n}, {"H", H}, {"page", c.page}});
    EXPECT_TRUE(close("mla_decode_uv", s, o.on_cpu(), o.on_gpu(), 2e-2, 1e-5));
    EXPECT_TRUE(close("mla_decode_uv", s + " vs two calls", o2.on_gpu(), o.on_gpu(), 0.0));

    // With o_proj [D, H * dv].
    const int64_t D = 384;
    const HostWeight& wo = weight(DType::bf16, D, H * dv);
    const WeightView woc = cpu().prepare_weight(wo.view()), wog = gpu().prepare_weight(wo.view());
    Dual<float> y(rnd(n * D)), y2(n * D);
    const Backend::LinearOut pc{&woc, y.c.data()}, pg{&wog, y.g.data()};
    cpu().mla_decode_uv(ql_r.c.data(), qp_r.c.data(), H, b.view(false), scale, lat.c.data(), wc, (nope + dv) * L,
                        o.c.data(), H * dv, dv, &pc);
    gpu().mla_decode_uv(ql.g.data(), qp.g.data(), H, gv, scale, lat.g.data(), wg, (nope + dv) * L, o.g.data(),
                        H * dv, dv, &pg);
    gpu().linear(o2.g.data(), n, wog, y2.g.data());
    EXPECT_TRUE(close("mla_decode_uv", s + " o_proj", y.on_cpu(), y.on_gpu(), 2e-2, 1e-5));
    EXPECT_TRUE(close("mla_decode_uv", s + " o_proj vs three calls", y2.on_gpu(), y.on_gpu(), 2e-3));
  }
}

// The GEMM forms with TF32 allowed (as over a bf16 cache): fp32 operands rounded to 10-bit
// mantissas, so the bound is that of bf16-class inputs.
TEST(BackendParity, AttentionTf32) {
  with_attn_mode("gemm", [&] {  // a backend of its own: the setting goes with it
    gpu().set_attention_tf32(true);
    struct C { int64_t n_q, q_start, heads, d_qk, d_v; };
    for (const C& c : {C{7, 0, 4, 24, 16}, C{16, 64, 16, 192, 128}, C{300, 700, 16, 192, 128}}) {
      const int64_t n_kv = c.q_start + c.n_q;
      Dual<float> q(rnd(c.n_q * c.heads * c.d_qk, -2, 2)), k(rnd(n_kv * c.heads * c.d_qk, -2, 2)),
          v(rnd(n_kv * c.heads * c.d_v)), out(c.n_q * c.heads * c.d_v);
      const float scale = 1.0f / std::sqrt(static_cast<float>(c.d_qk));
      cpu().attention(q.c.data(), k.c.data(), v.c.data(), c.n_q, n_kv, c.heads, c.d_qk, c.d_v, c.q_start, scale, out.c.data());
      gpu().attention(q.g.data(), k.g.data(), v.g.data(), c.n_q, n_kv, c.heads, c.d_qk, c.d_v, c.q_start, scale, out.g.data());
      EXPECT_TRUE(close("attention", "tf32 " + shp({{"n_q", c.n_q}, {"q_start", c.q_start}, {"H", c.heads},
                                                  {"d_qk", c.d_qk}, {"d_v", c.d_v}}),
                        out.on_cpu(), out.on_gpu(), 1e-2, 1e-5));
    }
    const int64_t n_q = 64, q_start = 900, H = 16, page = 16, L = 512, R = 64;
    const int64_t seq_pages = (q_start + n_q + page - 1) / page + 1;
    Cache cache(seq_pages + 5, page, L, R, seq_pages);
    Buffer<uint16_t> g = bf16_pool(cache.pool);
    PagedLatent gv = cache.view(true);
    gv.base = g.data(), gv.dtype = DType::bf16;
    Dual<float> ql(rnd(n_q * H * L)), qp(rnd(n_q * H * R)), out(n_q * H * L);
    const float scale = 1.0f / std::sqrt(192.0f);
    cpu().mla_absorbed(ql.c.data(), qp.c.data(), n_q, H, cache.view(false), q_start, scale, out.c.data());
    gpu().mla_absorbed(ql.g.data(), qp.g.data(), n_q, H, gv, q_start, scale, out.g.data());
    EXPECT_TRUE(close("mla_absorbed", "bf16 tf32 " + shp({{"n_q", n_q}, {"q_start", q_start}, {"H", H}}),
                      out.on_cpu(), out.on_gpu(), 1e-2, 1e-5));
  });
}

// The expanded form on tensor cores (flash_prefill: q, k, v rounded to bf16, fp32 softmax and
// accumulation), taken in the default mode where TF32 is allowed; MLA's head dims 192 / 128.
TEST(BackendParity, AttentionFlashBf16) {
  with_attn_mode("auto", [&] {
    gpu().set_attention_tf32(true);
    struct C { int64_t n_q, q_start, n_kv, heads; };
    for (const C& c : {C{1, 0, 1, 16}, C{7, 0, 7, 3}, C{64, 0, 64, 16}, C{65, 3, 68, 16}, C{1, 1500, 1501, 16},
                       C{300, 700, 1000, 16}, C{1024, 0, 1024, 16}, C{130, 0, 100, 2}}) {
      const int64_t d_qk = 192, d_v = 128;
      Dual<float> q(rnd(c.n_q * c.heads * d_qk, -2, 2)), k(rnd(c.n_kv * c.heads * d_qk, -2, 2)),
          v(rnd(c.n_kv * c.heads * d_v)), out(c.n_q * c.heads * d_v);
      const float scale = 1.0f / std::sqrt(static_cast<float>(d_qk));
      cpu().attention(q.c.data(), k.c.data(), v.c.data(), c.n_q, c.n_kv, c.heads, d_qk, d_v, c.q_start, scale, out.c.data());
      gpu().attention(q.g.data(), k.g.data(), v.g.data(), c.n_q, c.n_kv, c.heads, d_qk, d_v, c.q_start, scale, out.g.data());
      EXPECT_TRUE(close("attention", "flash bf16 " + shp({{"n_q", c.n_q}, {"q_start", c.q_start}, {"n_kv", c.n_kv},
                                                        {"H", c.heads}}),
                        out.on_cpu(), out.on_gpu(), 1e-2, 1e-5));
    }
  });
}

// Sequences packed along the rows (attention_packed): one flash launch over all of them (more
// than one launch's worth of sequences too), against the CPU reference's per-sequence loop; rows
// between the sequences' q rows stay as they were.
TEST(BackendParity, AttentionPackedFlashBf16) {
  with_attn_mode("auto", [&] {
    gpu().set_attention_tf32(true);
    const int64_t H = 16, d_qk = 192, d_v = 128;
    for (int64_t n_seqs : {int64_t{3}, int64_t{30}}) {
      std::vector<PackedSeq> seqs;
      int64_t q_rows = 0, kv_rows = 0;
      for (int64_t i = 0; i < n_seqs; ++i) {
        const int64_t n_q = rnd_int(1, i % 3 == 0 ? 300 : 70), q_start = i % 2 ? rnd_int(0, 200) : 0;
        seqs.push_back(PackedSeq{q_rows, n_q, kv_rows, q_start + n_q, q_start});
        q_rows += n_q + (i % 4 == 1 ? 5 : 0);  // a gap of rows no sequence owns
        kv_rows += q_start + n_q;
      }
      Dual<float> q(rnd(q_rows * H * d_qk, -2, 2)), k(rnd(kv_rows * H * d_qk, -2, 2)), v(rnd(kv_rows * H * d_v)),
          out(rnd(q_rows * H * d_v));
      const float scale = 1.0f / std::sqrt(static_cast<float>(d_qk));
      cpu().attention_packed(q.c.data(), k.c.data(), v.c.data(), seqs.data(), n_seqs, H, d_qk, d_v, scale,
                             out.c.data());
      gpu().attention_packed(q.g.data(), k.g.data(), v.g.data(), seqs.data(), n_seqs, H, d_qk, d_v, scale,
                             out.g.data());
      EXPECT_TRUE(close("attention_packed", "flash bf16 " + shp({{"seqs", n_seqs}, {"q_rows", q_rows}, {"kv_rows", kv_rows}}),
                        out.on_cpu(), out.on_gpu(), 1e-2, 1e-5));
    }
  });
}

// The expanded MLA form from kv_b_proj's output and the shared rope key. DeepSeek's widths with
// the flash kernel (keys and values built in bf16 in the backend's memory) and, with TF32 off or
// other widths, the keys and values built in the caller's f32 buffers (exact copies) and then
// attention_packed.
TEST(BackendParity, AttentionPackedMla) {
  struct Case {
    int64_t H, nope, rope, d_v;
    bool tf32;
    double rtol;
  };
  const Case cases[] = {{16, 128, 64, 128, true, 1e-2}, {16, 128, 64, 128, false, 1e-5}, {4, 16, 8, 12, false, 1e-5}};
  with_attn_mode("auto", [&] {
    for (const Case& c : cases) {
      gpu().set_attention_tf32(c.tf32);
      const int64_t n_seqs = 5, d_qk = c.nope + c.rope;
      std::vector<PackedSeq> seqs;
      int64_t q_rows = 0, kv_rows = 0;
      for (int64_t i = 0; i < n_seqs; ++i) {
        const int64_t n_q = rnd_int(1, 150), q_start = i % 2 ? rnd_int(0, 100) : 0;
        seqs.push_back(PackedSeq{q_rows, n_q, kv_rows, q_start + n_q, q_start});
        q_rows += n_q + (i % 4 == 1 ? 3 : 0);
        kv_rows += q_start + n_q;
      }
      Dual<float> q(rnd(q_rows * c.H * d_qk, -2, 2)), kvb(rnd(kv_rows * c.H * (c.nope + c.d_v), -2, 2)),
          k_pe(rnd(kv_rows * c.rope, -2, 2)), k(kv_rows * c.H * d_qk), v(kv_rows * c.H * c.d_v),
          out(rnd(q_rows * c.H * c.d_v));
      const float scale = 1.0f / std::sqrt(static_cast<float>(d_qk));
      cpu().attention_packed_mla(q.c.data(), kvb.c.data(), k_pe.c.data(), seqs.data(), n_seqs, c.H, c.nope, c.rope,
                                 c.d_v, scale, k.c.data(), v.c.data(), out.c.data());
      gpu().attention_packed_mla(q.g.data(), kvb.g.data(), k_pe.g.data(), seqs.data(), n_seqs, c.H, c.nope, c.rope,
                                 c.d_v, scale, k.g.data(), v.g.data(), out.g.data());
      const std::string s = shp({{"H", c.H}, {"nope", c.nope}, {"rope", c.rope}, {"d_v", c.d_v}, {"tf32", c.tf32},
                                 {"kv_rows", kv_rows}});
      EXPECT_TRUE(close("attention_packed_mla", s, out.on_cpu(), out.on_gpu(), c.rtol, 1e-5));
      if (c.rtol < 1e-3) {  // not the flash kernel: the f32 keys and values were built in k and v
        EXPECT_TRUE(close("attention_packed_mla", s + " k", k.on_cpu(), k.on_gpu(), 0.0));
        EXPECT_TRUE(close("attention_packed_mla", s + " v", v.on_cpu(), v.on_gpu(), 0.0));
      }
    }
  });
}

}  // namespace
}  // namespace dpa::backend
