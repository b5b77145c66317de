#include <algorithm>

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

// A warp places its slots [s0, s1) in order, 32 at a time (equal ids within the 32 ranked by
// lane), from pos[id], its first position for each expert (advanced as it goes). The counters
// are laid out warp by warp ([warp][expert]), so that a warp's lanes, which hold different
// experts, read and write different shared-memory banks (expert-major, all 32 lanes of a warp
// hit one bank).
__device__ __forceinline__ void place_slots(const int32_t* ids, int64_t s0, int64_t s1, int* pos, int lane,
                                            int32_t* order, int32_t* position) {
  const unsigned lt = (1u << lane) - 1u;
  for (int64_t base = s0; base < s1; base += 32) {
    const int64_t s = base + lane;
    const bool valid = s < s1;
    const int id = valid ? ids[s] : -1;
    const unsigned peers = __match_any_sync(0xffffffffu, id);
    const int rank = __popc(peers & lt);
    if (valid) {
      const int j = pos[id] + rank;
      order[j] = static_cast<int32_t>(s);
      if (position) position[s] = j;
    }
    __syncwarp();
    if (valid && rank == 0) pos[id] += __popc(peers);
    __syncwarp();
  }
}

// Warp w of nw takes the contiguous slots [n w / nw, n (w + 1) / nw): counts per (warp, expert),
// each expert's total, an exclusive scan of the totals, then each expert's warps in turn give
// each warp its first position per expert (the (expert, warp) order), and each warp places its
// slots in order, 32 at a time (equal ids within the 32 ranked by lane). The result is the
// stable order of the single-pass sort.
__global__ void __launch_bounds__(kThreads) moe_sort_kernel(const int32_t* ids, int64_t n,
                                                            int64_t E, int32_t* order,
                                                            int32_t* position, int64_t* counts) {
  extern __shared__ int pos[];  // [nw][E]: counts, then first positions; then [E] expert starts
  __shared__ int bad;
  __shared__ int warp_sums[32];
  const int nw = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int* start = pos + E * nw;
  for (int64_t i = threadIdx.x; i < E * nw; i += blockDim.x) pos[i] = 0;
  if (threadIdx.x == 0) bad = 0;
  __syncthreads();
  const int64_t s0 = n * warp / nw, s1 = n * (warp + 1) / nw;
  for (int64_t s = s0 + lane; s < s1; s += 32) {
    const int id = ids[s];
    if (id < 0 || id >= E)
      bad = 1;
    else
      atomicAdd(&pos[warp * E + id], 1);
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    int c = 0;
    for (int w = 0; w < nw; ++w) c += pos[w * E + e];
    counts[e] = c;
    start[e] = c;
  }
  __syncthreads();  // the starts, before the scan reads them
  if (threadIdx.x == 0) counts[E] = bad;
  if (bad) return;  // uniform: read after the barrier above
  block_exclusive_scan(start, E, warp_sums);
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    int run = start[e];
    for (int w = 0; w < nw; ++w) {
      const int v = pos[w * E + e];
      pos[w * E + e] = run;
      run += v;
    }
  }
  __syncthreads();
  place_slots(ids, s0, s1, pos + warp * E, lane, order, position);
}

// The wide form, for many slots: W warps over the grid (nw a block), warp g taking the slots
// [n g / W, n (g + 1) / W). Pass 1 counts per (expert, warp) into cnt [E][W] and flags bad ids
// in cnt[E W + block]; pass 2 (one block) totals and scans cnt in (expert, warp) order; pass 3
// places each warp's slots as the one-block kernel does. Same order as the one-block kernel's.
__global__ void moe_sort_count_kernel(const int32_t* ids, int64_t n, int64_t E, int W, int* cnt) {
  extern __shared__ int c[];  // [nw][E], as the one-block kernel's
  const int nw = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = blockIdx.x * nw + warp;
  __shared__ int bad;
  for (int64_t i = threadIdx.x; i < E * nw; i += blockDim.x) c[i] = 0;
  if (threadIdx.x == 0) bad = 0;
  __syncthreads();
  for (int64_t s = n * g / W + lane, s1 = n * (g + 1) / W; s < s1; s += 32) {
    const int id = ids[s];
    if (id < 0 || id >= E)
      bad = 1;
    else
      atomicAdd(&c[warp * E + id], 1);
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < E * nw; i += blockDim.x)
    cnt[(i % E) * W + blockIdx.x * nw + i / E] = c[i];
  if (threadIdx.x == 0) cnt[E * W + blockIdx.x] = bad;
}

__global__ void __launch_bounds__(kThreads) moe_sort_scan_kernel(int* cnt, int64_t E, int W, int blocks,
                                                                 int64_t* counts) {
  __shared__ int bad;
  __shared__ int warp_sums[32];
  if (threadIdx.x == 0) bad = 0;
  __syncthreads();
  for (int b = threadIdx.x; b < blocks; b += blockDim.x)
    if (cnt[E * W + b]) bad = 1;
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    int64_t c = 0;
    for (int w = 0; w < W; ++w) c += cnt[e * W + w];
    counts[e] = c;
  }
  __syncthreads();
  if (threadIdx.x == 0) counts[E] = bad;
  if (bad) return;  // uniform: read after the barrier above
  block_exclusive_scan(cnt, E * W, warp_sums);
}

__global__ void moe_sort_place_kernel(const int32_t* ids, int64_t n, int64_t E, int W, const int* cnt,
                                      const int64_t* counts, int32_t* order, int32_t* position) {
  if (counts[E]) return;  // a bad id: order unset, as the one-block kernel leaves it
  extern __shared__ int pos[];  // [nw][E]: this block's warps' first positions
  const int nw = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = blockIdx.x * nw + warp;
  for (int64_t i = threadIdx.x; i < E * nw; i += blockDim.x) pos[i] = cnt[(i % E) * W + blockIdx.x * nw + i / E];
  __syncthreads();
  place_slots(ids, n * g / W, n * (g + 1) / W, pos + warp * E, lane, order, position);
}

// The wide form's warps: about kWideSlots slots each, kWideWarps a block.
constexpr int64_t kWideSlots = 256, kWideWarps = 8;

void wide_shape(int64_t n_slots, int* warps, int* blocks) {
  const int64_t b = std::max<int64_t>(1, (n_slots + kWideSlots * kWideWarps - 1) / (kWideSlots * kWideWarps));
  *blocks = static_cast<int>(b), *warps = static_cast<int>(b * kWideWarps);
}

}  // namespace

int64_t moe_sort_workspace_ints(int64_t n_slots, int64_t n_experts) {
  if (n_slots < kMoeSortWideMinSlots || n_experts <= 0) return 0;
  int warps, blocks;
  wide_shape(n_slots, &warps, &blocks);
  return n_experts * warps + blocks;
}

void moe_sort(const int32_t* ids, int64_t n_slots, int64_t n_experts, int32_t* order, int32_t* position,
              int64_t* counts_dev, int* workspace, int64_t workspace_ints, cudaStream_t stream) {
  if (n_experts <= 0) return;
  const int64_t wide = moe_sort_workspace_ints(n_slots, n_experts);
  const size_t wide_smem = static_cast<size_t>(n_experts * kWideWarps) * sizeof(int);
  if (wide > 0 && workspace && workspace_ints >= wide && wide_smem <= 48 * 1024) {
    int warps, blocks;
    wide_shape(n_slots, &warps, &blocks);
    const unsigned threads = static_cast<unsigned>(kWideWarps * 32);
    moe_sort_count_kernel<<<blocks, threads, wide_smem, stream>>>(ids, n_slots, n_experts, warps, workspace);
    moe_sort_scan_kernel<<<1, kThreads, 0, stream>>>(workspace, n_experts, warps, blocks, counts_dev);
    moe_sort_place_kernel<<<blocks, threads, wide_smem, stream>>>(ids, n_slots, n_experts, warps, workspace,
                                                                  counts_dev, order, position);
    return;
  }
  // As many warps as the (warp, expert) counters and the experts' starts fit in 96 KiB of shared
  // memory (32 for up to 744 experts); one warp per 32 slots at most.
  constexpr int64_t kSmemCap = 96 * 1024;
  int64_t warps = kSmemCap / (n_experts * static_cast<int64_t>(sizeof(int))) - 1;
  warps = warps < 1 ? 1 : (warps > kThreads / 32 ? kThreads / 32 : warps);
  const int64_t by_slots = (n_slots + 31) / 32;
  if (warps > by_slots) warps = by_slots < 1 ? 1 : by_slots;
  const size_t smem = static_cast<size_t>(n_experts * (warps + 1)) * sizeof(int);
  if (smem > 48 * 1024)
    cudaFuncSetAttribute(moe_sort_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         static_cast<int>(smem));
  moe_sort_kernel<<<1, static_cast<unsigned>(warps * 32), smem, stream>>>(ids, n_slots, n_experts, order, position, counts_dev);
}

}  // namespace dpa::kernels
