#include "kernels/common.cuh"
#include "kernels/moe_sort.cuh"

namespace dpa::kernels {
namespace {

constexpr int kThreads = 1024;

// Exclusive prefix sum of a[0 .. n) in place over the block (each thread scans a contiguous
// chunk; the chunk totals are scanned through the warps). `warp_sums` holds 32 ints.
__device__ void block_exclusive_scan(int* a, int64_t n, int* warp_sums) {
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5, nw = blockDim.x >> 5;
  const int64_t chunk = (n + blockDim.x - 1) / blockDim.x, b = t * chunk, e = b + chunk < n ? b + chunk : n;
  int sum = 0;
  for (int64_t i = b; i < e; ++i) sum += a[i];
  int incl = sum;  // inclusive scan of the chunk sums within the warp
  for (int o = 1; o < 32; o <<= 1) {
    const int v = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += v;
  }
  if (lane == 31) warp_sums[warp] = incl;
  __syncthreads();
  if (t == 0) {
    int run = 0;
    for (int w = 0; w < nw; ++w) {
      const int v = warp_sums[w];
      warp_sums[w] = run;
      run += v;
    }
  }
  __syncthreads();
  int run = warp_sums[warp] + incl - sum;
  for (int64_t i = b; i < e; ++i) {
    const int v = a[i];
    a[i] = run;
    run += v;
  }
  __syncthreads();
}

// Warp w of nw takes the contiguous slots [n w / nw, n (w + 1) / nw): counts per (expert, warp),
// an exclusive scan in (expert, warp) order gives each warp its first position per expert, then
// each warp places its slots in order, 32 at a time (equal ids within the 32 ranked by lane). The
// result is the stable order of the single-pass sort.
__global__ void __launch_bounds__(kThreads) moe_sort_kernel(const int32_t* ids, int64_t n,
                                                            int64_t E, int32_t* order,
                                                            int32_t* position, int64_t* counts) {
  extern __shared__ int pos[];  // [E][nw]: counts, then first positions
  __shared__ int bad;
  __shared__ int warp_sums[32];
  const int nw = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int64_t i = threadIdx.x; i < E * nw; i += blockDim.x) pos[i] = 0;
  if (threadIdx.x == 0) bad = 0;
  __syncthreads();
  const int64_t s0 = n * warp / nw, s1 = n * (warp + 1) / nw;
  for (int64_t s = s0 + lane; s < s1; s += 32) {
    const int id = ids[s];
    if (id < 0 || id >= E)
      bad = 1;
    else
      atomicAdd(&pos[id * nw + warp], 1);
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    int c = 0;
    for (int w = 0; w < nw; ++w) c += pos[e * nw + w];
    counts[e] = c;
  }
  if (threadIdx.x == 0) counts[E] = bad;
  if (bad) return;  // uniform: read after the barrier above
  block_exclusive_scan(pos, E * nw, warp_sums);
  const unsigned lt = (1u << lane) - 1u;
  for (int64_t base = s0; base < s1; base += 32) {
    const int64_t s = base + lane;
    const bool valid = s < s1;
    const int id = valid ? ids[s] : -1;
    const unsigned peers = __match_any_sync(0xffffffffu, id);
    const int rank = __popc(peers & lt);
    if (valid) {
      const int j = pos[id * nw + warp] + rank;
      order[j] = static_cast<int32_t>(s);
      if (position) position[s] = j;
    }
    __syncwarp();
    if (valid && rank == 0) pos[id * nw + warp] += __popc(peers);
    __syncwarp();
  }
}

}  // namespace

void moe_sort(const int32_t* ids, int64_t n_slots, int64_t n_experts, int32_t* order,
              int32_t* position, int64_t* counts_dev, cudaStream_t stream) {
  if (n_experts <= 0) return;
  // As many warps as the (expert, warp) counters fit in 96 KiB of shared memory (32 for up to
  // 768 experts); one warp per 32 slots at most.
  constexpr int64_t kSmemCap = 96 * 1024;
  int64_t warps = kSmemCap / (n_experts * static_cast<int64_t>(sizeof(int)));
  warps = warps < 1 ? 1 : (warps > kThreads / 32 ? kThreads / 32 : warps);
  const int64_t by_slots = (n_slots + 31) / 32;
  if (warps > by_slots) warps = by_slots < 1 ? 1 : by_slots;
  const size_t smem = static_cast<size_t>(n_experts * warps) * sizeof(int);
  if (smem > 48 * 1024)
    cudaFuncSetAttribute(moe_sort_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         static_cast<int>(smem));
  moe_sort_kernel<<<1, static_cast<unsigned>(warps * 32), smem, stream>>>(ids, n_slots, n_experts, order, position, counts_dev);
}

}  // namespace dpa::kernels
