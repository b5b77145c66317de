// Hopper's bulk copy engine (TMA, 1-D form) and the shared-memory barriers its copies complete
// on (included by .cu files only). A copy of `bytes` (a multiple of 16; both addresses 16-byte
// aligned) from global to shared memory counts its bytes off the barrier's expected
// transaction count; a thread waits for the barrier's phase to flip. sm_90+: on older
// architectures these trap, and callers do not pick the kernels that use them.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common.cuh"

namespace dpa::kernels::detail {

// Whether the current device has the bulk copy engine (compute capability 9.0+), asked once.
inline bool has_bulk_copy() {
  static const bool yes = device_attribute(cudaDevAttrComputeCapabilityMajor, 0) >= 9;
  return yes;
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
#define DPA_BULK_ASM(...) __trap()
#else
#define DPA_BULK_ASM(...) asm volatile(__VA_ARGS__)
#endif

// One arrival per phase expected; fence so that the async proxy sees the initialised barrier.
__device__ __forceinline__ void mbar_init(uint64_t* bar, unsigned count) {
  DPA_BULK_ASM("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_init_fence() {
  DPA_BULK_ASM("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
// Arrive (the phase's one arrival) and expect `bytes` of copies to complete on the barrier.
__device__ __forceinline__ void mbar_arrive_expect(uint64_t* bar, unsigned bytes) {
  DPA_BULK_ASM("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(bytes)
               : "memory");
}
// Waits until the phase of parity `parity` has completed.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, unsigned parity) {
  DPA_BULK_ASM(
      "{\n"
      ".reg .pred P1;\n"
      "LAB_WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1;\n"
      "@P1 bra DONE;\n"
      "bra LAB_WAIT;\n"
      "DONE:\n"
      "}\n" ::"r"(smem_addr(bar)),
      "r"(parity)
      : "memory");
}
// Orders this thread's earlier generic-proxy accesses of shared memory before its later bulk
// copies into it.
__device__ __forceinline__ void fence_proxy_async() {
  DPA_BULK_ASM("fence.proxy.async.shared::cta;\n" ::: "memory");
}
__device__ __forceinline__ void bulk_load(void* dst, const void* src, unsigned bytes, uint64_t* bar) {
  DPA_BULK_ASM(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
          smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(smem_addr(bar))
      : "memory");
}

// Named barrier `id` (1..15; 0 is __syncthreads) for `n` threads, whole warps, converged.
__device__ __forceinline__ void named_sync(int id, int n) {
  DPA_BULK_ASM("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}
// One arrival on the barrier (no transaction bytes).
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  DPA_BULK_ASM("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
}
// The box at (c0, c1) (c0 the inner, contiguous coordinate) of the 2-D tensor that `map` (a
// CUtensorMap in global, constant or __grid_constant__ parameter memory) describes, into shared
// memory at dst in the map's swizzled layout; its bytes count off `bar`.
__device__ __forceinline__ void tma_load_2d(void* dst, const void* map, int c0, int c1, uint64_t* bar) {
  DPA_BULK_ASM(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
          smem_addr(dst)),
      "l"(map), "r"(c0), "r"(c1), "r"(smem_addr(bar))
      : "memory");
}

// The same, with an L2 cache policy (from l2_evict_first()): for data read once.
__device__ __forceinline__ void tma_load_2d(void* dst, const void* map, int c0, int c1, uint64_t* bar, uint64_t policy) {
  DPA_BULK_ASM(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1, {%2, %3}], [%4], %5;\n" ::"r"(
          smem_addr(dst)),
      "l"(map), "r"(c0), "r"(c1), "r"(smem_addr(bar)), "l"(policy)
      : "memory");
}
// An L2 policy that evicts the lines it brings in first.
__device__ __forceinline__ uint64_t l2_evict_first() {
  uint64_t policy = 0;
  DPA_BULK_ASM("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
  return policy;
}

#undef DPA_BULK_ASM

}  // namespace dpa::kernels::detail
