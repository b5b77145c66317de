// CPU reference: MoE router (softmax greedy, group-limited greedy, sigmoid noaux_tc), the
// counting sort that permutes token slots by expert, the gather and the weighted combine.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <cmath>
#include <numeric>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"

namespace dpa::backend {

namespace {

// A row of d floats stored at dst as `dtype`: f32, or rounded to bf16.
void store_row(const float* src, int64_t d, void* dst, DType dtype) {
  if (dtype == DType::bf16)
    std::transform(src, src + d, static_cast<uint16_t*>(dst), f32_to_bf16);
  else
    std::copy_n(src, d, static_cast<float*>(dst));
}

// Indices of the k largest of v over `allowed` entries, by descending value, ties to the lower
// index (a fixed rule, so every backend and layout picks the same experts).
std::vector<int64_t> top_indices(const std::vector<double>& v, const std::vector<bool>& allowed,
                                 int64_t k) {
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < static_cast<int64_t>(v.size()); ++i)
    if (allowed[i]) idx.push_back(i);
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return v[a] > v[b]; });
  idx.resize(std::min<int64_t>(k, static_cast<int64_t>(idx.size())));
  return idx;
}

}  // namespace

void CpuBackend::moe_gate(const float* logits, int64_t n, const GateParams& p, int32_t* ids,
                          float* weights) {
  const int64_t E = p.n_experts;
  if (p.top_k <= 0 || p.top_k > E) throw Error(fmt::format("moe gate: top_k {} of {} experts", p.top_k, E));
  if (p.shared_slots < 0) throw Error(fmt::format("moe gate: {} shared slots", p.shared_slots));
  const int64_t stride = p.top_k + p.shared_slots;
  const bool grouped = p.n_group > 1 && p.method != TopkMethod::greedy;
  if (grouped && (E % p.n_group != 0 || p.topk_group <= 0 || p.topk_group > p.n_group))
    throw Error(fmt::format("moe gate: {} experts in {} groups, topk_group {}", E, p.n_group,
                            p.topk_group));
  std::vector<double> score(E), choice(E);
  for (int64_t t = 0; t < n; ++t) {
    const float* l = logits + t * E;
    if (p.scoring == Scoring::softmax) {
      double mx = l[0], sum = 0;
      for (int64_t e = 1; e < E; ++e) mx = std::max<double>(mx, l[e]);
      for (int64_t e = 0; e < E; ++e) sum += (score[e] = std::exp(l[e] - mx));
      for (int64_t e = 0; e < E; ++e) score[e] = static_cast<float>(score[e] / sum);
    } else {
      for (int64_t e = 0; e < E; ++e) score[e] = static_cast<float>(1.0 / (1.0 + std::exp(-l[e])));
    }
    for (int64_t e = 0; e < E; ++e) {
      const bool biased = p.method == TopkMethod::noaux_tc && p.correction_bias;
      choice[e] = biased ? static_cast<float>(score[e] + p.correction_bias[e]) : score[e];
    }
    std::vector<bool> allowed(E, true);
    if (grouped) {
      // Group score: max of the group (V2) or sum of its two best biased scores (V3).
      const int64_t per = E / p.n_group;
      std::vector<double> gscore(p.n_group);
      for (int64_t g = 0; g < p.n_group; ++g) {
        std::vector<double> m(choice.begin() + g * per, choice.begin() + (g + 1) * per);
        std::sort(m.begin(), m.end(), std::greater<>());
        gscore[g] = p.method == TopkMethod::noaux_tc ? m[0] + (per > 1 ? m[1] : 0.0) : m[0];
      }
      const auto kept = top_indices(gscore, std::vector<bool>(p.n_group, true), p.topk_group);
      std::fill(allowed.begin(), allowed.end(), false);
      for (int64_t g : kept)
        for (int64_t e = g * per; e < (g + 1) * per; ++e) allowed[e] = true;
    }
    const auto top = top_indices(choice, allowed, p.top_k);
    double sum = 0;
    for (int64_t k = 0; k < p.top_k; ++k) sum += static_cast<float>(score[top[k]]);
    for (int64_t k = 0; k < p.top_k; ++k) {
      double w = static_cast<float>(score[top[k]]);  // weights come from the unbiased scores
      if (p.norm_topk_prob && p.top_k > 1) w /= (sum + 1e-20);
      ids[t * stride + k] = static_cast<int32_t>(top[k]);
      weights[t * stride + k] = static_cast<float>(w * p.routed_scaling_factor);
    }
    for (int64_t s = 0; s < p.shared_slots; ++s)
      ids[t * stride + p.top_k + s] = static_cast<int32_t>(E + s), weights[t * stride + p.top_k + s] = 1.0f;
  }
}

void CpuBackend::moe_sort(const int32_t* ids, int64_t n_slots, int64_t n_experts, int32_t* order,
                          int32_t* position) {
  counts_pending_ = false;
  counts_.assign(static_cast<std::size_t>(std::max<int64_t>(n_experts, 0)), 0);
  int64_t* counts = counts_.data();
  for (int64_t s = 0; s < n_slots; ++s) {
    if (ids[s] < 0 || ids[s] >= n_experts)
      throw Error(fmt::format("moe sort: expert id {} outside [0, {})", ids[s], n_experts));
    ++counts[ids[s]];
  }
  counts_pending_ = true;
  std::vector<int64_t> next(counts_.size(), 0);
  std::exclusive_scan(counts_.begin(), counts_.end(), next.begin(), int64_t{0});
  for (int64_t s = 0; s < n_slots; ++s) {
    const int64_t j = next[ids[s]]++;
    order[j] = static_cast<int32_t>(s);
    if (position) position[s] = static_cast<int32_t>(j);
  }
}

void CpuBackend::moe_counts(int64_t* counts) {
  if (!counts_pending_) throw Error("moe_counts: no moe_sort before it");
  counts_pending_ = false;
  std::copy(counts_.begin(), counts_.end(), counts);
}

void CpuBackend::moe_counts_to(int64_t* dst) {
  if (!counts_pending_) throw Error("moe_counts_to: no moe_sort before it");
  std::copy(counts_.begin(), counts_.end(), dst);
}

void CpuBackend::moe_experts_fixed(const void* x, const int32_t* order, int64_t x_div, const int64_t* counts,
                                   int64_t n_experts, int64_t capacity, int64_t /*rows: a hint*/,
                                   const WeightView* gate,
                                   const WeightView* up, const WeightView* down, void* out, DType out_dtype,
                                   int64_t out_rows, DType x_dtype) {
  for (int64_t e = 0; e < n_experts; ++e)
    if (counts[e] > capacity)
      throw Error(fmt::format("moe_experts_fixed: expert {} has {} rows, capacity {}", e, counts[e], capacity));
  moe_experts(x, order, x_div, counts, n_experts, gate, up, down, out, out_dtype, out_rows, x_dtype);
}

void CpuBackend::gather_rows(const float* x, const int32_t* rows, int64_t n, int64_t d,
                             float* out) {
  gather_rows_div(x, rows, 1, n, d, out, DType::f32);
}

void CpuBackend::gather_rows_div(const float* x, const int32_t* rows, int64_t div, int64_t n,
                                 int64_t d, void* out, DType out_dtype) {
  const std::size_t row = ep_row_bytes("gather_rows_div", d, out_dtype);
  for (int64_t j = 0; j < n; ++j) store_row(x + rows[j] / div * d, d, static_cast<char*>(out) + j * row, out_dtype);
}

void CpuBackend::scatter_rows(const float* x, const int32_t* rows, int64_t n, int64_t d,
                              float* out) {
  for (int64_t j = 0; j < n; ++j) std::copy_n(x + j * d, d, out + static_cast<int64_t>(rows[j]) * d);
}

void CpuBackend::moe_experts(const void* x_any, const int32_t* order, int64_t x_div, const int64_t* counts,
                             int64_t n_experts, const WeightView* gate, const WeightView* up,
                             const WeightView* down, void* out_any, DType out_dtype, int64_t out_rows,
                             DType x_dtype) {
  if (x_div < 1) throw Error(fmt::format("moe_experts: row divisor {}", x_div));
  check_expert_rows("moe_experts", x_dtype, x_div, out_rows);
  if (x_dtype == DType::bf16) {  // the same values in f32 (exact), then as ever
    if (n_experts <= 0) return;
    const auto* xb = static_cast<const uint16_t*>(x_any);
    std::vector<float> xf(static_cast<std::size_t>(out_rows * gate[0].cols));
    std::transform(xb, xb + xf.size(), xf.begin(), bf16_to_f32);
    return moe_experts(xf.data(), order, 1, counts, n_experts, gate, up, down, out_any, out_dtype, out_rows,
                       DType::f32);
  }
  const float* x = static_cast<const float*>(x_any);
  if (out_dtype != DType::f32 && out_dtype != DType::bf16)
    throw Error(fmt::format("moe_experts: {} results", dtype_name(out_dtype)));
  if (out_dtype == DType::bf16) {
    // The f32 results, then each routed row rounded (the rows no slot names keep their bytes).
    if (n_experts <= 0) return;
    const int64_t d = down[0].rows;
    int64_t total = 0;
    for (int64_t e = 0; e < n_experts; ++e) total += std::max<int64_t>(counts[e], 0);
    for (int64_t p = 0; p < total; ++p)
      if (order[p] < 0 || order[p] >= out_rows)
        throw Error(fmt::format("moe_experts: row {} outside the {} bf16 result rows", order[p], out_rows));
    std::vector<float> f(static_cast<std::size_t>(out_rows * d));
    moe_experts(x, order, x_div, counts, n_experts, gate, up, down, f.data(), DType::f32, out_rows, DType::f32);
    auto* o = static_cast<uint16_t*>(out_any);
    for (int64_t p = 0; p < total; ++p) {
      const int64_t r = order[p];
      for (int64_t c = 0; c < d; ++c) o[r * d + c] = f32_to_bf16(f[static_cast<std::size_t>(r * d + c)]);
    }
    return;
  }
  float* out = static_cast<float*>(out_any);
  std::vector<float> ws;
  moe_experts_per_expert(*this, x, order, x_div, counts, n_experts, gate, up, down, out, [&](std::size_t floats) {
    if (ws.size() < floats) ws.resize(floats);
    return ws.data();
  });
}

namespace {

// moe_ep_pack's walk over the sorted slots, peer by peer: row(p, i) is where peer p's i-th row
// goes, at slot_row index p * stride + i.
template <class Row>
void pack_slots(const char* op, const float* x, const int32_t* order, int64_t x_div, const int64_t* counts,
                int64_t n_peers, int64_t per_peer, int64_t capacity, int64_t stride, int64_t n_slots, int64_t d,
                DType dtype, int32_t* slot_row, Row row) {
  int64_t j = 0;
  for (int64_t p = 0; p < n_peers; ++p) {
    int64_t rows = 0;
    for (int64_t e = p * per_peer; e < (p + 1) * per_peer; ++e) rows += counts[e];
    if (rows > capacity) throw Error(fmt::format("{}: {} rows for peer {}, capacity {}", op, rows, p, capacity));
    for (int64_t i = 0; i < rows; ++i, ++j) {
      if (j >= n_slots) throw Error(fmt::format("{}: the counts hold more than {} slots", op, n_slots));
      store_row(x + order[j] / x_div * d, d, row(p, i), dtype);
      slot_row[order[j]] = static_cast<int32_t>(p * stride + i);
    }
  }
  if (j != n_slots) throw Error(fmt::format("{}: the counts hold {} of {} slots", op, j, n_slots));
}

}  // namespace

void CpuBackend::moe_ep_pack(const float* x, const int32_t* order, int64_t x_div, const int64_t* counts,
                             int64_t n_peers, int64_t experts_per_peer, int64_t capacity, int64_t n_slots, int64_t d,
                             void* send, int32_t* slot_row, DType send_dtype) {
  check_ep_layout("moe_ep_pack", n_peers, experts_per_peer, capacity, x_div);
  const std::size_t row = ep_row_bytes("moe_ep_pack", d, send_dtype);
  pack_slots("moe_ep_pack", x, order, x_div, counts, n_peers, experts_per_peer, capacity, capacity, n_slots, d,
             send_dtype, slot_row,
             [&](int64_t p, int64_t i) { return static_cast<char*>(send) + (p * capacity + i) * row; });
}

void CpuBackend::moe_ep_unpack(const int64_t* counts, int64_t n_peers, int64_t n_local, int64_t capacity,
                               int64_t* local_counts, int32_t* order) {
  check_ep_layout("moe_ep_unpack", n_peers, n_local, capacity, 1);
  std::vector<int64_t> off(static_cast<std::size_t>(n_peers * n_local));  // (p, e)'s first row in p's block
  for (int64_t p = 0; p < n_peers; ++p) {
    int64_t run = 0;
    for (int64_t e = 0; e < n_local; ++e) {
      const int64_t c = counts[p * n_local + e];
      if (c < 0 || c > capacity - run)
        throw Error(fmt::format("moe_ep_unpack: source {} announced {} rows for local expert {} ({} before it, "
                                "capacity {})", p, c, e, run, capacity));
      off[static_cast<std::size_t>(p * n_local + e)] = run;
      run += c;
    }
  }
  int64_t q = 0;
  for (int64_t e = 0; e < n_local; ++e) {
    local_counts[e] = 0;
    for (int64_t p = 0; p < n_peers; ++p) {
      const int64_t c = counts[p * n_local + e];
      for (int64_t i = 0; i < c; ++i)
        order[q++] = static_cast<int32_t>(p * capacity + off[static_cast<std::size_t>(p * n_local + e)] + i);
      local_counts[e] += c;
    }
  }
}

void CpuBackend::moe_ep_pack_peers(const float* x, const int32_t* order, int64_t x_div, const int64_t* counts,
                                   int64_t n_peers, int64_t experts_per_peer, int64_t capacity, int64_t stride,
                                   int64_t n_slots, int64_t d, const EpPeers& peers, int32_t* slot_row,
                                   DType rows_dtype) {
  const std::size_t row = check_ep_peers("moe_ep_pack_peers", n_peers, experts_per_peer, capacity, stride, d,
                                         rows_dtype);
  check_ep_layout("moe_ep_pack_peers", n_peers, experts_per_peer, capacity, x_div);
  auto block = [&](int64_t p) { return reinterpret_cast<char*>(peers.blocks[p]); };
  pack_slots("moe_ep_pack_peers", x, order, x_div, counts, n_peers, experts_per_peer, capacity, stride, n_slots, d,
             rows_dtype, slot_row, [&](int64_t p, int64_t i) { return block(p) + i * row; });
  for (int64_t p = 0; p < n_peers; ++p)
    std::copy_n(counts + p * experts_per_peer, experts_per_peer,
                reinterpret_cast<int64_t*>(block(p) + capacity * row));
  const int64_t v = *peers.seq + 1;
  for (int64_t p = 0; p < n_peers; ++p) *peers.flags[p] = v;
  *peers.seq = v;
}

void CpuBackend::moe_ep_unpack_peers(const void* area, const int64_t* flags, const int64_t* seq, int64_t n_peers,
                                     int64_t experts_per_peer, int64_t capacity, int64_t stride, int64_t d,
                                     int64_t* counts, int64_t* local_counts, int32_t* order, DType rows_dtype) {
  const std::size_t row = check_ep_peers("moe_ep_unpack_peers", n_peers, experts_per_peer, capacity, stride, d,
                                         rows_dtype);
  moe_ep_wait(flags, n_peers, seq);
  for (int64_t p = 0; p < n_peers; ++p)
    std::copy_n(reinterpret_cast<const int64_t*>(static_cast<const char*>(area) + (p * stride + capacity) * row),
                experts_per_peer, counts + p * experts_per_peer);
  moe_ep_unpack(counts, n_peers, experts_per_peer, stride, local_counts, order);
}

void CpuBackend::moe_ep_return_peers(const void* results, const int64_t* counts, int64_t n_peers,
                                     int64_t experts_per_peer, int64_t capacity, int64_t stride, int64_t d,
                                     const EpPeers& peers, DType dtype) {
  check_ep_peers("moe_ep_return_peers", n_peers, experts_per_peer, capacity, stride, d);
  const std::size_t row = ep_result_row_bytes("moe_ep_return_peers", d, dtype);
  for (int64_t p = 0; p < n_peers; ++p) {
    int64_t rows = 0;
    for (int64_t e = 0; e < experts_per_peer; ++e) rows += std::max<int64_t>(counts[p * experts_per_peer + e], 0);
    std::memcpy(peers.blocks[p], static_cast<const char*>(results) + p * stride * row,
                static_cast<std::size_t>(std::min(rows, capacity)) * row);
  }
  for (int64_t p = 0; p < n_peers; ++p) *peers.flags[p] = *peers.seq;
}

// One process holds every rank here (the reference for the GPU's kernels): a flag short of
// *seq would never move.
void CpuBackend::moe_ep_wait(const int64_t* flags, int64_t n, const int64_t* seq) {
  for (int64_t p = 0; p < n; ++p)
    if (flags[p] < *seq)
      throw Error(fmt::format("moe_ep_wait: source {} at exchange {}, this rank at {}", p, flags[p], *seq));
}

void CpuBackend::moe_combine(const void* y, const int32_t* rows, const float* weights, int64_t n,
                             int64_t top_k, int64_t d, float* out, bool accumulate, DType y_dtype) {
  if (y_dtype != DType::f32 && y_dtype != DType::bf16)
    throw Error(fmt::format("moe_combine: {} results", dtype_name(y_dtype)));
  const bool bf16 = y_dtype == DType::bf16;
  std::vector<double> acc(d);
  for (int64_t t = 0; t < n; ++t) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t k = 0; k < top_k; ++k) {
      const int64_t s = t * top_k + k;
      const int64_t r = rows ? static_cast<int64_t>(rows[s]) : s;
      const double w = weights[t * top_k + k];
      if (bf16) {
        const uint16_t* yk = static_cast<const uint16_t*>(y) + r * d;
        for (int64_t c = 0; c < d; ++c) acc[c] += w * bf16_to_f32(yk[c]);
      } else {
        const float* yk = static_cast<const float*>(y) + r * d;
        for (int64_t c = 0; c < d; ++c) acc[c] += w * yk[c];
      }
    }
    float* o = out + t * d;
    for (int64_t c = 0; c < d; ++c) o[c] = (accumulate ? o[c] : 0.0f) + static_cast<float>(acc[c]);
  }
}

}  // namespace dpa::backend
