// Issue 6, target 1 (what limits the MLA decode kernel at 128 heads): the rate of Hopper's
// warpgroup MMA with both operands in shared memory, by shape alone. The decode kernel's scores
// are chains of 36 dependent wgmma (k = 576 / 16) into one small accumulator (N = 32 rows of the
// cache tile a warpgroup); its P·V is 4 wgmma of N = 256. Question it answers: is a chain of small
// instructions bound by the tensor pipe's rate, by shared-memory bandwidth, or by the latency of
// each instruction waiting for the previous one's accumulator; and do independent chains (or a
// second warpgroup) fill the gaps?
//
// One block an SM (the shared memory forces it), 1 or 2 warpgroups, each running `reps` rounds
// of: `chains` independent accumulators, each fed `len` / `chains` k-steps, the instructions
// issued k-step by k-step across the chains, then one commit and wait (as the kernel does a tile);
// the rounds all add to the accumulators. Checks first that the chains' sum is (rounds) A B^T over
// all k-steps (small integers, exact in fp32) for every warpgroup, then times (CUDA events, median of 9 after a warm-up) and prints cycles a
// wgmma a warpgroup (clock64, SM 0) and the whole GPU's TFLOP/s.
//   wgmma_rate_bench
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <vector>

#include "gpu_ceilings.h"
#include "kernels/wgmma.cuh"

namespace {

using dpa::kernels::detail::sw128_desc;
using dpa::kernels::detail::sw128_offset;

constexpr int kK = 576;                 // k extent (the MLA cache row: latent 512 + rope 64)
constexpr int kBlocks = kK / 64;        // 64-column blocks of A and B
constexpr unsigned kABytes = 64 * 128;  // one column block of A: 64 rows x 128 bytes
constexpr int kReps = 256;

template <int N>
__device__ __forceinline__ void mma(float (&d)[N / 2], uint64_t a, uint64_t b, int scale_d) {
  if constexpr (N == 32) dpa::kernels::detail::wgmma_m64n32k16(d, a, b, scale_d);
  else if constexpr (N == 64) dpa::kernels::detail::wgmma_m64n64k16(d, a, b, scale_d);
  else dpa::kernels::detail::wgmma_m64n256k16<0>(d, a, b, scale_d);
}

// A [64][kK] and B [N][kK] bf16 from global (row-major) into shared memory as 128-byte swizzled
// column blocks; then the rounds. out: each warpgroup's D (its chains summed) [wg][64][N] as
// fragments are laid out (thread t's registers in order); cycles: SM 0's warpgroup 0.
template <int N, int kChains, int kLen>
__global__ void __launch_bounds__(256, 1) rate_kernel(const __nv_bfloat16* a, const __nv_bfloat16* b, float* out,
                                                      long long* cycles) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned char* sm = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  constexpr int kBRows = N < 64 ? 64 : N;  // B blocks keep 64-row strides (the decode tile's)
  unsigned char* as = sm;
  unsigned char* bs = sm + kBlocks * kABytes;
  constexpr unsigned kBBlock = kBRows * 128;
  for (int e = threadIdx.x; e < 64 * kK / 8; e += blockDim.x) {
    const int r = e / (kK / 8), c = e % (kK / 8);
    *reinterpret_cast<uint4*>(as + (c >> 3) * kABytes + sw128_offset(r, 8 * (c & 7))) =
        reinterpret_cast<const uint4*>(a + r * kK)[c];
  }
  for (int e = threadIdx.x; e < N * kK / 8; e += blockDim.x) {
    const int r = e / (kK / 8), c = e % (kK / 8);
    if ((c >> 3) * kBBlock + kBBlock > 200 * 1024 - kBlocks * kABytes) continue;  // N = 256: the first blocks
    *reinterpret_cast<uint4*>(bs + (c >> 3) * kBBlock + sw128_offset(r, 8 * (c & 7))) =
        reinterpret_cast<const uint4*>(b + r * kK)[c];
  }
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  __syncthreads();

  const unsigned a_addr = static_cast<unsigned>(__cvta_generic_to_shared(as));
  const unsigned b_addr = static_cast<unsigned>(__cvta_generic_to_shared(bs));
  float d[kChains][N / 2];
  long long t0 = 0;
  for (int rep = 0; rep < kReps + 1; ++rep) {
    if (rep == 1) t0 = clock64();  // round 0 warms up
    dpa::kernels::detail::wgmma_fence();
#pragma unroll
    for (int k = 0; k < kLen; ++k) {
      const unsigned off_a = (k >> 2) * kABytes + (k & 3) * 32, off_b = (k >> 2) * kBBlock + (k & 3) * 32;
      mma<N>(d[k % kChains], sw128_desc(a_addr + off_a, 16, 1024), sw128_desc(b_addr + off_b, 16, 1024),
             rep > 0 || k >= kChains);
    }
    dpa::kernels::detail::wgmma_commit();
    dpa::kernels::detail::wgmma_wait<0>();
#pragma unroll
    for (int c = 0; c < kChains; ++c) dpa::kernels::detail::wgmma_fence_operands(d[c]);
  }
  const long long t1 = clock64();
  if (blockIdx.x == 0 && threadIdx.x == 0) *cycles = t1 - t0;
  if (blockIdx.x == 0) {
    for (int i = 0; i < N / 2; ++i) {
      float s = 0;
#pragma unroll
      for (int c = 0; c < kChains; ++c) s += d[c][i];
      out[static_cast<long>(threadIdx.x) * (N / 2) + i] = s;
    }
  }
}

// Element (row, col) of a warpgroup's D held by thread t (of 128) at register i: the wgmma
// accumulator layout (warp w: rows 16 w ..; lane: g = lane / 4 rows g and g + 8, q = lane % 4
// columns 8 j + 2 q, + 1).
void fragment_position(int t, int i, int& row, int& col) {
  const int w = t / 32, lane = t % 32, g = lane / 4, q = lane % 4, j = i / 4, e = i % 4;
  row = 16 * w + g + (e >= 2 ? 8 : 0);
  col = 8 * j + 2 * q + (e & 1);
}

struct Result {
  bool ok;
  double cycles_per_mma, tflops;
};

template <int N, int kChains, int kLen>
Result run(int wgs, int sms, const __nv_bfloat16* a, const __nv_bfloat16* b, const std::vector<float>& ha,
           const std::vector<float>& hb) {
  constexpr std::size_t kSmem = 1024 + 200 * 1024;
  auto kernel = rate_kernel<N, kChains, kLen>;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmem));
  float* out = nullptr;
  long long* cycles = nullptr;
  cudaMalloc(&out, 256 * (N / 2) * sizeof(float));
  cudaMalloc(&cycles, sizeof(long long));
  kernel<<<sms, 128 * wgs, kSmem>>>(a, b, out, cycles);
  std::vector<float> got(static_cast<std::size_t>(128 * wgs) * (N / 2));
  cudaMemcpy(got.data(), out, got.size() * sizeof(float), cudaMemcpyDeviceToHost);
  Result r{cudaGetLastError() == cudaSuccess, 0, 0};
  for (int t = 0; t < 128 * wgs && r.ok; ++t)
    for (int i = 0; i < N / 2; ++i) {
      int row, col;
      fragment_position(t % 128, i, row, col);
      double ref = 0;
      for (int k = 0; k < 16 * kLen; ++k) ref += static_cast<double>(ha[row * kK + k]) * hb[col * kK + k];
      ref *= kReps + 1;  // every round adds to the accumulators (so none of them is dead code)
      if (got[static_cast<std::size_t>(t) * (N / 2) + i] != static_cast<float>(ref)) {
        std::fprintf(stderr, "N %d chains %d: wg %d (%d, %d) got %g want %g\n", N, kChains, t / 128, row, col,
                     got[static_cast<std::size_t>(t) * (N / 2) + i], ref);
        r.ok = false;
        break;
      }
    }
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<double> ms;
  for (int i = 0; i < 10; ++i) {
    cudaEventRecord(e0);
    kernel<<<sms, 128 * wgs, kSmem>>>(a, b, out, cycles);
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float t = 0;
    cudaEventElapsedTime(&t, e0, e1);
    if (i > 0) ms.push_back(t);
  }
  long long cyc = 0;
  cudaMemcpy(&cyc, cycles, sizeof(cyc), cudaMemcpyDeviceToHost);
  r.cycles_per_mma = static_cast<double>(cyc) / (static_cast<double>(kReps) * kLen);
  const double flops = 2.0 * 64 * N * 16 * kLen * static_cast<double>(kReps + 1) * wgs * sms;
  r.tflops = flops / (dpa::perf::median(ms) * 1e-3) / 1e12;
  cudaFree(out);
  cudaFree(cycles);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return r;
}

}  // namespace

int main() {
  cudaDeviceProp prop;
  if (!dpa::perf::first_gpu("wgmma_rate_bench", prop)) return 77;
  if (prop.major != 9) {
    std::fprintf(stderr, "wgmma_rate_bench: needs sm_90 (found %d.%d)\n", prop.major, prop.minor);
    return 77;
  }
  const int sms = prop.multiProcessorCount;
  // Small integers (-2 .. 2): products and sums exact in fp32.
  std::vector<float> ha(64 * kK), hb(256 * kK);
  std::vector<__nv_bfloat16> ba(ha.size()), bb(hb.size());
  for (std::size_t i = 0; i < ha.size(); ++i) ha[i] = static_cast<float>(static_cast<int>((i * 7 + 3) % 5) - 2);
  for (std::size_t i = 0; i < hb.size(); ++i) hb[i] = static_cast<float>(static_cast<int>((i * 11 + 1) % 5) - 2);
  for (std::size_t i = 0; i < ha.size(); ++i) ba[i] = __float2bfloat16(ha[i]);
  for (std::size_t i = 0; i < hb.size(); ++i) bb[i] = __float2bfloat16(hb[i]);
  __nv_bfloat16 *a = nullptr, *b = nullptr;
  cudaMalloc(&a, ba.size() * sizeof(__nv_bfloat16));
  cudaMalloc(&b, bb.size() * sizeof(__nv_bfloat16));
  cudaMemcpy(a, ba.data(), ba.size() * sizeof(__nv_bfloat16), cudaMemcpyHostToDevice);
  cudaMemcpy(b, bb.data(), bb.size() * sizeof(__nv_bfloat16), cudaMemcpyHostToDevice);

  std::printf("wgmma rate, both operands in shared memory (128-byte swizzle), %d SMs, %s\n", sms, prop.name);
  std::printf("%-6s %-7s %-6s %-4s %-5s %18s %9s\n", "shape", "k-steps", "chains", "wgs", "check",
              "cycles/wgmma/wg", "TFLOP/s");
  bool all_ok = true;
  auto line = [&](const char* shape, int len, int chains, int wgs, Result r) {
    all_ok = all_ok && r.ok;
    std::printf("%-6s %-7d %-6d %-4d %-5s %18.1f %9.1f\n", shape, len, chains, wgs, r.ok ? "ok" : "FAIL",
                r.cycles_per_mma, r.tflops);
    std::printf("{\"bench\":\"wgmma_rate\",\"shape\":\"%s\",\"k_steps\":%d,\"chains\":%d,\"warpgroups\":%d,"
                "\"ok\":%s,\"cycles_per_wgmma\":%.2f,\"tflops\":%.1f}\n",
                shape, len, chains, wgs, r.ok ? "true" : "false", r.cycles_per_mma, r.tflops);
  };
  for (int wgs = 1; wgs <= 2; ++wgs) {
    line("n32", 36, 1, wgs, run<32, 1, 36>(wgs, sms, a, b, ha, hb));
    line("n32", 36, 2, wgs, run<32, 2, 36>(wgs, sms, a, b, ha, hb));
    line("n32", 36, 4, wgs, run<32, 4, 36>(wgs, sms, a, b, ha, hb));
    line("n64", 36, 1, wgs, run<64, 1, 36>(wgs, sms, a, b, ha, hb));
    line("n64", 36, 2, wgs, run<64, 2, 36>(wgs, sms, a, b, ha, hb));
    line("n64", 36, 4, wgs, run<64, 4, 36>(wgs, sms, a, b, ha, hb));
    line("n256", 4, 1, wgs, run<256, 1, 4>(wgs, sms, a, b, ha, hb));
    line("n256", 16, 1, wgs, run<256, 1, 16>(wgs, sms, a, b, ha, hb));
  }
  cudaFree(a);
  cudaFree(b);
  return all_ok ? 0 : 1;
}
