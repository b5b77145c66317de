// CUDA backend: MoE router, slot sort, token gather / scatter, grouped experts, combine.
#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#include "backend/cuda/cuda_backend_impl.h"
#include "core/error.h"
#include "kernels/batched_ops.cuh"
#include "kernels/convert.cuh"
#include "kernels/gather_scatter.cuh"
#include "kernels/moe_combine.cuh"
#include "kernels/moe_ep_layout.cuh"
#include "kernels/moe_expert_gemm.cuh"
#include "kernels/moe_expert_wgmma.cuh"
#include "kernels/moe_gate.cuh"
#include "kernels/moe_sort.cuh"

namespace dpa::backend {

namespace {

// The shape the batched expert GEMMs need every expert in `ids` to share: gate and up [I x D],
// down [D x I], one dtype, one stride each. Whether they do (filled from the first).
struct ExpertShape {
  int64_t D = 0, I = 0, lda_gu = 0, lda_d = 0;
  DType dt = DType::f32;
};
bool uniform_experts(const std::vector<int64_t>& ids, const WeightView* gate, const WeightView* up,
                     const WeightView* down, ExpertShape& s) {
  const WeightView& g0 = gate[ids[0]];
  s = ExpertShape{g0.cols, g0.rows, g0.ld, down[ids[0]].ld, g0.dtype};
  bool uniform = s.D > 0 && s.I > 0;
  for (int64_t e : ids) {
    const WeightView &g = gate[e], &u = up[e], &d = down[e];
    uniform = uniform && g.dtype == s.dt && u.dtype == s.dt && d.dtype == s.dt && g.rows == s.I &&
              g.cols == s.D && u.rows == s.I && u.cols == s.D && d.rows == s.D && d.cols == s.I &&
              g.ld == s.lda_gu && u.ld == s.lda_gu && d.ld == s.lda_d;
  }
  return uniform;
}

}  // namespace

float* CudaBackend::results_f32(int64_t floats) {
  const std::size_t need = static_cast<std::size_t>(std::max<int64_t>(floats, 1));
  if (results_f32_.size() < need) {
    not_capturing("a results buffer reallocation");
    ++workspace_epoch_;
    results_f32_.ensure(*this, need);
  }
  return results_f32_.data();
}

void CudaBackend::round_results(const float* f, const int32_t* order, const int64_t* counts, int64_t n_experts,
                                int64_t capacity, int64_t total, int64_t bound, int64_t rows, int64_t d, void* out) {
  // Only the rows the slots name, as the CPU reference writes them: out_rows may be an exchange's
  // whole area (the graph bound), most of it unused at a decode step.
  kernels::f32_rows_to_bf16(f, order, counts, n_experts, capacity, total, bound, rows, d, static_cast<uint16_t*>(out),
                            stream_);
  DPA_CHECK_LAUNCH();
}

const float* CudaBackend::rows_to_f32(const void* x, const int32_t* order, const int64_t* counts, int64_t n_experts,
                                      int64_t capacity, int64_t total, int64_t bound, int64_t rows, int64_t d) {
  const std::size_t need = static_cast<std::size_t>(std::max<int64_t>(rows * d, 1));
  if (rows_f32_.size() < need) {
    not_capturing("a rows buffer reallocation");
    ++workspace_epoch_;
    rows_f32_.ensure(*this, need);
  }
  // Only the rows in use (the padded blocks hold many more: at a large graph bound, converting
  // all of them cost more than the halved dispatch saves).
  kernels::bf16_rows_to_f32(static_cast<const uint16_t*>(x), order, counts, n_experts, capacity, total, bound, rows, d,
                            rows_f32_.data(), stream_);
  DPA_CHECK_LAUNCH();
  return rows_f32_.data();
}

void CudaBackend::moe_experts(const void* x_any, const int32_t* order, int64_t x_div, const int64_t* counts,
                              int64_t n_experts, const WeightView* gate, const WeightView* up,
                              const WeightView* down, void* out_any, DType out_dtype, int64_t out_rows,
                              DType x_dtype) {
  if (n_experts <= 0) return;
  if (x_div < 1) throw Error(fmt::format("moe_experts: row divisor {}", x_div));
  if (out_dtype != DType::f32 && out_dtype != DType::bf16)
    throw Error(fmt::format("moe_experts: {} results", dtype_name(out_dtype)));
  check_expert_rows("moe_experts", x_dtype, x_div, out_rows);
  const bool x_bf16 = x_dtype == DType::bf16;
  std::vector<int64_t> start(n_experts), ids;
  int64_t total = 0;
  for (int64_t e = 0; e < n_experts; ++e) {
    if (counts[e] < 0) throw Error(fmt::format("moe_experts: count {} of expert {}", counts[e], e));
    start[e] = total;
    total += counts[e];
    if (counts[e] > 0) ids.push_back(e);
  }
  if (total == 0) return;
  ExpertShape shape;
  const bool uniform = uniform_experts(ids, gate, up, down, shape) && supports_weight(shape.dt);
  const int64_t D = shape.D, I = shape.I, lda_gu = shape.lda_gu, lda_d = shape.lda_d;
  const DType dt = shape.dt;
  // The warpgroup-MMA kernels read bf16 rows as they are and round bf16 results as they write them.
  if ((x_bf16 || out_dtype == DType::bf16) && uniform && dt == DType::bf16 &&
      moe_experts_wgmma(x_any, x_bf16, order, x_div, counts, n_experts, total,
                        check_expert_weights(ids, n_experts, gate, up, down), gate, up, down, out_any,
                        out_dtype == DType::bf16))
    return;
  // Every other form reads f32 rows (bf16 ones converted first) ...
  if (x_bf16)
    return moe_experts(rows_to_f32(x_any, order, nullptr, n_experts, 0, total, total, out_rows, gate[0].cols), order,
                       1, counts, n_experts, gate, up, down, out_any, out_dtype, out_rows, DType::f32);
  const float* x = static_cast<const float*>(x_any);
  // ... and writes f32 results, the rows in use of them then rounded for bf16.
  if (out_dtype == DType::bf16) {
    if (out_rows <= 0) throw Error(fmt::format("moe_experts: {} bf16 result rows", out_rows));
    float* f = results_f32(out_rows * down[0].rows);
    moe_experts(x, order, x_div, counts, n_experts, gate, up, down, f, DType::f32, out_rows, DType::f32);
    return round_results(f, order, nullptr, n_experts, 0, total, total, out_rows, down[0].rows, out_any);
  }
  float* out = static_cast<float*>(out_any);
  if (!uniform)  // experts of mixed shapes or dtypes: one at a time through the plain ops
    return moe_experts_per_expert(*this, x, order, x_div, counts, n_experts, gate, up, down, out,
                                  [&](std::size_t floats) {
                                    return reinterpret_cast<float*>(moe_workspace(floats * sizeof(float)));
                                  });
  const uint64_t digest = check_expert_weights(ids, n_experts, gate, up, down);  // of every expert, not only ids
  if (dt == DType::bf16 &&
      moe_experts_wgmma(x, false, order, x_div, counts, n_experts, total, digest, gate, up, down, out, false))
    return;

  // Groups over the experts sorted by descending count, each padded to its largest. A group
  // whose largest is at most kWeightBoundRows takes every expert after it: below about that many
  // rows an expert's GEMMs stream its weights (bf16 on H200: ~200 FLOP per byte at the ridge), so
  // padded rows cost little and one call beats several with their tails (decode steps, one H200:
  // the experts 11.4 -> 10.7 ms per step); above it padding is compute, so counts far apart split.
  constexpr int64_t kWeightBoundRows = 128;
  std::stable_sort(ids.begin(), ids.end(), [&](int64_t a, int64_t b) { return counts[a] > counts[b]; });
  struct Group { std::size_t first, size; int64_t rows; };
  std::vector<Group> groups;
  std::vector<int64_t> poff(ids.size());
  int64_t P = 0;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const int64_t c = counts[ids[i]];
    const int64_t top = groups.empty() ? 0 : groups.back().rows;
    if (groups.empty() || (top > kWeightBoundRows && c * 5 < top * 4 && top - c > 16))
      groups.push_back(Group{i, 0, c});
    poff[i] = P;
    P += groups.back().rows;
    ++groups.back().size;
  }
  const std::size_t ne = ids.size();
  const bool bf16 = dt == DType::bf16;
  const std::size_t es = bf16 ? 2 : 4;
  const int64_t ldx = (D + 7) / 8 * 8, ldi = (I + 7) / 8 * 8;  // 16-byte aligned rows
  auto al = [](std::size_t b) { return (b + 255) / 256 * 256; };
  const std::size_t ptr_bytes = al(9 * ne * sizeof(void*)), pos_bytes = al(P * sizeof(int32_t));
  const std::size_t xb_bytes = al(P * ldx * es), gu_bytes = al(P * ldi * sizeof(float)),
                    h_bytes = al(P * ldi * es), y_bytes = al(P * ldx * sizeof(float));
  char* ws = moe_workspace(ptr_bytes + pos_bytes + xb_bytes + 2 * gu_bytes + h_bytes + y_bytes);
  void** ptrs = reinterpret_cast<void**>(ws);
  int32_t* pos = reinterpret_cast<int32_t*>(ws + ptr_bytes);
  char* xb = ws + ptr_bytes + pos_bytes;
  float* g = reinterpret_cast<float*>(xb + xb_bytes);
  float* u = reinterpret_cast<float*>(xb + xb_bytes + gu_bytes);
  char* h = xb + xb_bytes + 2 * gu_bytes;
  float* yb = reinterpret_cast<float*>(h + h_bytes);

  // Host staging: pointer arrays (per group: gate pointers then up pointers), then the row map.
  staging_.assign(ptr_bytes + P * sizeof(int32_t), 0);
  void** a_gu = reinterpret_cast<void**>(staging_.data());
  void** b_gu = a_gu + 2 * ne;
  void** c_gu = b_gu + 2 * ne;
  void** a_d = c_gu + 2 * ne;
  void** b_d = a_d + ne;
  void** c_d = b_d + ne;
  int32_t* pos_h = reinterpret_cast<int32_t*>(staging_.data() + ptr_bytes);
  for (const Group& gr : groups)
    for (std::size_t k = 0; k < gr.size; ++k) {
      const std::size_t i = gr.first + k;
      const int64_t e = ids[i], r0 = poff[i];
      a_gu[2 * gr.first + k] = const_cast<void*>(gate[e].data);
      a_gu[2 * gr.first + gr.size + k] = const_cast<void*>(up[e].data);
      b_gu[2 * gr.first + k] = b_gu[2 * gr.first + gr.size + k] = xb + r0 * ldx * es;
      c_gu[2 * gr.first + k] = g + r0 * ldi;
      c_gu[2 * gr.first + gr.size + k] = u + r0 * ldi;
      a_d[i] = const_cast<void*>(down[e].data);
      b_d[i] = h + r0 * ldi * es;
      c_d[i] = yb + r0 * ldx;
      for (int64_t r = 0; r < gr.rows; ++r)
        pos_h[r0 + r] = r < counts[e] ? static_cast<int32_t>(start[e] + r) : -1;
    }
  upload(ws, staging_.data(), staging_.size());

  kernels::moe_gather_pad(x, order, x_div, pos, P, D, ldx, bf16, xb, stream_);
  DPA_CHECK_LAUNCH();
  const cudaDataType_t ab = bf16 ? CUDA_R_16BF : CUDA_R_32F;
  const float one = 1.0f, zero = 0.0f;
  const int iD = to_int(D, "moe D"), iI = to_int(I, "moe I");
  for (const Group& gr : groups)
    DPA_CHECK_CUBLAS(cublasGemmBatchedEx(
        cublas_, CUBLAS_OP_T, CUBLAS_OP_N, iI, to_int(gr.rows, "moe rows"), iD, &one,
        const_cast<const void**>(ptrs + 2 * gr.first), ab, to_int(lda_gu, "moe ld"),
        const_cast<const void**>(ptrs + 2 * ne + 2 * gr.first), ab, to_int(ldx, "moe ldx"),
        &zero, ptrs + 4 * ne + 2 * gr.first, CUDA_R_32F, to_int(ldi, "moe ldi"),
        to_int(2 * gr.size, "moe batch"), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  kernels::moe_silu_mul(g, u, P * ldi, bf16, h, stream_);
  DPA_CHECK_LAUNCH();
  for (const Group& gr : groups)
    DPA_CHECK_CUBLAS(cublasGemmBatchedEx(
        cublas_, CUBLAS_OP_T, CUBLAS_OP_N, iD, to_int(gr.rows, "moe rows"), iI, &one,
        const_cast<const void**>(ptrs + 6 * ne + gr.first), ab, to_int(lda_d, "moe ld"),
        const_cast<const void**>(ptrs + 7 * ne + gr.first), ab, to_int(ldi, "moe ldi"), &zero,
        ptrs + 8 * ne + gr.first, CUDA_R_32F, to_int(ldx, "moe ldx"),
        to_int(gr.size, "moe batch"), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  kernels::moe_scatter_pad(yb, ldx, order, pos, P, D, out, stream_);
  DPA_CHECK_LAUNCH();
}

const void* CudaBackend::wgmma_expert_maps(int64_t n_experts, const WeightView* gate, const WeightView* up,
                                           const WeightView* down, uint64_t digest) {
  // The digest covers every view's pointer, dtype, shape and stride: whether the kernels take
  // the experts is worked out once per weight set, not in every layer of every step.
  auto [it, fresh] = expert_maps_.try_emplace(digest, nullptr);
  if (!fresh) return it->second;
  std::vector<int64_t> all(static_cast<std::size_t>(n_experts));
  std::iota(all.begin(), all.end(), int64_t{0});
  ExpertShape s;
  if (n_experts <= 0 || n_experts > 4096 || !uniform_experts(all, gate, up, down, s) || s.dt != DType::bf16 ||
      !kernels::expert_wgmma_supported(s.D, s.I, s.lda_gu, s.lda_d))
    return nullptr;
  for (int64_t e = 0; e < n_experts; ++e)
    for (const WeightView* w : {gate + e, up + e, down + e})
      if (reinterpret_cast<std::uintptr_t>(w->data) % 16 != 0) return nullptr;
  not_capturing("an expert tensor-map upload");
  const std::size_t ne = static_cast<std::size_t>(n_experts);
  std::vector<const void*> g(ne), u(ne), d(ne);
  for (std::size_t e = 0; e < ne; ++e) g[e] = gate[e].data, u[e] = up[e].data, d[e] = down[e].data;
  const std::size_t bytes = kernels::kExpertMapsPerExpert * ne * kernels::kTensorMapBytes;
  std::vector<uint64_t> maps(bytes / sizeof(uint64_t) + 8);
  void* m = reinterpret_cast<void*>((reinterpret_cast<std::uintptr_t>(maps.data()) + 63) & ~std::uintptr_t{63});
  if (kernels::encode_expert_maps(g.data(), u.data(), d.data(), n_experts, s.D, s.I, s.lda_gu, s.lda_d, m)) {
    it->second = alloc(bytes);
    DPA_CHECK_CUDA(cudaMemcpy(it->second, m, bytes, cudaMemcpyHostToDevice));
  }
  return it->second;
}

bool CudaBackend::wgmma_experts_wanted(int64_t rows, int64_t experts) const {
  return expert_wgmma_ == ExpertWgmma::always ||
         (expert_wgmma_ == ExpertWgmma::automatic && rows >= kWgmmaExpertMinRows * experts);
}

void CudaBackend::wgmma_experts_planned(const void* x, bool x_bf16, const int32_t* order, int64_t x_div,
                                        const int64_t* counts,
                                        bool host_counts, int64_t n_experts, int64_t capacity, int64_t max_tiles,
                                        int64_t max_rows, int64_t rows, const void* maps, int64_t D, int64_t I,
                                        void* out, bool out_bf16) {
  const int64_t ldx = (D + 7) / 8 * 8, ldi = (I + 7) / 8 * 8;
  auto al = [](std::size_t b) { return (b + 255) / 256 * 256; };
  const std::size_t counts_bytes = host_counts ? al(static_cast<std::size_t>(n_experts) * sizeof(int64_t)) : 0;
  const std::size_t tile_bytes = al(static_cast<std::size_t>(max_tiles) * sizeof(kernels::ExpertTile) + 256);
  const std::size_t xb_bytes = al(static_cast<std::size_t>(max_rows * ldx) * 2);
  char* ws = moe_workspace(counts_bytes + tile_bytes + xb_bytes + static_cast<std::size_t>(max_rows * ldi) * 2);
  const int64_t* d_counts = counts;
  if (host_counts) {
    upload(ws, counts, static_cast<std::size_t>(n_experts) * sizeof(int64_t));
    d_counts = reinterpret_cast<const int64_t*>(ws);
  }
  char* p = ws + counts_bytes;
  auto* plan = reinterpret_cast<int32_t*>(p);
  auto* tiles = reinterpret_cast<kernels::ExpertTile*>(p + 256);
  auto* xb = reinterpret_cast<uint16_t*>(p + tile_bytes);
  auto* h = reinterpret_cast<uint16_t*>(p + tile_bytes + xb_bytes);

  kernels::ExpertWgmmaArgs a;
  a.maps = maps, a.tiles = tiles, a.plan = plan, a.n_tiles = max_tiles;
  a.n_experts = n_experts, a.D = D, a.I = I;
  // Narrow blocks where the launch streams weights: at most a tile's rows an expert on average
  // (`rows` is the rows in use, or their bound).
  a.narrow = expert_blocks_ == ExpertBlocks::narrow ||
             (expert_blocks_ == ExpertBlocks::automatic && rows <= kernels::kExpertWgmmaRows * n_experts);
  kernels::moe_wgmma_plan(d_counts, n_experts, capacity, tiles, plan, stream_);
  DPA_CHECK_LAUNCH();
  if (x_bf16)
    kernels::moe_wgmma_gather_bf16(static_cast<const uint16_t*>(x), order, x_div, plan, max_rows, D, ldx, xb, stream_);
  else
    kernels::moe_wgmma_gather(static_cast<const float*>(x), order, x_div, plan, max_rows, D, ldx, xb, stream_);
  DPA_CHECK_LAUNCH();
  if (!kernels::moe_wgmma_gate_up(xb, max_rows, ldx, a, h, ldi, stream_))
    throw Error("moe_experts: the driver refused the activations' tensor map");
  DPA_CHECK_LAUNCH();
  if (!kernels::moe_wgmma_down(h, max_rows, ldi, order, a, out, out_bf16, stream_))
    throw Error("moe_experts: the driver refused the SwiGLU rows' tensor map");
  DPA_CHECK_LAUNCH();
}

bool CudaBackend::moe_experts_wgmma(const void* x, bool x_bf16, const int32_t* order, int64_t x_div,
                                    const int64_t* counts,
                                    int64_t n_experts, int64_t total, uint64_t digest, const WeightView* gate,
                                    const WeightView* up, const WeightView* down, void* out, bool out_bf16) {
  int64_t active = 0;
  for (int64_t e = 0; e < n_experts; ++e) active += counts[e] > 0;
  if (!wgmma_experts_wanted(total, active) || total > INT32_MAX ||
      reinterpret_cast<std::uintptr_t>(out) % (out_bf16 ? 4 : 8) != 0)
    return false;
  const void* maps = wgmma_expert_maps(n_experts, gate, up, down, digest);
  if (!maps) return false;
  // The compact sorted rows, no padding: an expert adds at most one partial tile.
  wgmma_experts_planned(x, x_bf16, order, x_div, counts, true, n_experts, total,
                        total / kernels::kExpertWgmmaRows + active, total, total, maps, gate[0].cols, gate[0].rows,
                        out, out_bf16);
  return true;
}

bool CudaBackend::moe_experts_fixed_wgmma(const void* x, bool x_bf16, const int32_t* order, int64_t x_div,
                                          const int64_t* counts, int64_t n_experts, int64_t capacity,
                                          int64_t rows, uint64_t digest, const WeightView* gate,
                                          const WeightView* up, const WeightView* down, void* out, bool out_bf16) {
  const int64_t R = n_experts * capacity;  // the rows' bound
  if (!wgmma_experts_wanted(rows, n_experts) || R > INT32_MAX ||
      reinterpret_cast<std::uintptr_t>(out) % (out_bf16 ? 4 : 8) != 0)
    return false;
  const void* maps = wgmma_expert_maps(n_experts, gate, up, down, digest);
  if (!maps) return false;
  const int64_t per_expert = (capacity + kernels::kExpertWgmmaRows - 1) / kernels::kExpertWgmmaRows;
  wgmma_experts_planned(x, x_bf16, order, x_div, counts, false, n_experts, capacity, n_experts * per_expert, R, rows,
                        maps,
                        gate[0].cols, gate[0].rows, out, out_bf16);
  return true;
}

void CudaBackend::moe_experts_fixed(const void* x_any, const int32_t* order, int64_t x_div, const int64_t* counts,
                                    int64_t n_experts, int64_t capacity, int64_t rows, const WeightView* gate,
                                    const WeightView* up, const WeightView* down, void* out_any, DType out_dtype,
                                    int64_t out_rows, DType x_dtype) {
  if (n_experts <= 0) return;
  if (capacity <= 0) throw Error(fmt::format("moe_experts_fixed: capacity {}", capacity));
  if (x_div < 1) throw Error(fmt::format("moe_experts_fixed: row divisor {}", x_div));
  if (out_dtype != DType::f32 && out_dtype != DType::bf16)
    throw Error(fmt::format("moe_experts_fixed: {} results", dtype_name(out_dtype)));
  check_expert_rows("moe_experts_fixed", x_dtype, x_div, out_rows);
  const bool x_bf16 = x_dtype == DType::bf16;
  std::vector<int64_t> all(static_cast<std::size_t>(n_experts));
  std::iota(all.begin(), all.end(), int64_t{0});
  ExpertShape shape;
  const bool uniform = uniform_experts(all, gate, up, down, shape) && supports_weight(shape.dt);
  const int64_t D = shape.D, I = shape.I, lda_gu = shape.lda_gu, lda_d = shape.lda_d;
  const DType dt = shape.dt;
  // The experts' arrays checked once (their digest keys the kernels' per-array state).
  const uint64_t digest = uniform ? check_expert_weights(all, n_experts, gate, up, down) : 0;
  // The warpgroup-MMA kernels read bf16 rows as they are and round bf16 results as they write them.
  if ((x_bf16 || out_dtype == DType::bf16) && uniform && dt == DType::bf16 &&
      moe_experts_fixed_wgmma(x_any, x_bf16, order, x_div, counts, n_experts, capacity, rows, digest, gate, up, down,
                              out_any, out_dtype == DType::bf16))
    return;
  // bf16 experts on tensor cores, the counts read where they are: blocks of an expert past its
  // rows leave at once, so padding costs nothing and an expert without rows reads no weights. They
  // read bf16 rows and write bf16 results as they are (no conversion passes).
  auto tensor_cores = [&](const void* xp, bool xb, void* op, bool ob) {
    if (!uniform || dt != DType::bf16 || !kernels::expert_gemm_supported(D, I, lda_gu, lda_d) ||
        reinterpret_cast<std::uintptr_t>(xp) % 16 != 0 || reinterpret_cast<std::uintptr_t>(op) % (ob ? 4 : 8) != 0)
      return false;
    const std::size_t ne = static_cast<std::size_t>(n_experts);
    ExpertPointers& ep = expert_ptrs_[digest];
    if (!ep.dev) {
      not_capturing("an expert pointer upload");
      std::vector<void*> hp(3 * ne);
      ep.aligned = true;
      for (std::size_t e = 0; e < ne; ++e) {
        hp[e] = const_cast<void*>(gate[e].data), hp[ne + e] = const_cast<void*>(up[e].data);
        hp[2 * ne + e] = const_cast<void*>(down[e].data);
        for (std::size_t k = 0; k < 3; ++k) ep.aligned = ep.aligned && reinterpret_cast<std::uintptr_t>(hp[k * ne + e]) % 16 == 0;
      }
      ep.dev = static_cast<void**>(alloc(hp.size() * sizeof(void*)));
      DPA_CHECK_CUDA(cudaMemcpy(ep.dev, hp.data(), hp.size() * sizeof(void*), cudaMemcpyHostToDevice));
    }
    if (!ep.aligned) return false;
    kernels::ExpertGemmArgs a;
    a.gate = ep.dev, a.up = ep.dev + ne, a.down = ep.dev + 2 * ne;
    a.ld_gu = lda_gu, a.ld_down = lda_d, a.counts = counts;
    a.n_experts = n_experts, a.capacity = capacity, a.D = D, a.I = I, a.rows = std::max<int64_t>(rows, 0);
    a.x_div = x_div;
    const int64_t ldi = (I + 7) / 8 * 8;
    auto* hb = reinterpret_cast<uint16_t*>(moe_workspace(static_cast<std::size_t>(n_experts * capacity * ldi) * 2));
    kernels::moe_gate_up_silu(xp, xb, order, a, hb, ldi, stream_);
    DPA_CHECK_LAUNCH();
    kernels::moe_down(hb, ldi, order, a, op, ob, stream_);
    DPA_CHECK_LAUNCH();
    return true;
  };
  if ((x_bf16 || out_dtype == DType::bf16) && tensor_cores(x_any, x_bf16, out_any, out_dtype == DType::bf16)) return;
  // Every other form reads f32 rows (bf16 ones converted first) ...
  if (x_bf16)
    return moe_experts_fixed(
        rows_to_f32(x_any, order, counts, n_experts, capacity, 0, n_experts * capacity, out_rows, gate[0].cols), order,
        1, counts, n_experts, capacity, rows, gate, up, down, out_any, out_dtype, out_rows, DType::f32);
  const float* x = static_cast<const float*>(x_any);
  // ... and writes f32 results, the rows in use of them then rounded for bf16.
  if (out_dtype == DType::bf16) {
    if (out_rows <= 0) throw Error(fmt::format("moe_experts_fixed: {} bf16 result rows", out_rows));
    float* f = results_f32(out_rows * down[0].rows);
    moe_experts_fixed(x, order, x_div, counts, n_experts, capacity, rows, gate, up, down, f, DType::f32, out_rows,
                      DType::f32);
    return round_results(f, order, counts, n_experts, capacity, 0, n_experts * capacity, out_rows, down[0].rows,
                         out_any);
  }
  float* out = static_cast<float*>(out_any);
  if (!uniform) {  // experts of mixed shapes or dtypes: the counts to the host (a wait), then the grouped path
    std::vector<int64_t> h(static_cast<std::size_t>(n_experts));
    download(h.data(), counts, h.size() * sizeof(int64_t));
    return moe_experts(x, order, x_div, h.data(), n_experts, gate, up, down, out, DType::f32, 0, DType::f32);
  }

  const int64_t C = capacity, R = n_experts * C;  // every expert padded to C rows
  const bool bf16 = dt == DType::bf16;
  const std::size_t es = bf16 ? 2 : 4;
  const int64_t ldx = (D + 7) / 8 * 8, ldi = (I + 7) / 8 * 8;
  const std::size_t ne = static_cast<std::size_t>(n_experts);

  if (bf16 &&
      moe_experts_fixed_wgmma(x, false, order, x_div, counts, n_experts, C, rows, digest, gate, up, down, out, false))
    return;
  if (bf16 && tensor_cores(x, false, out, false)) return;
  auto al = [](std::size_t b) { return (b + 255) / 256 * 256; };
  const std::size_t pos_bytes = al(R * sizeof(int32_t)), xb_bytes = al(R * ldx * es),
                    gu_bytes = al(R * ldi * sizeof(float)), h_bytes = al(R * ldi * es);
  char* ws = moe_workspace(pos_bytes + xb_bytes + 2 * gu_bytes + h_bytes + al(R * ldx * sizeof(float)));
  int32_t* pos = reinterpret_cast<int32_t*>(ws);
  char* xb = ws + pos_bytes;
  float* g = reinterpret_cast<float*>(xb + xb_bytes);
  float* u = reinterpret_cast<float*>(xb + xb_bytes + gu_bytes);
  char* h = xb + xb_bytes + 2 * gu_bytes;
  float* yb = reinterpret_cast<float*>(h + h_bytes);

  // Pointer arrays: gate then up (A), the padded rows twice (B), gate then up outputs (C); then
  // down (A), SwiGLU rows (B), outputs (C). Fixed by the experts (their digest), C and the
  // workspace: built once.
  void**& ptrs = fixed_ptrs_[std::make_tuple(digest, C, static_cast<const void*>(ws))];
  if (!ptrs) {
    not_capturing("an expert pointer upload");
    std::vector<void*> hp(9 * ne);
    for (std::size_t e = 0; e < ne; ++e) {
      const int64_t r0 = static_cast<int64_t>(e) * C;
      hp[e] = const_cast<void*>(gate[e].data);
      hp[ne + e] = const_cast<void*>(up[e].data);
      hp[2 * ne + e] = hp[3 * ne + e] = xb + r0 * ldx * es;
      hp[4 * ne + e] = g + r0 * ldi;
      hp[5 * ne + e] = u + r0 * ldi;
      hp[6 * ne + e] = const_cast<void*>(down[e].data);
      hp[7 * ne + e] = h + r0 * ldi * es;
      hp[8 * ne + e] = yb + r0 * ldx;
    }
    ptrs = static_cast<void**>(alloc(hp.size() * sizeof(void*)));
    DPA_CHECK_CUDA(cudaMemcpy(ptrs, hp.data(), hp.size() * sizeof(void*), cudaMemcpyHostToDevice));
  }

  kernels::moe_fixed_positions(counts, n_experts, C, pos, stream_);
  DPA_CHECK_LAUNCH();
  kernels::moe_gather_pad(x, order, x_div, pos, R, D, ldx, bf16, xb, stream_);
  DPA_CHECK_LAUNCH();
  const cudaDataType_t ab = bf16 ? CUDA_R_16BF : CUDA_R_32F;
  const float one = 1.0f, zero = 0.0f;
  const int iD = to_int(D, "moe D"), iI = to_int(I, "moe I"), iC = to_int(C, "moe capacity");
  DPA_CHECK_CUBLAS(cublasGemmBatchedEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, iI, iC, iD, &one,
                                       const_cast<const void**>(ptrs), ab, to_int(lda_gu, "moe ld"),
                                       const_cast<const void**>(ptrs + 2 * ne), ab, to_int(ldx, "moe ldx"), &zero,
                                       ptrs + 4 * ne, CUDA_R_32F, to_int(ldi, "moe ldi"),
                                       to_int(2 * n_experts, "moe batch"), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  kernels::moe_silu_mul(g, u, R * ldi, bf16, h, stream_);
  DPA_CHECK_LAUNCH();
  DPA_CHECK_CUBLAS(cublasGemmBatchedEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, iD, iC, iI, &one,
                                       const_cast<const void**>(ptrs + 6 * ne), ab, to_int(lda_d, "moe ld"),
                                       const_cast<const void**>(ptrs + 7 * ne), ab, to_int(ldi, "moe ldi"), &zero,
                                       ptrs + 8 * ne, CUDA_R_32F, to_int(ldx, "moe ldx"),
                                       to_int(n_experts, "moe batch"), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  kernels::moe_scatter_pad(yb, ldx, order, pos, R, D, out, stream_);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::moe_counts_to(int64_t* dst) {
  if (!counts_pending_) throw Error("moe_counts_to: no moe_sort before it");
  const std::size_t bytes = static_cast<std::size_t>(counts_n_) * sizeof(int64_t);
  if (!bytes) return;
  if (counts_zero_) DPA_CHECK_CUDA(cudaMemsetAsync(dst, 0, bytes, stream_));
  else DPA_CHECK_CUDA(cudaMemcpyAsync(dst, counts_dev_, bytes, cudaMemcpyDeviceToDevice, stream_));
}

void CudaBackend::moe_gate(const float* logits, int64_t n, const GateParams& p, int32_t* ids,
                           float* weights) {
  const int64_t E = p.n_experts;
  // The same parameter checks, with the same messages, as the CPU reference.
  if (p.top_k <= 0 || p.top_k > E)
    throw Error(fmt::format("moe gate: top_k {} of {} experts", p.top_k, E));
  if (p.shared_slots < 0) throw Error(fmt::format("moe gate: {} shared slots", p.shared_slots));
  const bool grouped = p.n_group > 1 && p.method != TopkMethod::greedy;
  if (grouped && (E % p.n_group != 0 || p.topk_group <= 0 || p.topk_group > p.n_group))
    throw Error(fmt::format("moe gate: {} experts in {} groups, topk_group {}", E, p.n_group,
                            p.topk_group));
  if (n <= 0) return;
  kernels::GateArgs a;
  a.n_experts = E;
  a.top_k = p.top_k;
  a.n_group = p.n_group;
  a.topk_group = p.topk_group;
  a.sigmoid = p.scoring == Scoring::sigmoid;
  a.grouped = grouped;
  a.noaux_tc = p.method == TopkMethod::noaux_tc;
  a.norm_topk_prob = p.norm_topk_prob;
  a.routed_scaling_factor = p.routed_scaling_factor;
  a.correction_bias = p.correction_bias;
  a.shared_slots = p.shared_slots;
  kernels::moe_gate(logits, n, a, ids, weights, stream_);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::moe_sort(const int32_t* ids, int64_t n_slots, int64_t n_experts, int32_t* order,
                           int32_t* position) {
  counts_pending_ = false;
  const std::size_t need = static_cast<std::size_t>(std::max<int64_t>(n_experts, 0) + 1);
  if (need > counts_elems_) {
    not_capturing("a workspace reallocation");
    ++workspace_epoch_;
    if (counts_dev_) DPA_CHECK_CUDA(cudaFree(counts_dev_));
    if (counts_pinned_) DPA_CHECK_CUDA(cudaFreeHost(counts_pinned_));
    counts_dev_ = nullptr, counts_pinned_ = nullptr, counts_elems_ = 0;
    counts_dev_ = static_cast<int64_t*>(alloc(need * sizeof(int64_t)));
    DPA_CHECK_CUDA(cudaMallocHost(reinterpret_cast<void**>(&counts_pinned_), need * sizeof(int64_t)));
    counts_elems_ = need;
  }
  if (!counts_ready_) DPA_CHECK_CUDA(cudaEventCreateWithFlags(&counts_ready_, cudaEventDisableTiming));
  counts_n_ = std::max<int64_t>(n_experts, 0);
  counts_zero_ = n_slots <= 0 || n_experts <= 0;
  if (!counts_zero_) {
    // Many slots (prefill): the sort's wide form, its counters in the scratch (never while
    // recording: a decode step's slots take the one-block form anyway).
    const int64_t ws = capturing_ ? 0 : kernels::moe_sort_workspace_ints(n_slots, n_experts);
    kernels::moe_sort(ids, n_slots, n_experts, order, position, counts_dev_,
                      ws > 0 ? reinterpret_cast<int*>(scratch(ws)) : nullptr, ws, stream_);
    DPA_CHECK_LAUNCH();
    if (!capturing_) {  // a recorded step keeps its counts on the device (moe_counts_to)
      DPA_CHECK_CUDA(cudaMemcpyAsync(counts_pinned_, counts_dev_, need * sizeof(int64_t), cudaMemcpyDeviceToHost, stream_));
      DPA_CHECK_CUDA(cudaEventRecord(counts_ready_, stream_));
    }
  }
  counts_pending_ = true;
}

void CudaBackend::moe_counts(int64_t* counts) {
  if (!counts_pending_) throw Error("moe_counts: no moe_sort before it");
  counts_pending_ = false;
  const std::size_t bytes = static_cast<std::size_t>(counts_n_) * sizeof(int64_t);
  if (counts_zero_) {
    if (bytes) std::memset(counts, 0, bytes);
    return;
  }
  not_capturing("moe_counts");
  DPA_CHECK_CUDA(cudaEventSynchronize(counts_ready_));
  if (counts_pinned_[counts_n_]) throw Error(fmt::format("moe sort: expert id outside [0, {})", counts_n_));
  std::memcpy(counts, counts_pinned_, bytes);
}

void CudaBackend::gather_rows(const float* x, const int32_t* rows, int64_t n, int64_t d, float* out) {
  if (n <= 0 || d <= 0) return;
  kernels::gather_rows(x, rows, 1, n, d, out, false, stream_);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::gather_rows_div(const float* x, const int32_t* rows, int64_t div, int64_t n, int64_t d,
                                  void* out, DType out_dtype) {
  ep_row_bytes("gather_rows_div", d, out_dtype);
  if (n <= 0 || d <= 0) return;
  if (div <= 0) throw Error(fmt::format("cuda backend gather_rows_div: divisor {}", div));
  kernels::gather_rows(x, rows, div, n, d, out, out_dtype == DType::bf16, stream_);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::scatter_rows(const float* x, const int32_t* rows, int64_t n, int64_t d,
                               float* out) {
  if (n <= 0 || d <= 0) return;
  kernels::scatter_rows(x, rows, n, d, out, stream_);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::moe_ep_pack(const float* x, const int32_t* order, int64_t x_div, const int64_t* counts,
                              int64_t n_peers, int64_t experts_per_peer, int64_t capacity, int64_t n_slots, int64_t d,
                              void* send, int32_t* slot_row, DType send_dtype) {
  check_ep_layout("moe_ep_pack", n_peers, experts_per_peer, capacity, x_div);
  ep_row_bytes("moe_ep_pack", d, send_dtype);
  if (n_slots > 0 && capacity == 0) throw Error(fmt::format("moe_ep_pack: {} slots, capacity 0", n_slots));
  if (n_peers * experts_per_peer > kernels::kEpLayoutMaxExperts)
    throw Error(fmt::format("moe_ep_pack: {} experts, at most {}", n_peers * experts_per_peer,
                            kernels::kEpLayoutMaxExperts));
  kernels::moe_ep_pack(x, order, x_div, counts, n_peers, experts_per_peer, capacity, n_slots, d, send, slot_row,
                       send_dtype == DType::bf16, stream_);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::moe_ep_unpack(const int64_t* counts, int64_t n_peers, int64_t n_local, int64_t capacity,
                                int64_t* local_counts, int32_t* order) {
  check_ep_layout("moe_ep_unpack", n_peers, n_local, capacity, 1);
  if (n_peers * n_local > kernels::kEpLayoutMaxExperts)
    throw Error(fmt::format("moe_ep_unpack: {} experts, at most {}", n_peers * n_local, kernels::kEpLayoutMaxExperts));
  kernels::moe_ep_unpack(counts, n_peers, n_local, capacity, local_counts, order, stream_);
  DPA_CHECK_LAUNCH();
}

namespace {
kernels::EpPeers kernel_peers(const EpPeers& p) {
  kernels::EpPeers k;
  k.blocks = p.blocks, k.flags = p.flags, k.seq = p.seq, k.done = p.done;
  return k;
}
}  // namespace

void CudaBackend::moe_ep_pack_peers(const float* x, const int32_t* order, int64_t x_div, const int64_t* counts,
                                    int64_t n_peers, int64_t experts_per_peer, int64_t capacity, int64_t stride,
                                    int64_t n_slots, int64_t d, const EpPeers& peers, int32_t* slot_row,
                                    DType rows_dtype) {
  check_ep_peers("moe_ep_pack_peers", n_peers, experts_per_peer, capacity, stride, d, rows_dtype);
  check_ep_layout("moe_ep_pack_peers", n_peers, experts_per_peer, capacity, x_div);
  if (n_slots > 0 && capacity == 0) throw Error(fmt::format("moe_ep_pack_peers: {} slots, capacity 0", n_slots));
  kernels::moe_ep_pack_peers(x, order, x_div, counts, n_peers, experts_per_peer, capacity, stride, n_slots, d,
                             kernel_peers(peers), slot_row, rows_dtype == DType::bf16, stream_);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::moe_ep_unpack_peers(const void* area, const int64_t* flags, const int64_t* seq, int64_t n_peers,
                                      int64_t experts_per_peer, int64_t capacity, int64_t stride, int64_t d,
                                      int64_t* counts, int64_t* local_counts, int32_t* order, DType rows_dtype) {
  const auto row_bytes =
      static_cast<int64_t>(check_ep_peers("moe_ep_unpack_peers", n_peers, experts_per_peer, capacity, stride, d,
                                          rows_dtype));
  if (n_peers * experts_per_peer > kernels::kEpLayoutMaxExperts)
    throw Error(fmt::format("moe_ep_unpack_peers: {} experts, at most {}", n_peers * experts_per_peer,
                            kernels::kEpLayoutMaxExperts));
  kernels::moe_ep_unpack_peers(area, flags, seq, n_peers, experts_per_peer, capacity, stride, row_bytes, counts,
                               local_counts, order, stream_);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::moe_ep_return_peers(const void* results, const int64_t* counts, int64_t n_peers,
                                      int64_t experts_per_peer, int64_t capacity, int64_t stride, int64_t d,
                                      const EpPeers& peers, DType dtype) {
  check_ep_peers("moe_ep_return_peers", n_peers, experts_per_peer, capacity, stride, d);
  // The kernel moves rows of 4-byte words: a bf16 row of d values is d / 2 of them (d even).
  const int64_t words = static_cast<int64_t>(ep_result_row_bytes("moe_ep_return_peers", d, dtype) / sizeof(float));
  kernels::moe_ep_return_peers(static_cast<const float*>(results), counts, n_peers, experts_per_peer, capacity,
                               stride, words, kernel_peers(peers), stream_);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::moe_ep_wait(const int64_t* flags, int64_t n, const int64_t* seq) {
  kernels::moe_ep_wait(flags, n, seq, stream_);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::moe_combine(const void* y, const int32_t* rows, const float* weights, int64_t n,
                              int64_t top_k, int64_t d, float* out, bool accumulate, DType y_dtype) {
  if (y_dtype != DType::f32 && y_dtype != DType::bf16)
    throw Error(fmt::format("moe_combine: {} results", dtype_name(y_dtype)));
  if (n <= 0 || d <= 0) return;
  if (top_k <= 0) {
    if (!accumulate) fill_zero(out, static_cast<std::size_t>(n * d) * sizeof(float));
    return;
  }
  kernels::moe_combine(y, y_dtype == DType::bf16, rows, weights, n, top_k, d, out, accumulate, stream_);
  DPA_CHECK_LAUNCH();
}

char* CudaBackend::moe_workspace(std::size_t bytes) {
  if (bytes > moe_ws_bytes_) {
    not_capturing("a workspace reallocation");
    ++workspace_epoch_;
    if (moe_ws_) DPA_CHECK_CUDA(cudaFree(moe_ws_));  // synchronizes: nothing still uses it
    moe_ws_ = static_cast<char*>(alloc(bytes));
    moe_ws_bytes_ = bytes;
  }
  return moe_ws_;
}

uint64_t CudaBackend::check_expert_weights(const std::vector<int64_t>& ids, int64_t n_experts, const WeightView* gate,
                                       const WeightView* up, const WeightView* down) {
  uint64_t digest = 1469598103934665603ull;  // FNV-1a over the views' fields
  auto mix = [&](uint64_t v) { digest = (digest ^ v) * 1099511628211ull; };
  auto mix_view = [&](const WeightView& w) {
    mix(reinterpret_cast<std::uintptr_t>(w.data));
    mix(static_cast<uint64_t>(w.dtype));
    mix(static_cast<uint64_t>(w.rows)), mix(static_cast<uint64_t>(w.cols)), mix(static_cast<uint64_t>(w.ld));
  };
  mix(reinterpret_cast<std::uintptr_t>(gate)), mix(static_cast<uint64_t>(n_experts));
  for (int64_t e = 0; e < n_experts; ++e) mix_view(gate[e]), mix_view(up[e]), mix_view(down[e]);
  if (checked_experts_.count(digest)) return digest;
  bool all = true;  // every expert of the arrays, not only those with rows this time
  for (int64_t e = 0; e < n_experts && all; ++e)
    for (const WeightView* w : {&gate[e], &up[e], &down[e]})
      all = all && supports_weight(w->dtype) && (w->rows <= 0 || w->cols <= 0 || on_device(w->data));
  if (all) {
    if (checked_experts_.size() >= 4096) checked_experts_.clear();  // bounded: a model has one array per layer
    checked_experts_.insert(digest);
    return digest;
  }
  for (int64_t e : ids) {  // some expert is not usable: report the first one this call needs
    check_weight(gate[e], "moe_experts gate");
    check_weight(up[e], "moe_experts up");
    check_weight(down[e], "moe_experts down");
  }
  return digest;
}

}  // namespace dpa::backend
