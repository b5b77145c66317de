#include "kernels/common.cuh"
#include "kernels/moe_gate.cuh"

namespace dpa::kernels {
namespace {

constexpr int kThreads = 256;

// True when candidate (va, a) ranks before (vb, b): larger value first, then lower index.
__device__ __forceinline__ bool before(double va, int64_t a, double vb, int64_t b) {
  return va > vb || (va == vb && a < b);
}

// One block per token. Shared memory: score[E], choice[E] (double), gscore[G] (double),
// sel[top_k] (int), allowed[E] (char).
__global__ void __launch_bounds__(kThreads) moe_gate_kernel(const float* logits, int64_t n,
                                                            GateArgs a, int32_t* ids,
                                                            float* weights) {
  extern __shared__ double dsm[];
  const int64_t E = a.n_experts, G = a.grouped ? a.n_group : 1, K = a.top_k;
  double* score = dsm;
  double* choice = score + E;
  double* gscore = choice + E;
  int* sel = reinterpret_cast<int*>(gscore + G);
  char* allowed = reinterpret_cast<char*>(sel + K);
  __shared__ double mx_sum[2];
  for (int64_t t = blockIdx.x; t < n; t += gridDim.x) {
    const float* l = logits + t * E;
    if (!a.sigmoid) {
      if (threadIdx.x == 0) {
        double mx = l[0];
        for (int64_t e = 1; e < E; ++e) mx = fmax(mx, static_cast<double>(l[e]));
        mx_sum[0] = mx;
      }
      __syncthreads();
      const double mx = mx_sum[0];
      for (int64_t e = threadIdx.x; e < E; e += blockDim.x) score[e] = exp(l[e] - mx);
      __syncthreads();
      if (threadIdx.x == 0) {  // summed in expert order, as the reference
        double sum = 0;
        for (int64_t e = 0; e < E; ++e) sum += score[e];
        mx_sum[1] = sum;
      }
      __syncthreads();
      const double sum = mx_sum[1];
      for (int64_t e = threadIdx.x; e < E; e += blockDim.x)
        score[e] = static_cast<float>(score[e] / sum);
    } else {
      for (int64_t e = threadIdx.x; e < E; e += blockDim.x)
        score[e] = static_cast<float>(1.0 / (1.0 + expf(-l[e])));  // float exp, as the reference
    }
    for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
      const bool biased = a.noaux_tc && a.correction_bias;
      choice[e] = biased ? static_cast<float>(score[e] + a.correction_bias[e]) : score[e];
      allowed[e] = 1;
    }
    __syncthreads();
    if (a.grouped) {
      const int64_t per = E / G;
      for (int64_t g = threadIdx.x; g < G; g += blockDim.x) {
        double m0 = -INFINITY, m1 = -INFINITY;
        for (int64_t e = g * per; e < (g + 1) * per; ++e) {
          const double c = choice[e];
          if (c > m0) {
            m1 = m0;
            m0 = c;
          } else if (c > m1) {
            m1 = c;
          }
        }
        gscore[g] = a.noaux_tc ? m0 + (per > 1 ? m1 : 0.0) : m0;
      }
      __syncthreads();
      for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
        const int64_t g = e / per;
        int64_t rank = 0;
        for (int64_t o = 0; o < G; ++o) rank += before(gscore[o], o, gscore[g], g);
        allowed[e] = rank < a.topk_group;
      }
      __syncthreads();
    }
    for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
      if (!allowed[e]) continue;
      int64_t rank = 0;
      for (int64_t o = 0; o < E && rank < K; ++o) rank += allowed[o] && before(choice[o], o, choice[e], e);
      if (rank < K) sel[rank] = static_cast<int>(e);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      double sum = 0;
      for (int64_t k = 0; k < K; ++k) sum += static_cast<float>(score[sel[k]]);
      for (int64_t k = 0; k < K; ++k) {
        double w = static_cast<float>(score[sel[k]]);
        if (a.norm_topk_prob && K > 1) w /= (sum + 1e-20);
        ids[t * K + k] = sel[k];
        weights[t * K + k] = static_cast<float>(w * a.routed_scaling_factor);
      }
    }
    __syncthreads();
  }
}

}  // namespace

void moe_gate(const float* logits, int64_t n, const GateArgs& a, int32_t* ids, float* weights,
              cudaStream_t stream) {
  if (n <= 0 || a.n_experts <= 0 || a.top_k <= 0) return;
  const int64_t G = a.grouped ? a.n_group : 1;
  const size_t smem = static_cast<size_t>(2 * a.n_experts + G) * sizeof(double) +
                      static_cast<size_t>(a.top_k) * sizeof(int) + static_cast<size_t>(a.n_experts);
  if (smem > 48 * 1024)
    cudaFuncSetAttribute(moe_gate_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         static_cast<int>(smem));
  const unsigned grid = static_cast<unsigned>(n < (1 << 20) ? n : (1 << 20));
  moe_gate_kernel<<<grid, kThreads, smem, stream>>>(logits, n, a, ids, weights);
}

}  // namespace dpa::kernels
