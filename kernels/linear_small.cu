#include <cooperative_groups.h>

#include <algorithm>

#include "kernels/common.cuh"
#include "kernels/linear_small.cuh"
#include "kernels/mma.cuh"

namespace dpa::kernels {
namespace {

namespace cg = cooperative_groups;

using detail::a_frag_f32;
using detail::for_each_pair;
using detail::ldsm_x4;
using detail::TileCopier;
using detail::mma16816;
using detail::pipeline;

// A block: 4 warps over all (up to 16 * kMF) rows x kBN weight rows (16 a warp), one split of K
// in kBK-deep tiles, stages<kMF>() in flight. The rows are read in f32 and rounded to bf16 in
// registers, as the expert kernels' first GEMM does. The splits of a column tile form one thread
// block cluster: each leaves its partial sums in its shared memory and every block then sums a
// share of the tile's outputs over all the splits' shared memory (distributed shared memory), in
// split order: deterministic, in one launch, with no global workspace and no serial tail.
constexpr int kThreads = 128, kBN = 64, kBK = 64;
constexpr int kS = kBK + 8;   // smem row stride of the stages (elements)
constexpr int kP = kBN + 8;   // smem row stride of the partial sums (floats): conflict-free pairs
constexpr int kMaxSplits = 8;  // the portable cluster size

// Stages in flight: as many as keep two blocks on a streaming multiprocessor (~110 KB each), so
// that the fewer the rows the more weight bytes each block has in flight. Measured on an H200
// (perf/RESULTS.md): 8 stages at 16 rows speed up the latency-bound calls the backend sends here
// by default (W_UK 6.2 -> 5.0 us) and slow the streaming ones, which at 4 stages fit four blocks
// an SM (V3's dense gate 90 -> 164 us with DPA_CUDA_SMALL_LINEAR=force).
template <int kMF>
constexpr int stages() {
  return kMF == 1 ? 8 : kMF == 2 ? 6 : 4;
}
template <int kMF>
constexpr int smem_bytes() {
  return stages<kMF>() * (kMF * 16 * kS * 4 + kBN * kS * 2);
}
static_assert(smem_bytes<1>() <= 113 * 1024 && smem_bytes<2>() <= 113 * 1024 && smem_bytes<4>() <= 113 * 1024,
              "two blocks a streaming multiprocessor");
static_assert(16 * kP * 4 <= smem_bytes<1>(), "the partial sums reuse the stages");

template <int kMF>
__global__ void __launch_bounds__(kThreads, 2) small_linear_kernel(SmallLinear a, int kt_per_split) {
  extern __shared__ __align__(16) unsigned char smem[];
  constexpr int kBM = kMF * 16, kStages = stages<kMF>();
  float* sA = reinterpret_cast<float*>(smem);
  __nv_bfloat16* sB = reinterpret_cast<__nv_bfloat16*>(smem + kStages * kBM * kS * 4);
  const int n = static_cast<int>(a.n), K = static_cast<int>(a.K), N = static_cast<int>(a.N);
  const int tile = blockIdx.x, split = blockIdx.y, splits = gridDim.y, n0 = tile * kBN, bz = blockIdx.z;
  const float* x = a.x + bz * a.stride_x;
  const auto* w = static_cast<const __nv_bfloat16*>(a.w) + bz * a.w_stride;
  float* y = a.y + bz * a.stride_y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int kt0 = split * kt_per_split;
  const int nk = max(0, min((K + kBK - 1) / kBK, kt0 + kt_per_split) - kt0);
  TileCopier<float, kBM, kBK, kS, kThreads> ca;  // each thread's rows, addressed once for the k loop
  TileCopier<__nv_bfloat16, kBN, kBK, kS, kThreads> cb;
  ca.init(sA, [&](int r) { return r < n ? x + static_cast<int64_t>(r) * a.ldx : nullptr; }, kStages, kBM * kS * 4);
  cb.init(sB, [&](int r) { return n0 + r < N ? w + static_cast<int64_t>(n0 + r) * a.ldw : nullptr; },
          kStages, kBN * kS * 2);
  auto load = [&](int st, int kt) {
    ca.load(st * (kBM * kS * 4), (kt0 + kt) * kBK, K);
    cb.load(st * (kBN * kS * 2), (kt0 + kt) * kBK, K);
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
  pipeline<kStages>(nk, load, mma);  // ends with the stages free
  if (splits == 1) {
    for_each_pair<kMF, 2>(g, t, n0 + warp * 16, [&](int mf, int j, int hr, int r, int col) {
      if (r >= n) return;
      float* o = y + static_cast<int64_t>(r) * a.ldy + col;
      if (col < N) o[0] = acc[mf][j][hr * 2];
      if (col + 1 < N) o[1] = acc[mf][j][hr * 2 + 1];
    });
    return;
  }
  float* part = reinterpret_cast<float*>(smem);  // [kBM][kP]: this split's sums, tile-relative columns
  for_each_pair<kMF, 2>(g, t, warp * 16, [&](int mf, int j, int hr, int r, int col) {
    *reinterpret_cast<float2*>(part + r * kP + col) = make_float2(acc[mf][j][hr * 2], acc[mf][j][hr * 2 + 1]);
  });
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();  // every split's sums written and visible cluster-wide
  const int cols = min(kBN, N - n0);
  const float* src[kMaxSplits];
#pragma unroll
  for (int sp = 0; sp < kMaxSplits; ++sp) src[sp] = sp < splits ? cluster.map_shared_rank(part, sp) : part;
  // Four outputs of one row a unit; block `split` takes units split * kThreads + tid, stepping by
  // the cluster's threads (one unit a thread at 64 rows and 8 splits).
  for (int u = split * kThreads + threadIdx.x; u < n * (kBN / 4); u += splits * kThreads) {
    const int r = u / (kBN / 4), c = (u % (kBN / 4)) * 4;
    if (c >= cols) continue;
    float4 v[kMaxSplits];
#pragma unroll
    for (int sp = 0; sp < kMaxSplits; ++sp)
      if (sp < splits) v[sp] = *reinterpret_cast<const float4*>(src[sp] + r * kP + c);
    float4 s = v[0];
#pragma unroll
    for (int sp = 1; sp < kMaxSplits; ++sp)
      if (sp < splits) s.x += v[sp].x, s.y += v[sp].y, s.z += v[sp].z, s.w += v[sp].w;
    float* o = y + static_cast<int64_t>(r) * a.ldy + n0 + c;
    o[0] = s.x;
    if (c + 1 < cols) o[1] = s.y;
    if (c + 2 < cols) o[2] = s.z;
    if (c + 3 < cols) o[3] = s.w;
  }
  cluster.sync();  // no block leaves (freeing its shared memory) while another still reads it
}

template <int kMF>
void launch(const SmallLinear& a, int splits, cudaStream_t stream) {
  constexpr int smem = smem_bytes<kMF>();
  static const bool once = [] {  // one GPU per process
    cudaFuncSetAttribute(small_linear_kernel<kMF>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    return true;
  }();
  (void)once;
  const int64_t nk = (a.K + kBK - 1) / kBK, tiles = (a.N + kBN - 1) / kBN;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(splits), static_cast<unsigned>(a.batch));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = 1, attr[0].val.clusterDim.y = static_cast<unsigned>(splits), attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr, cfg.numAttrs = 1;
  cudaLaunchKernelEx(&cfg, small_linear_kernel<kMF>, a, static_cast<int>((nk + splits - 1) / splits));
}

// The K splits (blocks of a cluster) a call uses: as many as one wave of blocks holds, up to 8.
int small_linear_splits(const SmallLinear& a) {
  const int64_t nk = (a.K + kBK - 1) / kBK, tiles = (a.N + kBN - 1) / kBN * a.batch;
  const int64_t slots = 2 * static_cast<int64_t>(detail::sm_count());  // two blocks a streaming multiprocessor
  // As many splits as one wave holds (a second, partial wave would double the time), every split
  // at least two k tiles, and no split left empty by the rounding of kt_per_split.
  int64_t s = std::max<int64_t>(1, std::min<int64_t>({slots / tiles, kMaxSplits, nk / 2}));
  while (s > 1 && (s - 1) * ((nk + s - 1) / s) >= nk) --s;
  return static_cast<int>(s);
}

}  // namespace

bool small_linear_supported(const SmallLinear& a) {
  auto al16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return a.n >= 1 && a.n <= kSmallLinearRows && a.K > 0 && a.N > 0 && a.batch >= 1 && a.batch <= 65535 &&
         a.K < (1 << 30) && a.N < (1 << 30) && a.K % 8 == 0 && a.ldw % 8 == 0 && a.w_stride % 8 == 0 &&
         a.ldx % 4 == 0 && a.stride_x % 4 == 0 && al16(a.x) && al16(a.w);
}

void small_linear(const SmallLinear& a, cudaStream_t stream) {
  const int splits = small_linear_splits(a);
  if (a.n <= 16) return launch<1>(a, splits, stream);
  if (a.n <= 32) return launch<2>(a, splits, stream);
  launch<4>(a, splits, stream);
}

}  // namespace dpa::kernels
