// The routed experts' two GEMMs on Hopper's warpgroup MMA, from a few rows an expert (weight
// streaming) to prefill-sized steps (compute): a block computes 128 rows of one expert against
// 256 weight rows, one producer thread loading both operands by tensor-map copies (TMA) into a
// four-stage ring and two warpgroups multiplying. The rows are compact, in moe_sort's order (no
// per-expert padding), and the epilogues apply the SwiGLU (first GEMM) and write each row where
// `order` says (second). sm_90a only: callers ask expert_wgmma_supported first.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace dpa::kernels {

// One block row of work: expert `expert`'s sorted rows p0 .. p0 + rows - 1 (rows <= 128).
struct ExpertTile {
  int32_t expert = 0, p0 = 0, rows = 0, pad = 0;
};
inline constexpr int kExpertWgmmaRows = 128;
inline constexpr std::size_t kTensorMapBytes = 128;  // sizeof(CUtensorMap)

// Whether the kernels take these shapes here: a device of compute capability 9.0, D a multiple
// of 256, I of 128, both row strides of 16-byte multiples, and the driver's tensor-map encoder.
bool expert_wgmma_supported(int64_t D, int64_t I, int64_t ld_gu, int64_t ld_down);

// The experts' weight tensor maps, kExpertMapsPerExpert * n_experts of kTensorMapBytes each into
// `maps` (host memory, 64-byte aligned): for the wide blocks' boxes, gate[e] then up[e] ([I x D]
// bf16, row stride ld_gu elements), then down[e] ([D x I], ld_down); then the same three for the
// narrow blocks' boxes. Every pointer 16-byte aligned. False when the driver refuses one.
inline constexpr int kExpertMapsPerExpert = 6;
bool encode_expert_maps(const void* const* gate, const void* const* up, const void* const* down,
                        int64_t n_experts, int64_t D, int64_t I, int64_t ld_gu, int64_t ld_down, void* maps);

struct ExpertWgmmaArgs {
  const void* maps = nullptr;  // device copy of encode_expert_maps' output
  const ExpertTile* tiles = nullptr;  // device [n_tiles]
  // The tiles in use: plan[0] when plan (device memory, moe_wgmma_plan) is set, else n_tiles;
  // n_tiles is then a bound, which sizes the launch.
  const int32_t* plan = nullptr;
  int64_t n_tiles = 0, n_experts = 0, D = 0, I = 0;
  // Blocks of 128 weight rows instead of 256: twice the work items, for launches that stream
  // weights (about a tile's rows an expert or fewer), where the persistent launch's last round
  // then leaves fewer SMs idle. Wide blocks reuse each row tile over more weights (compute).
  bool narrow = false;
};

// For counts in device memory (no host trip, recordable in a graph): expert e's tiles over the
// compact rows into `tiles` (room for n_experts * ceil(capacity / 128)), each count taken within
// [0, capacity]; plan[0] = the tiles, plan[1] = the rows (the counts' sum). n_experts <= 4096.
void moe_wgmma_plan(const int64_t* counts, int64_t n_experts, int64_t capacity, ExpertTile* tiles, int32_t* plan,
                    cudaStream_t stream);
// xb[p, :d] = bf16(x[order[p] / x_div, :d]) for p < min(n_rows, plan[1]) (the rows in
// moe_sort's order).
void moe_wgmma_gather(const float* x, const int32_t* order, int64_t x_div, const int32_t* plan, int64_t n_rows,
                      int64_t d, int64_t ldx, uint16_t* xb, cudaStream_t stream);
// The same from bf16 rows (an exchange's, already rounded): xb[p, :d] = x[order[p] / x_div, :d].
void moe_wgmma_gather_bf16(const uint16_t* x, const int32_t* order, int64_t x_div, const int32_t* plan,
                           int64_t n_rows, int64_t d, int64_t ldx, uint16_t* xb, cudaStream_t stream);

// Both return false, launching nothing, when the driver refuses the operand's tensor map.
// h[p, :I] = bf16(silu(xb_p · gate_e^T) * (xb_p · up_e^T)) for every tile's rows p (expert e).
// xb: bf16 [rows][ldx], 16-byte aligned, ldx a multiple of 8; h likewise with ldh.
bool moe_wgmma_gate_up(const uint16_t* xb, int64_t rows, int64_t ldx, const ExpertWgmmaArgs& a, uint16_t* h,
                       int64_t ldh, cudaStream_t stream);
// out[order[p], :D] = h_p · down_e^T (f32, or rounded to bf16 with out_bf16; row stride D) for every
// tile's rows p.
bool moe_wgmma_down(const uint16_t* h, int64_t rows, int64_t ldh, const int32_t* order, const ExpertWgmmaArgs& a,
                    void* out, bool out_bf16, cudaStream_t stream);

}  // namespace dpa::kernels
