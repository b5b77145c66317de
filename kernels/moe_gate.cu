#include "kernels/common.cuh"
#include "kernels/moe_gate.cuh"

namespace dpa::kernels {
namespace {

// The warp path (E <= 256, at most 32 groups, top_k <= 32): one warp per token, lane `lane`
// holding experts lane + 32 * j, j < J, in registers; no block-wide barriers. The arithmetic is
// the general path's: the same expressions, the softmax sum in the same (expert) order.
constexpr int kWarps = 4;  // tokens per block

// Order-preserving map of a non-NaN float onto unsigned; 0 sorts below every float.
__device__ __forceinline__ unsigned ordered(float x) {
  const unsigned u = __float_as_uint(x);
  return u & 0x80000000u ? ~u : u | 0x80000000u;
}
__device__ __forceinline__ float unordered(unsigned u) {
  return __uint_as_float(u & 0x80000000u ? u & 0x7fffffffu : ~u);
}

// kGrouped is a.grouped, a template argument so that the greedy kernels carry no group code.
template <int J, bool kGrouped>
__global__ void __launch_bounds__(kWarps * 32)
    moe_gate_warp_kernel(const float* logits, int64_t n, GateArgs a, int32_t* ids, float* weights) {
  __shared__ alignas(16) double vrow[kWarps][32 * J];  // exp(l - max), read back in expert order
  __shared__ float crow[kWarps][32 * J];               // choice, read back by group
  __shared__ alignas(16) double gsc[kWarps][32];       // group scores
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int E = static_cast<int>(a.n_experts), K = static_cast<int>(a.top_k);
  const bool biased = a.noaux_tc && a.correction_bias;
  float bias[J];
#pragma unroll
  for (int j = 0; j < J; ++j)
    bias[j] = biased && lane + 32 * j < E ? a.correction_bias[lane + 32 * j] : 0.0f;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * kWarps + w; t < n;
       t += static_cast<int64_t>(gridDim.x) * kWarps) {
    const float* l = logits + t * E;
    float x[J], s[J];
#pragma unroll
    for (int j = 0; j < J; ++j) x[j] = lane + 32 * j < E ? l[lane + 32 * j] : -INFINITY;
    if (!a.sigmoid) {
      unsigned m = 0;  // the max is exact in any order
#pragma unroll
      for (int j = 0; j < J; ++j) m = max(m, ordered(x[j]));
      const double mx = unordered(__reduce_max_sync(0xffffffffu, m));
      double v[J];
#pragma unroll
      for (int j = 0; j < J; ++j) {
        v[j] = exp(x[j] - mx);  // 0 past E, where x is -inf
        vrow[w][lane + 32 * j] = v[j];
      }
      __syncwarp();
      // Summed in expert order, as the reference; the zeros past E leave the sum unchanged.
      const double2* vp = reinterpret_cast<const double2*>(vrow[w]);
      double sum = 0;
#pragma unroll
      for (int i = 0; i < 16 * J; ++i) {
        const double2 p = vp[i];
        sum += p.x;
        sum += p.y;
      }
#pragma unroll
      for (int j = 0; j < J; ++j) s[j] = static_cast<float>(v[j] / sum);
    } else {
#pragma unroll
      for (int j = 0; j < J; ++j)
        s[j] = static_cast<float>(1.0 / (1.0 + expf(-x[j])));  // float exp, as the reference
    }
    unsigned key[J];  // ordered(choice) of a candidate, 0 otherwise
#pragma unroll
    for (int j = 0; j < J; ++j) {
      const float c = biased ? static_cast<float>(static_cast<double>(s[j]) + bias[j]) : s[j];
      // ordered() puts -0 below +0, but c is never -0: scores are >= +0 and an exact zero sum
      // rounds to +0.
      key[j] = lane + 32 * j < E ? ordered(c) : 0u;
      if constexpr (kGrouped) crow[w][lane + 32 * j] = c;
    }
    if constexpr (kGrouped) {
      // `sub` lanes per group (a power of two, G * sub > 16) scan strided parts of it for the top
      // two, then merge by butterfly; every lane of the group ends with the group's score.
      __syncwarp();
      const int G = static_cast<int>(a.n_group), per = E / G, lsub = 31 - __clz(32 / G);
      const int sub = 1 << lsub, g = lane >> lsub, end = g < G ? (g + 1) * per : 0;
      float m0 = -INFINITY, m1 = -INFINITY;
#pragma unroll
      for (int i = 0; i < 2 * J; ++i) {
        if (i == J && per <= J * sub) break;  // per / sub < 2J, and <= J when G * sub == 32
        const int e = g * per + (lane & (sub - 1)) + i * sub;
        const float c = e < end ? crow[w][min(e, 32 * J - 1)] : -INFINITY;
        if (c > m0) {
          m1 = m0;
          m0 = c;
        } else if (c > m1) {
          m1 = c;
        }
      }
      for (int o = sub / 2; o > 0; o /= 2) {
        const float b0 = __shfl_xor_sync(0xffffffffu, m0, o);
        const float b1 = __shfl_xor_sync(0xffffffffu, m1, o);
        if (b0 > m0) {
          m1 = fmaxf(m0, b1);
          m0 = b0;
        } else {
          m1 = fmaxf(m1, b0);
        }
      }
      const double gs = a.noaux_tc ? m0 + (per > 1 ? static_cast<double>(m1) : 0.0) : m0;
      gsc[w][lane] = __shfl_sync(0xffffffffu, gs, min(lane, G - 1) << lsub);  // group lane's score
      __syncwarp();
      // The rank of the lane's group by (score desc, index asc); all 32 entries read, no branches.
      int rank = 0;
#pragma unroll
      for (int o = 0; o < 32; ++o) {
        const double go = gsc[w][o];
        rank += (o < G) & ((go > gs) | ((go == gs) & (o < g)));
      }
      const unsigned kept = __ballot_sync(0xffffffffu, g < G && rank < a.topk_group);
      // e / per without an integer division: (e + 0.5) / per is at least 0.5 / per from an
      // integer, far more than the float rounding error for e < 256.
      const float inv_per = 1.0f / per;
#pragma unroll
      for (int j = 0; j < J; ++j) {
        const int ge = static_cast<int>((lane + 32 * j + 0.5f) * inv_per);
        if (!((kept >> (min(ge, G - 1) << lsub)) & 1u)) key[j] = 0;
      }
    }
    // K rounds of a warp argmax by (choice desc, index asc): each lane's best (the lower j on
    // ties), the warp's best value, then the lowest expert holding it.
    double wsum = 0;
    int my_id = 0;
    float my_s = 0;
    for (int k = 0; k < K; ++k) {
      unsigned best = 0;
      int bj = 0;
      float bs = 0;
#pragma unroll
      for (int j = 0; j < J; ++j)
        if (key[j] > best) best = key[j], bj = j, bs = s[j];
      const unsigned top = __reduce_max_sync(0xffffffffu, best);
      const unsigned mine = best == top ? static_cast<unsigned>(lane + 32 * bj) : ~0u;
      const int e = static_cast<int>(__reduce_min_sync(0xffffffffu, mine));
      const float se = __shfl_sync(0xffffffffu, bs, e & 31);
#pragma unroll
      for (int j = 0; j < J; ++j)
        if (e == lane + 32 * j) key[j] = 0;
      wsum += se;  // in rank order, as the reference
      if (lane == k) my_id = e, my_s = se;
    }
    const int64_t stride = K + a.shared_slots;
    if (lane < K) {
      double wt = my_s;
      if (a.norm_topk_prob && K > 1) wt /= (wsum + 1e-20);
      ids[t * stride + lane] = my_id;
      weights[t * stride + lane] = static_cast<float>(wt * a.routed_scaling_factor);
    }
    for (int64_t sl = lane; sl < a.shared_slots; sl += 32)
      ids[t * stride + K + sl] = static_cast<int32_t>(E + sl), weights[t * stride + K + sl] = 1.0f;
    __syncwarp();  // the next token rewrites this warp's rows
  }
}

// The general path: one block per token.
constexpr int kThreads = 256;

// True when candidate (va, a) ranks before (vb, b): larger value first, then lower index.
__device__ __forceinline__ bool before(double va, int64_t a, double vb, int64_t b) {
  return va > vb || (va == vb && a < b);
}

// Shared memory: score[E], choice[E] (double), gscore[G] (double),
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
      const int64_t stride = K + a.shared_slots;
      for (int64_t k = 0; k < K; ++k) {
        double w = static_cast<float>(score[sel[k]]);
        if (a.norm_topk_prob && K > 1) w /= (sum + 1e-20);
        ids[t * stride + k] = sel[k];
        weights[t * stride + k] = static_cast<float>(w * a.routed_scaling_factor);
      }
      for (int64_t sl = 0; sl < a.shared_slots; ++sl)
        ids[t * stride + K + sl] = static_cast<int32_t>(E + sl), weights[t * stride + K + sl] = 1.0f;
    }
    __syncthreads();
  }
}

}  // namespace

void moe_gate(const float* logits, int64_t n, const GateArgs& a, int32_t* ids, float* weights,
              cudaStream_t stream) {
  if (n <= 0 || a.n_experts <= 0 || a.top_k <= 0) return;
  if (a.n_experts <= 256 && a.top_k <= 32 && (!a.grouped || a.n_group <= 32)) {
    void (*const warp_kernels[2][8])(const float*, int64_t, GateArgs, int32_t*, float*) = {
        {moe_gate_warp_kernel<1, false>, moe_gate_warp_kernel<2, false>,
         moe_gate_warp_kernel<3, false>, moe_gate_warp_kernel<4, false>,
         moe_gate_warp_kernel<5, false>, moe_gate_warp_kernel<6, false>,
         moe_gate_warp_kernel<7, false>, moe_gate_warp_kernel<8, false>},
        {moe_gate_warp_kernel<1, true>, moe_gate_warp_kernel<2, true>,
         moe_gate_warp_kernel<3, true>, moe_gate_warp_kernel<4, true>,
         moe_gate_warp_kernel<5, true>, moe_gate_warp_kernel<6, true>,
         moe_gate_warp_kernel<7, true>, moe_gate_warp_kernel<8, true>}};
    const auto kernel = warp_kernels[a.grouped][(a.n_experts + 31) / 32 - 1];
    kernel<<<detail::blocks_for(n, kWarps), kWarps * 32, 0, stream>>>(logits, n, a, ids, weights);
    return;
  }
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
