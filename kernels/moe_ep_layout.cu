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

__device__ __forceinline__ void store_release_sys(int64_t* p, int64_t v) {
  asm volatile("st.release.sys.global.s64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}
__device__ __forceinline__ int64_t load_acquire_sys(const int64_t* p) {
  int64_t v;
  asm volatile("ld.acquire.sys.global.s64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}

// Once every block of the grid got here: *seq (+ 1) into every peer's flag of mine, the
// grid's stores before it (the last block to arrive signals).
__device__ void signal_peers(const EpPeers& pe, int64_t n_peers, bool increment) {
  __syncthreads();
  if (threadIdx.x != 0) return;
  __threadfence_system();
  if (atomicAdd(pe.done, 1) != static_cast<int32_t>(gridDim.x) - 1) return;
  atomicExch(pe.done, 0);
  __threadfence_system();
  const int64_t v = *pe.seq + (increment ? 1 : 0);
  for (int64_t p = 0; p < n_peers; ++p) store_release_sys(pe.flags[p], v);
  if (increment) *pe.seq = v;
}

// kPeers: rows into the peers' areas (blocks[p]), headers too, then the flags; else into `send`.
// Rows of T (float, or __nv_bfloat16: the values rounded).
template <bool kPeers, typename T>
__global__ void __launch_bounds__(kThreads) ep_pack_kernel(const float* __restrict__ x, const int32_t* __restrict__ order,
                                                           int64_t x_div, const int64_t* __restrict__ counts,
                                                           int64_t n_peers, int64_t per_peer, int64_t capacity,
                                                           int64_t stride, int64_t n_slots, int64_t d,
                                                           T* __restrict__ send, EpPeers peers,
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
    const int64_t i0 = j - start[p], i = i0 < capacity ? i0 : capacity - 1;
    const int32_t s = order[j];
    T* dst = kPeers ? reinterpret_cast<T*>(peers.blocks[p]) + i * d : send + (p * stride + i) * d;
    detail::copy_row(dst, x + s / x_div * d, d);
    if (threadIdx.x == 0) slot_row[s] = static_cast<int32_t>(p * stride + i);
  }
  if constexpr (kPeers) {
    for (int64_t p = blockIdx.x; p < n_peers; p += gridDim.x) {
      int64_t* header = reinterpret_cast<int64_t*>(reinterpret_cast<T*>(peers.blocks[p]) + capacity * d);
      for (int64_t e = threadIdx.x; e < per_peer; e += blockDim.x) header[e] = counts[p * per_peer + e];
    }
    signal_peers(peers, n_peers, true);
  }
}

__global__ void __launch_bounds__(kThreads) ep_return_kernel(const float* __restrict__ results,
                                                             const int64_t* __restrict__ counts, int64_t n_peers,
                                                             int64_t per_peer, int64_t capacity, int64_t stride,
                                                             int64_t d, EpPeers peers) {
  extern __shared__ int64_t rows[];  // [n_peers]: the rows source p sent
  for (int64_t p = threadIdx.x; p < n_peers; p += blockDim.x) {
    int64_t r = 0;
    for (int64_t e = 0; e < per_peer; ++e) r += counts[p * per_peer + e] > 0 ? counts[p * per_peer + e] : 0;
    rows[p] = r < capacity ? r : capacity;
  }
  __syncthreads();
  for (int64_t r = blockIdx.x; r < n_peers * capacity; r += gridDim.x) {
    const int64_t p = r / capacity, i = r - p * capacity;
    if (i < rows[p]) detail::copy_row(peers.blocks[p] + i * d, results + (p * stride + i) * d, d);
  }
  signal_peers(peers, n_peers, false);
}

__global__ void ep_wait_kernel(const int64_t* flags, int64_t n, const int64_t* seq) {
  const int64_t v = *seq;
  for (int64_t p = threadIdx.x; p < n; p += blockDim.x)
    while (load_acquire_sys(flags + p) < v) __nanosleep(64);
  __threadfence();
}

// Every block builds the tables in shared memory (E = n_peers * n_local counts), then writes its
// share of the received rows' order.
// counts: source p's at counts + p * src_stride. flags: null, or wait until each reaches *seq
// first (the peer form: the counts are the blocks' headers); counts_out: their copy (block 0).
__global__ void __launch_bounds__(kThreads) ep_unpack_kernel(const int64_t* counts, int64_t src_stride,
                                                             const int64_t* flags, const int64_t* seq,
                                                             int64_t* __restrict__ counts_out, int64_t n_peers,
                                                             int64_t n_local, int64_t capacity,
                                                             int64_t* __restrict__ local_counts,
                                                             int32_t* __restrict__ order) {
  extern __shared__ int32_t sh[];
  if (flags) {
    const int64_t v = *seq;
    for (int64_t p = threadIdx.x; p < n_peers; p += blockDim.x)
      while (load_acquire_sys(flags + p) < v) __nanosleep(64);
    __threadfence();
    __syncthreads();
  }
  const int64_t E = n_peers * n_local;
  int32_t* c = sh;             // [p][e] counts, clamped
  int32_t* off = c + E;        // [p][e] row of (p, e)'s first row within p's block
  int32_t* base = off + E;     // [p][e] its first position in expert order
  int32_t* pos = base + E;     // [e] expert e's first position; [n_local]: the total
  for (int64_t p = threadIdx.x; p < n_peers; p += blockDim.x) {
    int64_t run = 0;
    for (int64_t e = 0; e < n_local; ++e) {
      int64_t v = counts[p * src_stride + e];
      if (counts_out && blockIdx.x == 0) counts_out[p * n_local + e] = v;
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
                 int64_t experts_per_peer, int64_t capacity, int64_t n_slots, int64_t d, void* send,
                 int32_t* slot_row, bool bf16, cudaStream_t stream) {
  if (n_slots <= 0 || d <= 0) return;
  const std::size_t smem = static_cast<std::size_t>(n_peers + 1) * sizeof(int64_t);
  if (bf16)
    ep_pack_kernel<false, __nv_bfloat16><<<blocks_for(n_slots, 1), kThreads, smem, stream>>>(
        x, order, x_div, counts, n_peers, experts_per_peer, capacity, capacity, n_slots, d,
        static_cast<__nv_bfloat16*>(send), EpPeers{}, slot_row);
  else
    ep_pack_kernel<false, float><<<blocks_for(n_slots, 1), kThreads, smem, stream>>>(
        x, order, x_div, counts, n_peers, experts_per_peer, capacity, capacity, n_slots, d, static_cast<float*>(send),
        EpPeers{}, slot_row);
}

void moe_ep_unpack(const int64_t* counts, int64_t n_peers, int64_t n_local, int64_t capacity,
                   int64_t* local_counts, int32_t* order, cudaStream_t stream) {
  if (n_peers <= 0 || n_local <= 0) return;
  const std::size_t smem = static_cast<std::size_t>(3 * n_peers * n_local + n_local + 1) * sizeof(int32_t);
  ep_unpack_kernel<<<blocks_for(n_peers * capacity, kThreads), kThreads, smem, stream>>>(
      counts, n_local, nullptr, nullptr, nullptr, n_peers, n_local, capacity, local_counts, order);
}

void moe_ep_pack_peers(const float* x, const int32_t* order, int64_t x_div, const int64_t* counts, int64_t n_peers,
                       int64_t experts_per_peer, int64_t capacity, int64_t stride, int64_t n_slots, int64_t d,
                       const EpPeers& peers, int32_t* slot_row, bool bf16, cudaStream_t stream) {
  const std::size_t smem = static_cast<std::size_t>(n_peers + 1) * sizeof(int64_t);
  if (bf16)
    ep_pack_kernel<true, __nv_bfloat16><<<blocks_for(n_slots, 1), kThreads, smem, stream>>>(
        x, order, x_div, counts, n_peers, experts_per_peer, capacity, stride, n_slots, d, nullptr, peers, slot_row);
  else
    ep_pack_kernel<true, float><<<blocks_for(n_slots, 1), kThreads, smem, stream>>>(
        x, order, x_div, counts, n_peers, experts_per_peer, capacity, stride, n_slots, d, nullptr, peers, slot_row);
}

void moe_ep_unpack_peers(const void* area, const int64_t* flags, const int64_t* seq, int64_t n_peers,
                         int64_t experts_per_peer, int64_t capacity, int64_t stride, int64_t row_bytes,
                         int64_t* counts, int64_t* local_counts, int32_t* order, cudaStream_t stream) {
  if (n_peers <= 0 || experts_per_peer <= 0) return;
  const std::size_t smem = static_cast<std::size_t>(3 * n_peers * experts_per_peer + experts_per_peer + 1) * sizeof(int32_t);
  // Source p's header: int64s at byte (p * stride + capacity) * row_bytes (a multiple of 8: aligned).
  const auto* headers = reinterpret_cast<const int64_t*>(static_cast<const char*>(area) + capacity * row_bytes);
  ep_unpack_kernel<<<blocks_for(n_peers * stride, kThreads), kThreads, smem, stream>>>(
      headers, stride * row_bytes / 8, flags, seq, counts, n_peers, experts_per_peer, stride, local_counts, order);
}

void moe_ep_return_peers(const float* results, const int64_t* counts, int64_t n_peers, int64_t experts_per_peer,
                         int64_t capacity, int64_t stride, int64_t d, const EpPeers& peers, cudaStream_t stream) {
  const std::size_t smem = static_cast<std::size_t>(n_peers) * sizeof(int64_t);
  ep_return_kernel<<<blocks_for(n_peers * capacity, 1), kThreads, smem, stream>>>(
      results, counts, n_peers, experts_per_peer, capacity, stride, d, peers);
}

void moe_ep_wait(const int64_t* flags, int64_t n, const int64_t* seq, cudaStream_t stream) {
  ep_wait_kernel<<<1, 64, 0, stream>>>(flags, n, seq);
}

}  // namespace dpa::kernels
