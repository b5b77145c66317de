#include "kernels/common.cuh"
#include "kernels/moe_ep_layout.cuh"

namespace dpa::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 1024;

unsigned blocks_for(int64_t work, int64_t per_block) {
  const int64_t b = (work + per_block - 1) / per_block;
  return static_cast<unsigned>(b < 1 ? 1 : (b < kMaxBlocks ? b : kMaxBlocks));
}

// start[p] = the first sorted slot of peer p's experts, p <= n_peers (start[n_peers]: all).
__device__ void peer_starts(const int64_t* counts, int64_t n_peers, int64_t per_peer, int64_t* start) {
  for (int64_t p = threadIdx.x; p < n_peers; p += blockDim.x) {
    int64_t s = 0;
    for (int64_t e = p * per_peer; e < (p + 1) * per_peer; ++e) s += counts[e] > 0 ? counts[e] : 0;
    start[p + 1] = s;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    start[0] = 0;
    for (int64_t p = 1; p <= n_peers; ++p) start[p] += start[p - 1];
  }
  __syncthreads();
}

__global__ void __launch_bounds__(kThreads) ep_pack_kernel(const float* __restrict__ x, const int32_t* __restrict__ order,
                                                           int64_t x_div, const int64_t* __restrict__ counts,
                                                           int64_t n_peers, int64_t per_peer, int64_t capacity,
                                                           int64_t n_slots, int64_t d, float* __restrict__ send,
                                                           int32_t* __restrict__ slot_row) {
  extern __shared__ int64_t start[];  // [n_peers + 1]
  peer_starts(counts, n_peers, per_peer, start);
  for (int64_t j = blockIdx.x; j < n_slots; j += gridDim.x) {
    int64_t p = 0;  // the peer whose run holds j: the last with start[p] <= j
    for (int64_t lo = 0, hi = n_peers - 1; lo <= hi;) {
      const int64_t mid = (lo + hi) / 2;
      if (start[mid] <= j) p = mid, lo = mid + 1;
      else hi = mid - 1;
    }
    const int64_t i = j - start[p];
    const int64_t r = p * capacity + (i < capacity ? i : capacity - 1);
    const int32_t s = order[j];
    detail::copy_row(send + r * d, x + s / x_div * d, d);
    if (threadIdx.x == 0) slot_row[s] = static_cast<int32_t>(r);
  }
}

// Every block builds the tables in shared memory (E = n_peers * n_local counts), then writes its
// share of the received rows' order.
__global__ void __launch_bounds__(kThreads) ep_unpack_kernel(const int64_t* __restrict__ counts, int64_t n_peers,
                                                             int64_t n_local, int64_t capacity,
                                                             int64_t* __restrict__ local_counts,
                                                             int32_t* __restrict__ order) {
  extern __shared__ int32_t sh[];
  const int64_t E = n_peers * n_local;
  int32_t* c = sh;             // [p][e] counts, clamped
  int32_t* off = c + E;        // [p][e] row of (p, e)'s first row within p's block
  int32_t* base = off + E;     // [p][e] its first position in expert order
  int32_t* pos = base + E;     // [e] expert e's first position; [n_local]: the total
  for (int64_t p = threadIdx.x; p < n_peers; p += blockDim.x) {
    int64_t run = 0;
    for (int64_t e = 0; e < n_local; ++e) {
      int64_t v = counts[p * n_local + e];
      v = v < 0 ? 0 : (v > capacity - run ? capacity - run : v);
      c[p * n_local + e] = static_cast<int32_t>(v), off[p * n_local + e] = static_cast<int32_t>(run);
      run += v;
    }
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e < n_local; e += blockDim.x) {
    int64_t t = 0;
    for (int64_t p = 0; p < n_peers; ++p) t += c[p * n_local + e];
    pos[e + 1] = static_cast<int32_t>(t);
    if (blockIdx.x == 0) local_counts[e] = t;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    pos[0] = 0;
    for (int64_t e = 1; e <= n_local; ++e) pos[e] += pos[e - 1];
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e < n_local; e += blockDim.x) {
    int32_t b = pos[e];
    for (int64_t p = 0; p < n_peers; ++p) base[p * n_local + e] = b, b += c[p * n_local + e];
  }
  __syncthreads();
  const int64_t total = pos[n_local];
  for (int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < total;
       q += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t e = 0;  // the last expert with pos[e] <= q (empty experts share the next one's start)
    for (int64_t lo = 0, hi = n_local - 1; lo <= hi;) {
      const int64_t mid = (lo + hi) / 2;
      if (pos[mid] <= q) e = mid, lo = mid + 1;
      else hi = mid - 1;
    }
    int64_t p = 0;
    while (p + 1 < n_peers && base[(p + 1) * n_local + e] <= q) ++p;
    order[q] = static_cast<int32_t>(p * capacity + off[p * n_local + e] + (q - base[p * n_local + e]));
  }
}

}  // namespace

void moe_ep_pack(const float* x, const int32_t* order, int64_t x_div, const int64_t* counts, int64_t n_peers,
                 int64_t experts_per_peer, int64_t capacity, int64_t n_slots, int64_t d, float* send,
                 int32_t* slot_row, cudaStream_t stream) {
  if (n_slots <= 0 || d <= 0) return;
  const std::size_t smem = static_cast<std::size_t>(n_peers + 1) * sizeof(int64_t);
  ep_pack_kernel<<<blocks_for(n_slots, 1), kThreads, smem, stream>>>(x, order, x_div, counts, n_peers, experts_per_peer,
                                                                      capacity, n_slots, d, send, slot_row);
}

void moe_ep_unpack(const int64_t* counts, int64_t n_peers, int64_t n_local, int64_t capacity,
                   int64_t* local_counts, int32_t* order, cudaStream_t stream) {
  if (n_peers <= 0 || n_local <= 0) return;
  const std::size_t smem = static_cast<std::size_t>(3 * n_peers * n_local + n_local + 1) * sizeof(int32_t);
  ep_unpack_kernel<<<blocks_for(n_peers * capacity, kThreads), kThreads, smem, stream>>>(counts, n_peers, n_local,
                                                                                         capacity, local_counts, order);
}

}  // namespace dpa::kernels
