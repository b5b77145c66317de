// The routed experts' two GEMMs for moe_experts_fixed on tensor cores, with the per-expert row
// counts read in device memory: no host trip and no padded copies. Every block owns one expert's
// tile of rows and columns and leaves at once when the expert has no rows there, so an expert
// without rows costs no weight bytes and one with a handful costs its weights once. bf16 weights,
// fp32 accumulation; the SwiGLU is applied in the first GEMM's epilogue.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dpa::kernels {

struct ExpertGemmArgs {
  const void* const* gate = nullptr;  // device array [n_experts] of bf16 [I x D] (row stride ld_gu)
  const void* const* up = nullptr;    // likewise
  const void* const* down = nullptr;  // device array [n_experts] of bf16 [D x I] (row stride ld_down)
  int64_t ld_gu = 0, ld_down = 0;
  const int64_t* counts = nullptr;  // device [n_experts]: rows of each expert, each <= capacity
  int64_t n_experts = 0, capacity = 0, D = 0, I = 0;
  // The sum of the counts (the slots routed) as known without them, or a bound: picks the rows a
  // tile by the rows an expert holds on average. Any value gives the same results; 0: none known.
  int64_t rows = 0;
  int64_t x_div = 1;  // slot p's token row is x[order[p] / x_div] (the outputs stay at order[p])
};

// Whether the kernels take these shapes: D, I and both strides multiples of 8 (16-byte rows).
bool expert_gemm_supported(int64_t D, int64_t I, int64_t ld_gu, int64_t ld_down);

// Expert e's rows are the sorted slots start_e .. start_e + counts[e] (start_e: the counts of the
// experts before it); slot p's token row is x[order[p] / a.x_div, :D] (f32, or bf16 with x_bf16:
// an exchange's rows, read as they are; row stride D, 16-byte aligned).
// h[e * capacity + r, :I] = bf16(silu(x_r · gate_e^T) * (x_r · up_e^T)) for r < counts[e].
void moe_gate_up_silu(const void* x, bool x_bf16, const int32_t* order, const ExpertGemmArgs& a, uint16_t* h,
                      int64_t ldh, cudaStream_t stream);
// out[order[start_e + r], :D] = h[e * capacity + r, :I] · down_e^T (row stride D): f32, or with
// out_bf16 each value rounded once to bf16; the rows no slot names are left as they are.
void moe_down(const uint16_t* h, int64_t ldh, const int32_t* order, const ExpertGemmArgs& a, void* out, bool out_bf16,
              cudaStream_t stream);

}  // namespace dpa::kernels
