// Parity of the MoE ops between the CUDA backend and the CPU reference: the gates, the slot sort,
// the padded EP exchange's layouts (in memory and over peer memory), gather / scatter / combine,
// and the routed experts in every form (grouped, fixed-capacity; each expert path). Integer
// outputs (gate ids, sort order and counts) must match exactly; their inputs are built without
// near-ties.
#include <algorithm>

#include "core/error.h"
#include "parity_util.h"

namespace dpa::backend {
namespace {

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
    for (int64_t n : {0, 1, 17, 200})
      for (int64_t S : {0, 2}) {  // S: shared slots after each token's top_k
        GateParams p;
        p.n_experts = c.E, p.top_k = c.K, p.n_group = c.G, p.topk_group = c.TG, p.shared_slots = S;
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
        Dual<float> dl(logits), dw(n * (c.K + S));
        Dual<int32_t> di(n * (c.K + S));
        Dual<float> db(bias.empty() ? std::vector<float>(1, 0.0f) : bias);
        GateParams pc = p, pg = p;
        if (c.bias) pc.correction_bias = db.c.data(), pg.correction_bias = db.g.data();
        cpu().moe_gate(dl.c.data(), n, pc, di.c.data(), dw.c.data());
        gpu().moe_gate(dl.g.data(), n, pg, di.g.data(), dw.g.data());
        const std::string s = std::string(c.name) + " " + shp({{"n", n}, {"E", c.E}, {"K", c.K}, {"S", S}});
        EXPECT_TRUE(exact("moe_gate ids", s, di.on_cpu(), di.on_gpu()));
        EXPECT_TRUE(close("moe_gate w", s, dw.on_cpu(), dw.on_gpu(), 1e-6));
      }
}

TEST(BackendParity, MoeSort) {
  // Up to 8,192 slots one block; from 8,192 the wide form, except with 2,048 experts (too many
  // counters for it): one block of 11 warps.
  for (int64_t E : {8, 64, 256, 2048})
    for (int64_t n_slots : {0, 1, 6 * 37, 8 * 300, 6 * 8704}) {
      std::vector<int32_t> ids(n_slots);
      for (auto& id : ids) id = static_cast<int32_t>(rnd_int(0, E - 1));
      Dual<int32_t> di(ids), order(n_slots), position(n_slots);
      std::vector<int64_t> cc(E, -1), cg(E, -1);
      cpu().moe_sort(di.c.data(), n_slots, E, order.c.data(), position.c.data());
      cpu().moe_counts(cc.data());
      gpu().moe_sort(di.g.data(), n_slots, E, order.g.data(), position.g.data());
      gpu().moe_counts(cg.data());
      const std::string s = shp({{"slots", n_slots}, {"E", E}});
      EXPECT_TRUE(exact("moe_sort order", s, order.on_cpu(), order.on_gpu()));
      EXPECT_TRUE(exact("moe_sort position", s, position.on_cpu(), position.on_gpu()));
      EXPECT_TRUE(exact("moe_sort counts", s, cc, cg));
    }
  // An id outside [0, E) is refused by every form (one block, small and large; wide).
  for (auto [E, n_slots] : {std::pair<int64_t, int64_t>{64, 300}, {64, 20000}, {2048, 20000}}) {
    std::vector<int32_t> ids(n_slots, 3);
    ids[n_slots / 2] = static_cast<int32_t>(E);
    Dual<int32_t> di(ids), order(n_slots);
    std::vector<int64_t> cg(E);
    gpu().moe_sort(di.g.data(), n_slots, E, order.g.data(), nullptr);
    EXPECT_THROW(gpu().moe_counts(cg.data()), Error) << n_slots << " slots, " << E << " experts";
  }
}

// The padded EP exchange's layouts (moe_ep_pack / moe_ep_unpack) on routings whose tokens pick
// distinct experts; every buffer starts from the same random contents on both backends, so rows
// left alone must match too.
TEST(BackendParity, MoeEpLayouts) {
  struct Case {
    int64_t peers, per, tokens, k, d;
  };
  for (const Case& c : {Case{2, 32, 0, 6, 256}, Case{2, 32, 1, 6, 2048}, Case{2, 32, 256, 6, 2048},
                        Case{8, 32, 64, 8, 576}, Case{4, 2, 13, 3, 5}, Case{16, 16, 512, 8, 64},
                        Case{2, 4, 33, 3, 20}}) {  // d 20: bf16 rows 8-byte, not 16-byte, aligned
    const int64_t E = c.peers * c.per, n_slots = c.tokens * c.k;
    const int64_t C = (c.tokens + 15) / 16 * 16 * std::min(c.k, c.per);  // as Model::moe sizes it
    const std::string s = shp({{"peers", c.peers}, {"per", c.per}, {"tokens", c.tokens}, {"k", c.k}, {"d", c.d}});
    std::vector<int32_t> ids;
    for (int64_t t = 0; t < c.tokens; ++t) {
      std::vector<int32_t> all(E);
      std::iota(all.begin(), all.end(), 0);
      std::shuffle(all.begin(), all.end(), rng());
      ids.insert(ids.end(), all.begin(), all.begin() + c.k);
    }
    std::vector<int32_t> order_h(n_slots);
    std::vector<int64_t> counts_h(E);
    cpu().moe_sort(ids.data(), n_slots, E, order_h.data(), nullptr);
    cpu().moe_counts(counts_h.data());
    Dual<float> x(rnd(std::max<int64_t>(c.tokens * c.d, 1))), send(rnd(std::max<int64_t>(c.peers * C * c.d, 1)));
    Dual<int32_t> order(order_h.empty() ? std::vector<int32_t>(1, 0) : order_h);
    Dual<int32_t> slot_row(std::vector<int32_t>(std::max<int64_t>(n_slots, 1), -7));
    Dual<int64_t> counts(counts_h);
    cpu().moe_ep_pack(x.c.data(), order.c.data(), c.k, counts.c.data(), c.peers, c.per, C, n_slots, c.d,
                      send.c.data(), slot_row.c.data());
    gpu().moe_ep_pack(x.g.data(), order.g.data(), c.k, counts.g.data(), c.peers, c.per, C, n_slots, c.d,
                      send.g.data(), slot_row.g.data());
    EXPECT_TRUE(exact("moe_ep_pack", s, send.on_cpu(), send.on_gpu()));
    EXPECT_TRUE(exact("moe_ep_pack rows", s, slot_row.on_cpu(), slot_row.on_gpu()));
    if (c.d % 4 == 0) {  // the rows in bf16 (an exchange's for bf16 experts): rounded alike
      std::vector<uint16_t> init(std::max<int64_t>(c.peers * C * c.d, 1));
      for (std::size_t i = 0; i < init.size(); ++i) init[i] = static_cast<uint16_t>(i * 2654435761u >> 16);
      Dual<uint16_t> send_b(init);
      cpu().moe_ep_pack(x.c.data(), order.c.data(), c.k, counts.c.data(), c.peers, c.per, C, n_slots, c.d,
                        send_b.c.data(), slot_row.c.data(), DType::bf16);
      gpu().moe_ep_pack(x.g.data(), order.g.data(), c.k, counts.g.data(), c.peers, c.per, C, n_slots, c.d,
                        send_b.g.data(), slot_row.g.data(), DType::bf16);
      EXPECT_TRUE(exact("moe_ep_pack bf16", s, send_b.on_cpu(), send_b.on_gpu()));
      std::vector<uint16_t> gathered(std::max<int64_t>(n_slots * c.d, 1), 0);
      Dual<uint16_t> gb(gathered);
      cpu().gather_rows_div(x.c.data(), order.c.data(), c.k, n_slots, c.d, gb.c.data(), DType::bf16);
      gpu().gather_rows_div(x.g.data(), order.g.data(), c.k, n_slots, c.d, gb.g.data(), DType::bf16);
      EXPECT_TRUE(exact("gather_rows_div bf16", s, gb.on_cpu(), gb.on_gpu()));
    }

    // What a rank receives: per source, counts per local expert summing to at most C (empty
    // sources and experts included).
    std::vector<int64_t> rc(E, 0);
    for (int64_t p = 0; p < c.peers; ++p) {
      int64_t left = p % 3 == 2 ? 0 : rnd_int(0, C);
      for (int64_t e = 0; e < c.per && left > 0; ++e) {
        const int64_t v = e + 1 == c.per ? left : rnd_int(0, left);
        rc[p * c.per + e] = v, left -= v;
      }
    }
    Dual<int64_t> drc(rc), local(std::vector<int64_t>(c.per, -1));
    Dual<int32_t> uorder(std::vector<int32_t>(std::max<int64_t>(c.peers * C, 1), -3));
    cpu().moe_ep_unpack(drc.c.data(), c.peers, c.per, C, local.c.data(), uorder.c.data());
    gpu().moe_ep_unpack(drc.g.data(), c.peers, c.per, C, local.g.data(), uorder.g.data());
    EXPECT_TRUE(exact("moe_ep_unpack counts", s, local.on_cpu(), local.on_gpu()));
    EXPECT_TRUE(exact("moe_ep_unpack order", s, uorder.on_cpu(), uorder.on_gpu()));

    // Counts no sender makes (negative, past a block): the CPU refuses them; the GPU must stay
    // inside the blocks.
    if (c.tokens > 0) {
      std::vector<int64_t> bad(E, C);
      bad[0] = -5;
      Dual<int64_t> dbad(bad);
      EXPECT_THROW(cpu().moe_ep_unpack(dbad.c.data(), c.peers, c.per, C, local.c.data(), uorder.c.data()),
                   dpa::Error);
      gpu().moe_ep_unpack(dbad.g.data(), c.peers, c.per, C, local.g.data(), uorder.g.data());
      const std::vector<int64_t> lg = local.on_gpu();
      const std::vector<int32_t> og = uorder.on_gpu();
      const int64_t total = std::accumulate(lg.begin(), lg.end(), int64_t{0});
      bool inside = total <= c.peers * C;
      for (int64_t q = 0; q < total && inside; ++q) inside = og[q] >= 0 && og[q] < c.peers * C;
      line("moe_ep_unpack", s, "bad counts: rows stay in the blocks", inside);
      EXPECT_TRUE(inside);
    }
  }
}

// The peer-memory form with every rank's area on this one GPU (the mapping between processes is
// the runtime's; the flags, headers and strides are the kernels'): dispatch, identity experts,
// return and combine, per rank, on both backends; each token must get sum_k w x. The rows go out
// and the results come back in f32 or bf16 (bf16 either way: the sum then takes bf16(x)).
TEST(BackendParity, MoeEpPeerMemory) {
  for (const DType rows_dt : {DType::f32, DType::bf16})
  for (const DType dt : {DType::f32, DType::bf16})
  for (int64_t R : {2, 3})
  for (int64_t d : {16, 20}) {  // 20: bf16 rows of 40 bytes, the scalar return of 10-word rows
    const int64_t per = 4, E = R * per, T = 9, K = 3, C = 16 * std::min(K, per), S = C + 5;
    const int64_t area_floats = 2 * R * S * d, total = area_floats + 4 * R;  // + 2R int64 flags
    const bool bf16 = dt == DType::bf16, rows_bf16 = rows_dt == DType::bf16;
    const std::size_t esize = bf16 ? sizeof(uint16_t) : sizeof(float);
    const std::size_t rsize = rows_bf16 ? sizeof(uint16_t) : sizeof(float);
    const std::string s = shp({{"ranks", R}, {"tokens", T}, {"k", K}, {"d", d}}) + (rows_bf16 ? " bf16 rows" : "") +
                          (bf16 ? " bf16 results" : "");
    struct Side {
      std::vector<Buffer<float>> area;
      std::vector<std::vector<float*>> blocks, back_blocks;
      std::vector<std::vector<int64_t*>> flags, back_flags;
      std::vector<Buffer<int64_t>> seq;
      std::vector<Buffer<int32_t>> done;
    };
    auto setup = [&](Backend& be, Side& sd) {
      for (int64_t r = 0; r < R; ++r) {
        sd.area.emplace_back(be, static_cast<std::size_t>(total));
        be.fill_zero(sd.area.back().data(), static_cast<std::size_t>(total) * sizeof(float));
        sd.seq.emplace_back(be, 1), sd.done.emplace_back(be, 1);
        be.fill_zero(sd.seq.back().data(), sizeof(int64_t)), be.fill_zero(sd.done.back().data(), sizeof(int32_t));
      }
      auto fl = [&](int64_t p) { return reinterpret_cast<int64_t*>(sd.area[p].data() + area_floats); };
      sd.blocks.resize(R), sd.back_blocks.resize(R), sd.flags.resize(R), sd.back_flags.resize(R);
      for (int64_t r = 0; r < R; ++r)
        for (int64_t p = 0; p < R; ++p) {
          sd.blocks[r].push_back(
              reinterpret_cast<float*>(reinterpret_cast<char*>(sd.area[p].data()) + r * S * d * rsize));
          sd.back_blocks[r].push_back(reinterpret_cast<float*>(
              reinterpret_cast<char*>(sd.area[p].data() + R * S * d) + r * S * d * esize));
          sd.flags[r].push_back(fl(p) + r), sd.back_flags[r].push_back(fl(p) + R + r);
        }
    };
    Side c, g;
    setup(cpu(), c), setup(gpu(), g);
    // Pointer arrays: host memory for the CPU, device copies for the GPU.
    auto on_gpu = [](const auto& v) {
      using T0 = typename std::decay_t<decltype(v)>::value_type;
      auto b = std::make_unique<Buffer<T0>>(gpu(), v.size());
      gpu().upload(b->data(), v.data(), v.size() * sizeof(T0));
      return b;
    };
    std::vector<std::vector<float>> x(R), w(R);
    std::vector<std::unique_ptr<Dual<int32_t>>> order(R), slot_row(R);
    std::vector<std::unique_ptr<Dual<int64_t>>> counts(R), recv_counts(R), local(R);
    std::vector<std::unique_ptr<Dual<int32_t>>> uorder(R);
    std::vector<std::unique_ptr<Dual<float>>> xs(R), results(R);
    std::vector<std::unique_ptr<Buffer<float*>>> gb(R), gbb(R);
    std::vector<std::unique_ptr<Buffer<int64_t*>>> gf(R), gbf(R);
    for (int64_t r = 0; r < R; ++r) {
      std::vector<int32_t> ids;
      for (int64_t t = 0; t < T; ++t) {
        std::vector<int32_t> all(E);
        std::iota(all.begin(), all.end(), 0);
        std::shuffle(all.begin(), all.end(), rng());
        ids.insert(ids.end(), all.begin(), all.begin() + K);
      }
      std::vector<int32_t> oh(T * K);
      std::vector<int64_t> ch(E);
      cpu().moe_sort(ids.data(), T * K, E, oh.data(), nullptr);
      cpu().moe_counts(ch.data());
      x[r] = rnd(T * d), w[r] = rnd(T * K);
      xs[r] = std::make_unique<Dual<float>>(x[r]);
      order[r] = std::make_unique<Dual<int32_t>>(oh);
      counts[r] = std::make_unique<Dual<int64_t>>(ch);
      slot_row[r] = std::make_unique<Dual<int32_t>>(static_cast<std::size_t>(T * K));
      recv_counts[r] = std::make_unique<Dual<int64_t>>(static_cast<std::size_t>(E));
      local[r] = std::make_unique<Dual<int64_t>>(static_cast<std::size_t>(per));
      uorder[r] = std::make_unique<Dual<int32_t>>(static_cast<std::size_t>(R * S));
      results[r] = std::make_unique<Dual<float>>(static_cast<std::size_t>(R * S * d));
      gb[r] = on_gpu(g.blocks[r]), gbb[r] = on_gpu(g.back_blocks[r]);
      gf[r] = on_gpu(g.flags[r]), gbf[r] = on_gpu(g.back_flags[r]);
    }
    for (int64_t r = 0; r < R; ++r) {
      cpu().moe_ep_pack_peers(xs[r]->c.data(), order[r]->c.data(), K, counts[r]->c.data(), R, per, C, S, T * K, d,
                              EpPeers{c.blocks[r].data(), c.flags[r].data(), c.seq[r].data(), c.done[r].data()},
                              slot_row[r]->c.data(), rows_dt);
      gpu().moe_ep_pack_peers(xs[r]->g.data(), order[r]->g.data(), K, counts[r]->g.data(), R, per, C, S, T * K, d,
                              EpPeers{gb[r]->data(), gf[r]->data(), g.seq[r].data(), g.done[r].data()},
                              slot_row[r]->g.data(), rows_dt);
    }
    for (int64_t r = 0; r < R; ++r) {
      auto flags_c = reinterpret_cast<const int64_t*>(c.area[r].data() + area_floats);
      auto flags_g = reinterpret_cast<const int64_t*>(g.area[r].data() + area_floats);
      cpu().moe_ep_unpack_peers(c.area[r].data(), flags_c, c.seq[r].data(), R, per, C, S, d, recv_counts[r]->c.data(),
                                local[r]->c.data(), uorder[r]->c.data(), rows_dt);
      gpu().moe_ep_unpack_peers(g.area[r].data(), flags_g, g.seq[r].data(), R, per, C, S, d, recv_counts[r]->g.data(),
                                local[r]->g.data(), uorder[r]->g.data(), rows_dt);
      for (Backend* be : {&cpu(), &gpu()}) {
        const bool is_cpu = be == &cpu();
        // Identity experts: the results are the received rows (from one type to the other through
        // the host).
        float* res = is_cpu ? results[r]->c.data() : results[r]->g.data();
        const float* rows = is_cpu ? c.area[r].data() : g.area[r].data();
        const std::size_t n = static_cast<std::size_t>(R * S * d);
        std::vector<float> f(n);
        std::vector<uint16_t> h(n);
        if (rows_bf16) {
          be->download(h.data(), rows, n * sizeof(uint16_t));
          std::transform(h.begin(), h.end(), f.begin(), dpa::bf16_to_f32);
        } else {
          be->download(f.data(), rows, n * sizeof(float));
          std::transform(f.begin(), f.end(), h.begin(), dpa::f32_to_bf16);
        }
        if (bf16) be->upload(res, h.data(), n * sizeof(uint16_t));
        else be->upload(res, f.data(), n * sizeof(float));
      }
      cpu().moe_ep_return_peers(results[r]->c.data(), recv_counts[r]->c.data(), R, per, C, S, d,
                                EpPeers{c.back_blocks[r].data(), c.back_flags[r].data(), c.seq[r].data(), c.done[r].data()},
                                dt);
      gpu().moe_ep_return_peers(results[r]->g.data(), recv_counts[r]->g.data(), R, per, C, S, d,
                                EpPeers{gbb[r]->data(), gbf[r]->data(), g.seq[r].data(), g.done[r].data()}, dt);
      EXPECT_TRUE(exact("moe_ep_unpack_peers counts", s + " rank " + std::to_string(r), recv_counts[r]->on_cpu(), recv_counts[r]->on_gpu()));
      EXPECT_TRUE(exact("moe_ep_unpack_peers", s + " rank " + std::to_string(r), uorder[r]->on_cpu(), uorder[r]->on_gpu()));
      EXPECT_TRUE(exact("moe_ep_unpack_peers local", s + " rank " + std::to_string(r), local[r]->on_cpu(), local[r]->on_gpu()));
    }
    for (int64_t r = 0; r < R; ++r) {
      cpu().moe_ep_wait(reinterpret_cast<const int64_t*>(c.area[r].data() + area_floats) + R, R, c.seq[r].data());
      gpu().moe_ep_wait(reinterpret_cast<const int64_t*>(g.area[r].data() + area_floats) + R, R, g.seq[r].data());
      Dual<float> dw(w[r]), out(static_cast<std::size_t>(T * d));
      cpu().moe_combine(c.area[r].data() + R * S * d, slot_row[r]->c.data(), dw.c.data(), T, K, d, out.c.data(), true,
                        dt);
      gpu().moe_combine(g.area[r].data() + R * S * d, slot_row[r]->g.data(), dw.g.data(), T, K, d, out.g.data(), true,
                        dt);
      EXPECT_TRUE(exact("moe_ep_pack_peers rows", s + " rank " + std::to_string(r), slot_row[r]->on_cpu(), slot_row[r]->on_gpu()));
      EXPECT_TRUE(close("moe_ep peers combine", s + " rank " + std::to_string(r), out.on_cpu(), out.on_gpu(), 3e-6));
      std::vector<float> want(T * d, 0);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t k = 0; k < K; ++k)
          for (int64_t j = 0; j < d; ++j) {
            const float xv = x[r][t * d + j];
            want[t * d + j] += w[r][t * K + k] * (bf16 || rows_bf16 ? dpa::bf16_to_f32(dpa::f32_to_bf16(xv)) : xv);
          }
      EXPECT_TRUE(close("moe_ep peers combine", s + " rank " + std::to_string(r) + " vs sum_k w x", want, out.on_gpu(), 3e-6));
    }
    std::vector<int64_t> seq_g(1);
    gpu().download(seq_g.data(), g.seq[0].data(), sizeof(int64_t));
    line("moe_ep_pack_peers", s, "dispatch count " + std::to_string(seq_g[0]), seq_g[0] == 1);
    EXPECT_EQ(seq_g[0], 1);
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
        for (auto& r : rows) r = static_cast<int32_t>(rnd_int(0, 6 * m - 1));  // slots of top-6
        Dual<int32_t> slots(rows.empty() ? std::vector<int32_t>(1, 0) : rows);
        cpu().gather_rows_div(x.c.data(), slots.c.data(), 6, n, d, out.c.data());
        gpu().gather_rows_div(x.g.data(), slots.g.data(), 6, n, d, out.g.data());
        EXPECT_TRUE(close("gather_rows_div", s + " div=6", out.on_cpu(), out.on_gpu(), 0.0));
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
      for (int64_t k : {1, 8, 11}) {  // 11: the combine reads 8 rows at a time
        Dual<float> y(rnd(std::max<int64_t>(n * k * d, 1))), w(rnd(std::max<int64_t>(n * k, 1), 0, 1)),
            out(rnd(std::max<int64_t>(n * d, 1)));
        cpu().moe_combine(y.c.data(), nullptr, w.c.data(), n, k, d, out.c.data(), true);
        gpu().moe_combine(y.g.data(), nullptr, w.g.data(), n, k, d, out.g.data(), true);
        EXPECT_TRUE(close("moe_combine", s + " top_k=" + std::to_string(k), out.on_cpu(), out.on_gpu(), 3e-6));
        // Through a row permutation (the results left in sorted order).
        std::vector<int32_t> perm(static_cast<std::size_t>(std::max<int64_t>(n * k, 1)));
        std::iota(perm.begin(), perm.end(), 0);
        std::shuffle(perm.begin(), perm.end(), rng());
        Dual<int32_t> dp(perm);
        cpu().moe_combine(y.c.data(), dp.c.data(), w.c.data(), n, k, d, out.c.data(), true);
        gpu().moe_combine(y.g.data(), dp.g.data(), w.g.data(), n, k, d, out.g.data(), true);
        EXPECT_TRUE(close("moe_combine", s + " top_k=" + std::to_string(k) + " rows", out.on_cpu(), out.on_gpu(), 3e-6));
        // Overwriting: out's values before do not matter.
        Dual<float> fresh(rnd(std::max<int64_t>(n * d, 1)));
        cpu().moe_combine(y.c.data(), dp.c.data(), w.c.data(), n, k, d, fresh.c.data(), false);
        gpu().moe_combine(y.g.data(), dp.g.data(), w.g.data(), n, k, d, fresh.g.data(), false);
        EXPECT_TRUE(close("moe_combine", s + " top_k=" + std::to_string(k) + " rows, overwrite", fresh.on_cpu(),
                          fresh.on_gpu(), 3e-6));
        // bf16 results (moe_experts_fixed's bf16 form), through the rows and onto out.
        std::vector<uint16_t> yb(static_cast<std::size_t>(std::max<int64_t>(n * k * d, 1)));
        for (auto& v : yb) v = f32_to_bf16(static_cast<float>(rnd_int(-1000, 1000)) / 256.0f);
        Dual<uint16_t> ybd(yb);
        cpu().moe_combine(ybd.c.data(), dp.c.data(), w.c.data(), n, k, d, out.c.data(), true, DType::bf16);
        gpu().moe_combine(ybd.g.data(), dp.g.data(), w.g.data(), n, k, d, out.g.data(), true, DType::bf16);
        EXPECT_TRUE(close("moe_combine", s + " top_k=" + std::to_string(k) + " rows, bf16 results", out.on_cpu(),
                          out.on_gpu(), 3e-6));
      }
    }
}

TEST(BackendParity, MoeExperts) {
  struct C { const char* name; DType dt; int64_t D, I; std::vector<int64_t> counts; int64_t ld_extra; bool mixed; };
  const std::vector<int64_t> few = {3, 0, 1, 10, 0, 7, 2, 5};
  const std::vector<int64_t> skewed = {0, 200, 1, 37, 0, 0, 90, 3, 150, 8, 0, 60, 2, 17, 33, 120};
  // 64 experts as a decode step routes them (30..69 rows: most tiles of at most 64 rows, some
  // over), and as a prefill step (16..175, about 6,144 rows: the step where a ring hang showed,
  // blocks of many tiles mixing half and full ones).
  std::vector<int64_t> decode64(64), prefill64(64);
  for (int64_t e = 0; e < 64; ++e) decode64[e] = 30 + (e * 13) % 40, prefill64[e] = 16 + (e * 37) % 160;
  const std::vector<C> cases = {
      {"few", DType::f32, 64, 48, few, 0, false},
      {"few", DType::bf16, 64, 48, few, 0, false},
      {"skewed", DType::f32, 40, 24, skewed, 0, false},
      {"skewed", DType::bf16, 128, 96, skewed, 0, false},
      {"wide", DType::bf16, 512, 392, {40, 0, 3, 70, 1, 33, 0, 16}, 0, false},
      {"no rows", DType::bf16, 64, 48, {0, 0, 0, 0}, 0, false},
      {"one expert", DType::bf16, 64, 48, {0, 0, 5, 0}, 0, false},
      {"one row", DType::f32, 64, 48, {0, 1, 0}, 0, false},
      {"ld!=cols", DType::f32, 32, 24, {4, 0, 9, 1, 30, 2}, 8, false},
      {"ld!=cols", DType::bf16, 32, 24, {4, 0, 9, 1, 30, 2}, 8, false},
      {"mixed ld (loop)", DType::bf16, 32, 24, {4, 0, 9, 1, 30, 2}, 8, true},
      // Shapes the warpgroup-MMA kernels take (D a multiple of 256, I of 128): partial 128-row
      // tiles, an expert of exactly one tile, one past it, experts without rows.
      {"wgmma", DType::bf16, 256, 128, {0, 300, 1, 129, 0, 128, 77, 0}, 0, false},
      {"wgmma ld!=cols", DType::bf16, 512, 384, {260, 5, 0, 140}, 8, false},
      {"wgmma many rows", DType::bf16, 256, 256, {700, 650, 900}, 0, false},
      {"wgmma decode 64 experts", DType::bf16, 256, 128, decode64, 0, false},
      {"wgmma prefill 64 experts", DType::bf16, 256, 256, prefill64, 0, false},
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
    cpu().moe_experts(x.c.data(), dord.c.data(), 1, c.counts.data(), E, gc.data(), uc.data(), dc.data(), out.c.data());
    gpu().moe_experts(x.g.data(), dord.g.data(), 1, c.counts.data(), E, gg.data(), ug.data(), dg.data(), out.g.data());
    EXPECT_TRUE(close("moe_experts", dt(c.dt) + " " + c.name + " " +
                                         shp({{"E", E}, {"rows", total}, {"D", c.D}, {"I", c.I}}),
                      out.on_cpu(), out.on_gpu(), c.dt == DType::f32 ? 2e-5 : 2e-2, 1e-5));
    // The model's form with every expert local: x holds the tokens and order the sorted slots,
    // row p reads token order[p] / 3 and lands at slot order[p]; both forms, each expert path.
    {
      const int64_t kd = 3;
      Dual<float> xt(rnd(std::max<int64_t>((total + kd - 1) / kd * c.D, 1)));
      Dual<int64_t> dcounts(c.counts);
      int64_t top = 0;
      for (int64_t k : c.counts) top = std::max(top, k);
      const int64_t cap = std::max<int64_t>((top + 15) / 16 * 16, 16);
      for (const char* mode : {"auto", "1", "0"}) {
        Dual<float> o1(rnd(std::max<int64_t>(total * c.D, 1))), o2(o1.on_cpu());
        cpu().moe_experts(xt.c.data(), dord.c.data(), kd, c.counts.data(), E, gc.data(), uc.data(), dc.data(),
                          o1.c.data());
        cpu().moe_experts(xt.c.data(), dord.c.data(), kd, c.counts.data(), E, gc.data(), uc.data(), dc.data(),
                          o2.c.data());
        gpu().synchronize();
        with_env_backend("DPA_MOE_WGMMA", mode, [&] {
          gpu().moe_experts(xt.g.data(), dord.g.data(), kd, c.counts.data(), E, gg.data(), ug.data(), dg.data(),
                            o1.g.data());
          gpu().moe_experts_fixed(xt.g.data(), dord.g.data(), kd, dcounts.g.data(), E, cap, total, gg.data(),
                                  ug.data(), dg.data(), o2.g.data());
        });
        const std::string what = dt(c.dt) + " x_div 3 DPA_MOE_WGMMA=" + mode + " " + c.name + " " +
                                 shp({{"E", E}, {"rows", total}, {"D", c.D}});
        EXPECT_TRUE(close("moe_experts", what, o1.on_cpu(), o1.on_gpu(), c.dt == DType::f32 ? 2e-5 : 2e-2, 1e-5));
        EXPECT_TRUE(close("moe_experts_fixed", what, o2.on_cpu(), o2.on_gpu(), c.dt == DType::f32 ? 2e-5 : 2e-2, 1e-5));
      }
    }
    // An exchange's bf16 rows (x_div 1, their count as out_rows): the warpgroup-MMA kernels read
    // them as they are, the other forms through f32 (DPA_MOE_WGMMA=0); both forms, f32 and bf16
    // results, against the CPU from the same rows. Two layouts: every row in use (order a shuffle
    // of the rows), and the peer area's (more rows than slots, order scattered over them, junk in
    // the rows no slot names, which the fallback must not read into a result). The rows the slots
    // name are compared within bf16 tolerance; the others must keep their bytes (zeros) on both.
    if (c.dt == DType::bf16 && c.D % 4 == 0 && total > 0) {
      Dual<int64_t> dcounts(c.counts);
      int64_t top = 0;
      for (int64_t k : c.counts) top = std::max(top, k);
      const int64_t cap = std::max<int64_t>((top + 15) / 16 * 16, 16);
      for (const bool sparse : {false, true}) {
        const int64_t n_rows = sparse ? 2 * total + 5 : total;
        std::vector<int32_t> rows_order(static_cast<std::size_t>(n_rows));
        std::iota(rows_order.begin(), rows_order.end(), 0);
        std::shuffle(rows_order.begin(), rows_order.end(), rng());
        rows_order.resize(static_cast<std::size_t>(total));
        Dual<int32_t> sord(rows_order);
        std::vector<float> xf = rnd(n_rows * c.D);
        std::vector<char> used(static_cast<std::size_t>(n_rows), 0);
        for (int32_t r : rows_order) used[static_cast<std::size_t>(r)] = 1;
        for (int64_t r = 0; r < n_rows; ++r)
          if (!used[static_cast<std::size_t>(r)])
            for (int64_t j = 0; j < c.D; ++j) xf[static_cast<std::size_t>(r * c.D + j)] = 1e30f;  // junk
        std::vector<uint16_t> xh(xf.size());
        std::transform(xf.begin(), xf.end(), xh.begin(), dpa::f32_to_bf16);
        Dual<uint16_t> xb(xh);
        auto routed = [&](const std::vector<float>& all) {  // the rows the slots name, in slot order
          std::vector<float> r;
          for (int32_t row : rows_order)
            r.insert(r.end(), all.begin() + row * c.D, all.begin() + (row + 1) * c.D);
          return r;
        };
        auto widen = [](const std::vector<uint16_t>& b) {
          std::vector<float> f(b.size());
          std::transform(b.begin(), b.end(), f.begin(), dpa::bf16_to_f32);
          return f;
        };
        for (const DType out_dt : {DType::f32, DType::bf16})
          for (const char* mode : {"1", "0"}) {
            const std::string what = std::string("bf16 rows, ") + dt(out_dt) + " results" +
                                     (sparse ? ", peer-area rows" : "") + " DPA_MOE_WGMMA=" + mode + " " + c.name +
                                     " " + shp({{"E", E}, {"rows", total}, {"out_rows", n_rows}, {"D", c.D}});
            auto run = [&](auto& o1, auto& o2) {
              cpu().moe_experts(xb.c.data(), sord.c.data(), 1, c.counts.data(), E, gc.data(), uc.data(), dc.data(),
                                o1.c.data(), out_dt, n_rows, DType::bf16);
              cpu().moe_experts(xb.c.data(), sord.c.data(), 1, c.counts.data(), E, gc.data(), uc.data(), dc.data(),
                                o2.c.data(), out_dt, n_rows, DType::bf16);
              gpu().synchronize();
              with_env_backend("DPA_MOE_WGMMA", mode, [&] {
                gpu().moe_experts(xb.g.data(), sord.g.data(), 1, c.counts.data(), E, gg.data(), ug.data(), dg.data(),
                                  o1.g.data(), out_dt, n_rows, DType::bf16);
                gpu().moe_experts_fixed(xb.g.data(), sord.g.data(), 1, dcounts.g.data(), E, cap, total, gg.data(),
                                        ug.data(), dg.data(), o2.g.data(), out_dt, n_rows, DType::bf16);
              });
            };
            const std::size_t n_out = static_cast<std::size_t>(n_rows * c.D);
            auto unrouted = [&](const std::vector<float>& all) {  // the rows no slot names
              std::vector<float> r;
              for (int64_t row = 0; row < n_rows; ++row)
                if (!used[static_cast<std::size_t>(row)])
                  r.insert(r.end(), all.begin() + row * c.D, all.begin() + (row + 1) * c.D);
              return r;
            };
            auto check = [&](const char* op, const std::vector<float>& on_cpu, const std::vector<float>& on_gpu) {
              EXPECT_TRUE(close(op, what, routed(on_cpu), routed(on_gpu), 2e-2, 1e-5));
              if (sparse) {
                EXPECT_TRUE(exact(op, what + ", rows no slot names", unrouted(on_cpu), unrouted(on_gpu)));
              }
            };
            if (out_dt == DType::f32) {
              Dual<float> o1(n_out), o2(n_out);
              run(o1, o2);
              check("moe_experts", o1.on_cpu(), o1.on_gpu());
              check("moe_experts_fixed", o2.on_cpu(), o2.on_gpu());
            } else {
              Dual<uint16_t> o1(n_out), o2(n_out);
              run(o1, o2);
              check("moe_experts", widen(o1.on_cpu()), widen(o1.on_gpu()));
              check("moe_experts_fixed", widen(o2.on_cpu()), widen(o2.on_gpu()));
            }
          }
      }
    }
    // bf16: the warpgroup-MMA kernels wherever they apply (DPA_MOE_WGMMA=1; the others fall
    // back), and never (0: cuBLAS over padded groups), from the same starting output.
    // Both block widths of the warpgroup-MMA kernels (DPA_MOE_WGMMA_BLOCKS).
    const std::pair<const char*, const char*> forms[] = {{"1", "wide"}, {"1", "narrow"}, {"0", "auto"}};
    if (c.dt == DType::bf16)
      for (const auto& [mode, blocks] : forms) {
        Dual<float> out3(rnd(std::max<int64_t>(total * c.D, 1)));
        cpu().moe_experts(x.c.data(), dord.c.data(), 1, c.counts.data(), E, gc.data(), uc.data(), dc.data(),
                          out3.c.data());
        gpu().synchronize();  // the other backend's stream runs after this one's uploads
        setenv("DPA_MOE_WGMMA_BLOCKS", blocks, 1);
        with_env_backend("DPA_MOE_WGMMA", mode, [&] {
          gpu().moe_experts(x.g.data(), dord.g.data(), 1, c.counts.data(), E, gg.data(), ug.data(), dg.data(),
                            out3.g.data());
        });
        unsetenv("DPA_MOE_WGMMA_BLOCKS");
        EXPECT_TRUE(close("moe_experts",
                          std::string("DPA_MOE_WGMMA=") + mode + " DPA_MOE_WGMMA_BLOCKS=" + blocks + " " + c.name +
                              " " + shp({{"E", E}, {"rows", total}, {"D", c.D}, {"I", c.I}}),
                          out3.on_cpu(), out3.on_gpu(), 2e-2, 1e-5));
      }
    // The fixed-capacity form (counts in backend memory, every expert padded to the capacity):
    // the largest count rounded up to 16, and a capacity far above it; against the CPU's
    // moe_experts, from the same starting output.
    int64_t top = 0;
    for (int64_t k : c.counts) top = std::max(top, k);
    Dual<int64_t> dcounts(c.counts);
    // The slots routed as the backend is told them: exact, none known (0) and wrong (1); each
    // picks the CUDA kernels' tile rows (16, 32 or 64: "skewed" takes all three), never results.
    for (int64_t cap : {std::max<int64_t>((top + 15) / 16 * 16, 16), top + 100})
      for (int64_t bound : {total, int64_t{0}, int64_t{1}}) {
        Dual<float> out2(rnd(std::max<int64_t>(total * c.D, 1)));
        cpu().moe_experts(x.c.data(), dord.c.data(), 1, c.counts.data(), E, gc.data(), uc.data(), dc.data(),
                          out2.c.data());
        gpu().moe_experts_fixed(x.g.data(), dord.g.data(), 1, dcounts.g.data(), E, cap, bound, gg.data(), ug.data(),
                                dg.data(), out2.g.data());
        EXPECT_TRUE(close("moe_experts_fixed",
                          dt(c.dt) + " " + c.name + " " +
                              shp({{"E", E}, {"rows", total}, {"cap", cap}, {"bound", bound}, {"D", c.D}}),
                          out2.on_cpu(), out2.on_gpu(), c.dt == DType::f32 ? 2e-5 : 2e-2, 1e-5));
      }
    // bf16: the fixed form on the warpgroup-MMA kernels wherever they apply (tiles planned on the
    // device), also with no bound known, and a capacity past the largest count.
    if (c.dt == DType::bf16)
      for (int64_t cap : {std::max<int64_t>((top + 15) / 16 * 16, 16), top + 200})
        for (const char* blocks : {"wide", "narrow"}) {
          Dual<float> out4(rnd(std::max<int64_t>(total * c.D, 1)));
          cpu().moe_experts(x.c.data(), dord.c.data(), 1, c.counts.data(), E, gc.data(), uc.data(), dc.data(),
                            out4.c.data());
          gpu().synchronize();
          setenv("DPA_MOE_WGMMA_BLOCKS", blocks, 1);
          with_env_backend("DPA_MOE_WGMMA", "1", [&] {
            gpu().moe_experts_fixed(x.g.data(), dord.g.data(), 1, dcounts.g.data(), E, cap, 0, gg.data(), ug.data(),
                                    dg.data(), out4.g.data());
          });
          unsetenv("DPA_MOE_WGMMA_BLOCKS");
          EXPECT_TRUE(close("moe_experts_fixed",
                            std::string("DPA_MOE_WGMMA=1 DPA_MOE_WGMMA_BLOCKS=") + blocks + " " + c.name + " " +
                                shp({{"E", E}, {"rows", total}, {"cap", cap}, {"D", c.D}}),
                            out4.on_cpu(), out4.on_gpu(), 2e-2, 1e-5));
        }
    // bf16 results (the model's for bf16 experts): the warpgroup-MMA kernels round them as they
    // write them (both block widths); the other forms (DPA_MOE_WGMMA=0) round f32 results. Against
    // the CPU's rounding of its own f32 results; rows no slot names keep their bytes on the CPU.
    if (c.dt == DType::bf16 && total > 0) {
      const std::pair<const char*, const char*> bforms[] = {{"1", "wide"}, {"1", "narrow"}, {"0", "auto"}};
      const int64_t cap = std::max<int64_t>((top + 15) / 16 * 16, 16);
      for (const auto& [mode, blocks] : bforms) {
        // The grouped form (counts on the host) first.
        Dual<uint16_t> og(std::vector<uint16_t>(static_cast<std::size_t>(total * c.D), 0));
        cpu().moe_experts(x.c.data(), dord.c.data(), 1, c.counts.data(), E, gc.data(), uc.data(), dc.data(),
                          og.c.data(), DType::bf16, total);
        gpu().synchronize();
        setenv("DPA_MOE_WGMMA_BLOCKS", blocks, 1);
        with_env_backend("DPA_MOE_WGMMA", mode, [&] {
          gpu().moe_experts(x.g.data(), dord.g.data(), 1, c.counts.data(), E, gg.data(), ug.data(), dg.data(),
                            og.g.data(), DType::bf16, total);
        });
        unsetenv("DPA_MOE_WGMMA_BLOCKS");
        Dual<uint16_t> ob(std::vector<uint16_t>(static_cast<std::size_t>(total * c.D), 0));
        cpu().moe_experts_fixed(x.c.data(), dord.c.data(), 1, dcounts.c.data(), E, cap, total, gc.data(), uc.data(),
                                dc.data(), ob.c.data(), DType::bf16, total);
        gpu().synchronize();
        setenv("DPA_MOE_WGMMA_BLOCKS", blocks, 1);
        with_env_backend("DPA_MOE_WGMMA", mode, [&] {
          gpu().moe_experts_fixed(x.g.data(), dord.g.data(), 1, dcounts.g.data(), E, cap, total, gg.data(), ug.data(),
                                  dg.data(), ob.g.data(), DType::bf16, total);
        });
        unsetenv("DPA_MOE_WGMMA_BLOCKS");
        auto widen = [](const std::vector<uint16_t>& b) {
          std::vector<float> f(b.size());
          for (std::size_t i = 0; i < b.size(); ++i) f[i] = bf16_to_f32(b[i]);
          return f;
        };
        EXPECT_TRUE(close("moe_experts bf16 results",
                          std::string("DPA_MOE_WGMMA=") + mode + " DPA_MOE_WGMMA_BLOCKS=" + blocks + " " + c.name +
                              " " + shp({{"E", E}, {"rows", total}, {"D", c.D}}),
                          widen(og.on_cpu()), widen(og.on_gpu()), 2e-2, 1e-5));
        EXPECT_TRUE(close("moe_experts_fixed bf16 results",
                          std::string("DPA_MOE_WGMMA=") + mode + " DPA_MOE_WGMMA_BLOCKS=" + blocks + " " + c.name +
                              " " + shp({{"E", E}, {"rows", total}, {"cap", cap}, {"D", c.D}}),
                          widen(ob.on_cpu()), widen(ob.on_gpu()), 2e-2, 1e-5));
      }
      std::vector<uint16_t> none(static_cast<std::size_t>(total * c.D));
      EXPECT_THROW(cpu().moe_experts_fixed(x.c.data(), dord.c.data(), 1, dcounts.c.data(), E, cap, total, gc.data(),
                                           uc.data(), dc.data(), none.data(), DType::bf16, total - 1),
                   dpa::Error);  // a row past the rows said
    }
    // The CPU reference refuses a count over the capacity.
    if (top > 1) {
      EXPECT_THROW(cpu().moe_experts_fixed(x.c.data(), dord.c.data(), 1, c.counts.data(), E, top - 1, total, gc.data(),
                                           uc.data(), dc.data(), out.c.data()),
                   dpa::Error);
    }
  }
}

}  // namespace
}  // namespace dpa::backend
