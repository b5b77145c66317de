#include <algorithm>

#include "kernels/common.cuh"
#include "kernels/linear_small.cuh"
#include "kernels/mma.cuh"

namespace dpa::kernels {
namespace {

using detail::a_frag_f32;
using detail::cp_async16;
using detail::for_each_pair;
using detail::ldsm_x4;
using detail::load_weight_tile;
using detail::mma16816;
using detail::pipeline;

// A block: 4 warps over all (up to 16 * kMF) rows x kBN weight rows (16 a warp), one split of K
// in kBK-deep tiles, kStages in flight. The rows are read in f32 and rounded to bf16 in
// registers, as the expert kernels' first GEMM does.
constexpr int kThreads = 128, kBN = 64, kBK = 64, kStages = 4;
constexpr int kS = kBK + 8;  // smem row stride (elements)
constexpr int kMaxSplits = 8;
constexpr int kTargetBlocks = 264;  // two a streaming multiprocessor on an H200

template <int kMF>
constexpr int smem_bytes() {
  return kStages * (kMF * 16 * kS * 4 + kBN * kS * 2);
}

// The counters of the column tiles, at the workspace's start: one size for every call, so that no
// call's partial sums overlap another's counters (a split call has fewer tiles than kTargetBlocks).
constexpr std::size_t kCounterBytes = 2048;
static_assert(kTargetBlocks * sizeof(int) <= kCounterBytes, "counters");

template <int kMF>
__global__ void __launch_bounds__(kThreads, 2)
    small_linear_kernel(SmallLinear a, int* __restrict__ counters, float* __restrict__ part, int kt_per_split) {
  extern __shared__ __align__(16) unsigned char smem[];
  constexpr int kBM = kMF * 16;
  float* sA = reinterpret_cast<float*>(smem);
  __nv_bfloat16* sB = reinterpret_cast<__nv_bfloat16*>(smem + kStages * kBM * kS * 4);
  __shared__ int s_last;
  const int n = static_cast<int>(a.n), K = static_cast<int>(a.K), N = static_cast<int>(a.N);
  const int tile = blockIdx.x, split = blockIdx.y, splits = gridDim.y, n0 = tile * kBN;
  const int bz = blockIdx.z, batch = gridDim.z, slot = bz * gridDim.x + tile;  // slot: the tile's counter
  const float* x = a.x + bz * a.stride_x;
  const auto* w = static_cast<const __nv_bfloat16*>(a.w) + bz * a.w_stride;
  float* y = a.y + bz * a.stride_y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int kt0 = split * kt_per_split;
  const int nk = max(0, min((K + kBK - 1) / kBK, kt0 + kt_per_split) - kt0);
  auto load = [&](int st, int kt) {
    const int k0 = (kt0 + kt) * kBK;
    float* dA = sA + st * kBM * kS;
    for (int c = threadIdx.x; c < kBM * (kBK / 4); c += kThreads) {  // f32 rows, 4 per chunk
      const int r = c / (kBK / 4), kc = (c % (kBK / 4)) * 4;
      const bool ok = r < n && k0 + kc < K;
      cp_async16(dA + r * kS + kc, ok ? x + static_cast<int64_t>(r) * a.ldx + k0 + kc : x, ok);
    }
    load_weight_tile<kBN, kBK, kS, kThreads>(sB + st * kBN * kS, w, a.ldw, n0, N, k0, K);
  };
  float acc[kMF][2][4] = {};  // [16-row block][8-column half of the warp's 16][fragment]
  auto mma = [&](int st) {
    const float* A = sA + st * kBM * kS;
    const __nv_bfloat16* B = sB + st * kBN * kS;
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      unsigned af[kMF][4];
#pragma unroll
      for (int mf = 0; mf < kMF; ++mf) a_frag_f32(af[mf], A + mf * 16 * kS + kk, kS, g, t);
      const int m = lane >> 3;
      unsigned b[4];
      ldsm_x4(b, B + (warp * 16 + (m >> 1) * 8 + (lane & 7)) * kS + kk + (m & 1) * 8);
#pragma unroll
      for (int mf = 0; mf < kMF; ++mf) {
        mma16816(acc[mf][0], af[mf], b[0], b[1]);
        mma16816(acc[mf][1], af[mf], b[2], b[3]);
      }
    }
  };
  pipeline<kStages>(nk, load, mma);
  // One split: the result. Several: this split's partial sums ([split][batch][n][N]), and the
  // last split of the tile to finish adds them all in split order (the same sums whichever block
  // is last).
  float* mine = part + (static_cast<int64_t>(split) * batch + bz) * n * N;
  for_each_pair<kMF, 2>(g, t, n0 + warp * 16, [&](int mf, int j, int hr, int r, int col) {
    if (r >= n) return;
    float* o = splits == 1 ? y + static_cast<int64_t>(r) * a.ldy + col : mine + static_cast<int64_t>(r) * N + col;
    if (col < N) o[0] = acc[mf][j][hr * 2];
    if (col + 1 < N) o[1] = acc[mf][j][hr * 2 + 1];
  });
  if (splits == 1) return;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) s_last = atomicAdd(&counters[slot], 1) == splits - 1;
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  const int cols = min(kBN, N - n0);
  // Two outputs a thread at a time, every split's load of both in flight together.
  for (int i0 = threadIdx.x; i0 < n * cols; i0 += 2 * kThreads) {
    float v[2][kMaxSplits];
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      const int i = i0 + u * kThreads;
      const int64_t off = (static_cast<int64_t>(bz) * n + i / cols) * N + n0 + i % cols;
#pragma unroll
      for (int sp = 0; sp < kMaxSplits; ++sp)
        v[u][sp] = i < n * cols && sp < splits ? __ldcg(part + static_cast<int64_t>(sp) * batch * n * N + off) : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      const int i = i0 + u * kThreads;
      if (i >= n * cols) continue;
      float s = v[u][0];
#pragma unroll
      for (int sp = 1; sp < kMaxSplits; ++sp)
        if (sp < splits) s += v[u][sp];
      y[static_cast<int64_t>(i / cols) * a.ldy + n0 + i % cols] = s;
    }
  }
  if (threadIdx.x == 0) counters[slot] = 0;  // ready for the next call (and a graph's next replay)
}

template <int kMF>
void launch(const SmallLinear& a, void* ws, int splits, cudaStream_t stream) {
  constexpr int smem = smem_bytes<kMF>();
  static const bool once = [] {  // one GPU per process
    cudaFuncSetAttribute(small_linear_kernel<kMF>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    return true;
  }();
  (void)once;
  const int64_t nk = (a.K + kBK - 1) / kBK, tiles = (a.N + kBN - 1) / kBN;
  int* counters = static_cast<int*>(ws);
  float* part = reinterpret_cast<float*>(static_cast<char*>(ws) + kCounterBytes);
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(splits), static_cast<unsigned>(a.batch));
  small_linear_kernel<kMF><<<grid, kThreads, smem, stream>>>(a, counters, part,
                                                             static_cast<int>((nk + splits - 1) / splits));
}

}  // namespace

bool small_linear_supported(const SmallLinear& a) {
  auto al16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return a.n >= 1 && a.n <= kSmallLinearRows && a.K > 0 && a.N > 0 && a.batch >= 1 && a.batch <= 65535 &&
         a.K < (1 << 30) && a.N < (1 << 30) && a.K % 8 == 0 && a.ldw % 8 == 0 && a.w_stride % 8 == 0 &&
         a.ldx % 4 == 0 && a.stride_x % 4 == 0 && al16(a.x) && al16(a.w);
}

int small_linear_splits(const SmallLinear& a) {
  const int64_t nk = (a.K + kBK - 1) / kBK, tiles = (a.N + kBN - 1) / kBN * a.batch;
  const int64_t want = (kTargetBlocks + tiles - 1) / tiles;
  // Every split at least two k tiles, and no split left empty by the rounding of kt_per_split.
  int64_t s = tiles >= kTargetBlocks ? 1 : std::max<int64_t>(1, std::min<int64_t>({want, kMaxSplits, nk / 2}));
  while (s > 1 && (s - 1) * ((nk + s - 1) / s) >= nk) --s;
  return static_cast<int>(s);
}

std::size_t small_linear_workspace(const SmallLinear& a, int splits) {
  return kCounterBytes + (splits > 1 ? static_cast<std::size_t>(splits * a.batch * a.n * a.N) * sizeof(float) : 0);
}

void small_linear(const SmallLinear& a, void* workspace, int splits, cudaStream_t stream) {
  if (a.n <= 16) return launch<1>(a, workspace, splits, stream);
  if (a.n <= 32) return launch<2>(a, workspace, splits, stream);
  launch<4>(a, workspace, splits, stream);
}

}  // namespace dpa::kernels
