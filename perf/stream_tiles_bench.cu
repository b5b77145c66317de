// Issue 6, target 4 (what limits the weight-streaming kernels): how fast cp.async streams a bf16
// weight matrix into shared memory as a function of the tile shape alone: rows a tile, contiguous
// bytes a row a tile (seg), stages in flight, blocks an SM (set by the shared memory a block
// takes), each block streaming a whole row panel of K as the expert and small-row linear kernels
// do, and nothing else (no MMA, no activations). Question it answers: do those kernels (128 rows x
// 128 B tiles, 3 in flight, two blocks an SM) lose bandwidth to the shape of their loads, or to
// what they do besides? 512 MB of weights (the 50 MB L2 holds none), rows of 4 KB (V2-Lite's
// 2,048 bf16). Checks first that every block saw its bytes (a checksum of one word a tile per
// block against the host's), then times each shape (CUDA events, median of 9 after one warm-up)
// against a plain vectorized read of the same bytes.
//   stream_tiles_bench
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "gpu_ceilings.h"

namespace {

constexpr long kRowBytes = 4096;
constexpr long kRows = 128L * 1024;
constexpr int kThreads = 128;

__device__ __forceinline__ void cp16(void* s, const void* g) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(s));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(a), "l"(g));
}
__device__ __forceinline__ void commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void wait_groups() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Word (4 bytes) i of the matrix holds i mod 4093 (a prime: no two words of a tile alike by shape).
__global__ void fill(uint32_t* w, long words) {
  for (long i = blockIdx.x * 256L + threadIdx.x; i < words; i += static_cast<long>(gridDim.x) * 256)
    w[i] = static_cast<uint32_t>(i % 4093);
}

// A block streams rows [blockIdx.x * kR, +kR) over all of K in kR x kSeg tiles, kSt stages, the
// k loop of kernels/mma.cuh's pipeline; thread 0 sums word 0 of every tile it sees.
template <int kR, int kSeg, int kSt>
__global__ void __launch_bounds__(kThreads) stream(const char* __restrict__ w, unsigned long long* sums) {
  extern __shared__ __align__(16) char smem[];
  constexpr int kTiles = kRowBytes / kSeg, kChunks = kR * kSeg / 16;
  const long r0 = static_cast<long>(blockIdx.x) * kR;
  auto load = [&](int st, int t) {
    char* d = smem + st * kR * kSeg;
    for (int c = threadIdx.x; c < kChunks; c += kThreads) {
      const int r = c / (kSeg / 16), k = (c % (kSeg / 16)) * 16;
      cp16(d + r * kSeg + k, w + (r0 + r) * kRowBytes + static_cast<long>(t) * kSeg + k);
    }
  };
  unsigned long long sum = 0;
  for (int s = 0; s < kSt - 1; ++s) {
    if (s < kTiles) load(s, s);
    commit();
  }
  for (int t = 0; t < kTiles; ++t) {
    wait_groups<kSt - 2>();
    __syncthreads();
    const int nx = t + kSt - 1;
    if (nx < kTiles) load(nx % kSt, nx);
    commit();
    if (threadIdx.x == 0) sum += *reinterpret_cast<const uint32_t*>(smem + (t % kSt) * kR * kSeg);
  }
  wait_groups<0>();
  if (threadIdx.x == 0) sums[blockIdx.x] = sum;
}

__global__ void plain_read(const int4* __restrict__ p, long n, int* out) {
  int acc = 0;
  for (long i = blockIdx.x * 256L + threadIdx.x; i < n; i += static_cast<long>(gridDim.x) * 256) {
    const int4 v = __ldcs(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x7fffffff) out[0] = acc;  // keeps the loads
}

const char* g_w = nullptr;
unsigned long long* g_sums = nullptr;

// One shape at (about) `per_sm` blocks an SM: the block's shared memory padded to a share of the
// SM's. False when its checksums are wrong.
template <int kR, int kSeg, int kSt>
bool run(int per_sm, double plain_gbs) {
  const int need = kSt * kR * kSeg;
  const int smem = std::max(need, std::min(227 * 1024, 228 * 1024 / per_sm - 1024));
  cudaFuncSetAttribute(stream<kR, kSeg, kSt>, cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024);
  int occ = 0;
  cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, stream<kR, kSeg, kSt>, kThreads, smem);
  const unsigned blocks = static_cast<unsigned>(kRows / kR);
  cudaMemset(g_sums, 0, blocks * sizeof(unsigned long long));
  stream<kR, kSeg, kSt><<<blocks, kThreads, smem>>>(g_w, g_sums);
  std::vector<unsigned long long> got(blocks);
  cudaMemcpy(got.data(), g_sums, blocks * sizeof(unsigned long long), cudaMemcpyDeviceToHost);
  bool ok = cudaGetLastError() == cudaSuccess;
  for (unsigned b = 0; ok && b < blocks; b += 97) {
    unsigned long long want = 0;
    for (long t = 0; t < kRowBytes / kSeg; ++t) want += ((b * kR * kRowBytes + t * kSeg) / 4) % 4093;
    ok = got[b] == want;
  }
  if (!ok) {
    std::printf("rows %3d seg %4d B stages %d: CHECK FAILED\n", kR, kSeg, kSt);
    return false;
  }
  const double ms =
      dpa::perf::median_ms([&] { stream<kR, kSeg, kSt><<<blocks, kThreads, smem>>>(g_w, g_sums); }, 9, 1);
  const double gbs = kRows * kRowBytes / (ms * 1e-3) / 1e9;
  std::printf("%-5d %-8d %-7d %-10d %-9.1f %.0f%%\n", kR, kSeg, kSt, occ, gbs, 100.0 * gbs / plain_gbs);
  return true;
}

}  // namespace

int main() {
  cudaDeviceProp prop{};
  if (!dpa::perf::first_gpu("stream_tiles_bench", prop)) return 77;
  char* w = nullptr;
  int* sink = nullptr;
  if (cudaMalloc(&w, kRows * kRowBytes) != cudaSuccess || cudaMalloc(&g_sums, kRows * 8) != cudaSuccess ||
      cudaMalloc(&sink, 64) != cudaSuccess) {
    std::fprintf(stderr, "stream_tiles_bench: out of GPU memory\n");
    return 1;
  }
  g_w = w;
  fill<<<prop.multiProcessorCount * 8, 256>>>(reinterpret_cast<uint32_t*>(w), kRows * kRowBytes / 4);
  const double ms = dpa::perf::median_ms(
      [&] {
        plain_read<<<prop.multiProcessorCount * 8, 256>>>(reinterpret_cast<const int4*>(w), kRows * kRowBytes / 16,
                                                          sink);
      },
      9, 1);
  const double plain = kRows * kRowBytes / (ms * 1e-3) / 1e9;
  std::printf("stream_tiles_bench on %s: 512 MB, rows of %ld B; plain vectorized read %.1f GB/s\n", prop.name,
              kRowBytes, plain);
  std::printf("%-5s %-8s %-7s %-10s %-9s %s\n", "rows", "seg (B)", "stages", "blocks/SM", "GB/s", "of plain");
  bool ok = true;
  for (int per_sm : {1, 2, 4}) {
    ok &= run<128, 128, 3>(per_sm, plain);  // the expert kernels' weight tile
    ok &= run<128, 128, 4>(per_sm, plain);
    ok &= run<128, 128, 6>(per_sm, plain);
    ok &= run<128, 256, 3>(per_sm, plain);
    ok &= run<64, 128, 4>(per_sm, plain);  // the small-row linear kernel's
    ok &= run<64, 256, 4>(per_sm, plain);
    ok &= run<64, 512, 3>(per_sm, plain);
    ok &= run<32, 512, 4>(per_sm, plain);
    ok &= run<16, 1024, 4>(per_sm, plain);
  }
  cudaFree(w), cudaFree(g_sums), cudaFree(sink);
  return ok ? 0 : 1;
}
