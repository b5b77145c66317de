#include "kernels/common.cuh"
#include "kernels/moe_sort.cuh"

namespace dpa::kernels {
namespace {

constexpr int kThreads = 1024;

__global__ void __launch_bounds__(kThreads) moe_sort_kernel(const int32_t* ids, int64_t n,
                                                            int64_t E, int32_t* order,
                                                            int64_t* counts) {
  extern __shared__ int cnt[];  // [E] counts, then [E] next positions
  int* next = cnt + E;
  __shared__ int bad;
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) cnt[e] = 0;
  if (threadIdx.x == 0) bad = 0;
  __syncthreads();
  for (int64_t s = threadIdx.x; s < n; s += blockDim.x) {
    const int id = ids[s];
    if (id < 0 || id >= E)
      bad = 1;
    else
      atomicAdd(&cnt[id], 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int run = 0;
    for (int64_t e = 0; e < E; ++e) {
      next[e] = run;
      run += cnt[e];
      counts[e] = cnt[e];
    }
    counts[E] = bad;
  }
  __syncthreads();
  if (bad || threadIdx.x >= 32) return;
  // Warp 0 places slots in order, 32 at a time: equal ids within the 32 are ranked by lane.
  const unsigned lane = threadIdx.x;
  const unsigned lt = (1u << lane) - 1u;
  for (int64_t base = 0; base < n; base += 32) {
    const int64_t s = base + lane;
    const bool valid = s < n;
    const int id = valid ? ids[s] : -1;
    const unsigned peers = __match_any_sync(0xffffffffu, id);
    const int rank = __popc(peers & lt);
    if (valid) order[next[id] + rank] = static_cast<int32_t>(s);
    __syncwarp();
    if (valid && rank == 0) next[id] += __popc(peers);
    __syncwarp();
  }
}

}  // namespace

void moe_sort(const int32_t* ids, int64_t n_slots, int64_t n_experts, int32_t* order,
              int64_t* counts_dev, cudaStream_t stream) {
  if (n_experts <= 0) return;
  const size_t smem = static_cast<size_t>(2 * n_experts) * sizeof(int);
  if (smem > 48 * 1024)
    cudaFuncSetAttribute(moe_sort_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         static_cast<int>(smem));
  moe_sort_kernel<<<1, kThreads, smem, stream>>>(ids, n_slots, n_experts, order, counts_dev);
}

}  // namespace dpa::kernels
