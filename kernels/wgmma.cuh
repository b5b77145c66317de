// Hopper warpgroup MMA (wgmma, sm_90a) for the kernels that use it: shared-memory matrix
// descriptors for the 128-byte swizzled layout, the fences and group waits, and the shapes the
// MLA decode kernel and the wgmma rate bench issue. A tile in that layout is [rows][64 bf16]
// (128-byte rows) whose 16-byte chunk j of row r sits at chunk j ^ (r % 8), 8-row groups 1024
// bytes apart, the tile 1024-byte aligned. On other architectures these trap; callers do not
// pick kernels using them.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace dpa::kernels::detail {

#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)  // wgmma: sm_90a only
#define DPA_WGMMA_ASM(...) __trap()
#else
#define DPA_WGMMA_ASM(...) asm volatile(__VA_ARGS__)
#endif

// Byte offset of element (row, col) of a [rows][64] bf16 tile in the 128-byte swizzled layout.
__host__ __device__ constexpr unsigned sw128_offset(int row, int col) {
  return static_cast<unsigned>(row * 128 + ((((col >> 3) ^ (row & 7)) << 4) | ((col & 7) << 1)));
}

// Descriptor of a 128-byte swizzled operand at shared address `addr`: `lbo` the byte stride
// between 64-element column blocks along M / N (N-major operands; K-major ones ignore it),
// `sbo` between 8-row groups (K-major: along M / N; N-major: along K).
__device__ __forceinline__ uint64_t sw128_desc(unsigned addr, unsigned lbo, unsigned sbo) {
  return static_cast<uint64_t>((addr & 0x3FFFFu) >> 4) | (static_cast<uint64_t>((lbo >> 4) & 0x3FFFu) << 16) |
         (static_cast<uint64_t>((sbo >> 4) & 0x3FFFu) << 32) | (1ull << 62);
}

// The descriptor of the operand `bytes` further on from the one `d` describes (the same strides):
// the start address field holds address / 16 in its low 14 bits, and shared addresses stay below
// 256 KB, so the field never carries. One add instead of rebuilding the descriptor's fields.
__device__ __forceinline__ uint64_t desc_add(uint64_t d, unsigned bytes) {
  return (d & 0xFFFFFFFF00000000ull) | static_cast<uint32_t>(static_cast<uint32_t>(d) + (bytes >> 4));
}

// Orders this thread's register writes of accumulators before the warpgroup's next wgmma.
__device__ __forceinline__ void wgmma_fence() { DPA_WGMMA_ASM("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { DPA_WGMMA_ASM("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most N committed groups of this warpgroup are pending.
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  DPA_WGMMA_ASM("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from moving reads or writes of accumulators across a wgmma section.
template <int N>
__device__ __forceinline__ void wgmma_fence_operands(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

template <int N>
__device__ __forceinline__ void wgmma_fence_operands(unsigned (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+r"(r[i])::"memory");
}

// D[64 x 32] (+)= A[64 x 16] B[16 x 32]: A and B by shared-memory descriptors, B K-major;
// scale_d 0 overwrites D.
__device__ __forceinline__ void wgmma_m64n32k16(float (&d)[16], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  DPA_WGMMA_ASM(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7,"
      "%8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]),
        "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),
        "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

// D[64 x 64] (+)= A[64 x 16] B[16 x 64]: A and B by shared-memory descriptors, B K-major;
// scale_d 0 overwrites D.
__device__ __forceinline__ void wgmma_m64n64k16(float (&d)[32], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  DPA_WGMMA_ASM(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7,"
      "%8, %9, %10, %11, %12, %13, %14, %15,"
      "%16, %17, %18, %19, %20, %21, %22, %23,"
      "%24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]),
        "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),
        "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]),
        "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

// 64 accumulator operands of a wgmma from d[o]: an m64n128 wgmma's all, an m64n256's half.
#define DPA_WGMMA_D64_AT(d, o) \
  "+f"(d[o + 0]), "+f"(d[o + 1]), "+f"(d[o + 2]), "+f"(d[o + 3]), \
  "+f"(d[o + 4]), "+f"(d[o + 5]), "+f"(d[o + 6]), "+f"(d[o + 7]), \
  "+f"(d[o + 8]), "+f"(d[o + 9]), "+f"(d[o + 10]), "+f"(d[o + 11]), \
  "+f"(d[o + 12]), "+f"(d[o + 13]), "+f"(d[o + 14]), "+f"(d[o + 15]), \
  "+f"(d[o + 16]), "+f"(d[o + 17]), "+f"(d[o + 18]), "+f"(d[o + 19]), \
  "+f"(d[o + 20]), "+f"(d[o + 21]), "+f"(d[o + 22]), "+f"(d[o + 23]), \
  "+f"(d[o + 24]), "+f"(d[o + 25]), "+f"(d[o + 26]), "+f"(d[o + 27]), \
  "+f"(d[o + 28]), "+f"(d[o + 29]), "+f"(d[o + 30]), "+f"(d[o + 31]), \
  "+f"(d[o + 32]), "+f"(d[o + 33]), "+f"(d[o + 34]), "+f"(d[o + 35]), \
  "+f"(d[o + 36]), "+f"(d[o + 37]), "+f"(d[o + 38]), "+f"(d[o + 39]), \
  "+f"(d[o + 40]), "+f"(d[o + 41]), "+f"(d[o + 42]), "+f"(d[o + 43]), \
  "+f"(d[o + 44]), "+f"(d[o + 45]), "+f"(d[o + 46]), "+f"(d[o + 47]), \
  "+f"(d[o + 48]), "+f"(d[o + 49]), "+f"(d[o + 50]), "+f"(d[o + 51]), \
  "+f"(d[o + 52]), "+f"(d[o + 53]), "+f"(d[o + 54]), "+f"(d[o + 55]), \
  "+f"(d[o + 56]), "+f"(d[o + 57]), "+f"(d[o + 58]), "+f"(d[o + 59]), \
  "+f"(d[o + 60]), "+f"(d[o + 61]), "+f"(d[o + 62]), "+f"(d[o + 63])
#define DPA_WGMMA_D64(d) DPA_WGMMA_D64_AT(d, 0)
#define DPA_WGMMA_D128(d) DPA_WGMMA_D64_AT(d, 0), DPA_WGMMA_D64_AT(d, 64)
// Their asm names: %0 .. %63, and %0 .. %127.
#define DPA_WGMMA_D64_LIST \
  "%0, %1, %2, %3, %4, %5, %6, %7," \
  "%8, %9, %10, %11, %12, %13, %14, %15," \
  "%16, %17, %18, %19, %20, %21, %22, %23," \
  "%24, %25, %26, %27, %28, %29, %30, %31," \
  "%32, %33, %34, %35, %36, %37, %38, %39," \
  "%40, %41, %42, %43, %44, %45, %46, %47," \
  "%48, %49, %50, %51, %52, %53, %54, %55," \
  "%56, %57, %58, %59, %60, %61, %62, %63"
#define DPA_WGMMA_D128_LIST DPA_WGMMA_D64_LIST "," \
  "%64, %65, %66, %67, %68, %69, %70, %71," \
  "%72, %73, %74, %75, %76, %77, %78, %79," \
  "%80, %81, %82, %83, %84, %85, %86, %87," \
  "%88, %89, %90, %91, %92, %93, %94, %95," \
  "%96, %97, %98, %99, %100, %101, %102, %103," \
  "%104, %105, %106, %107, %108, %109, %110, %111," \
  "%112, %113, %114, %115, %116, %117, %118, %119," \
  "%120, %121, %122, %123, %124, %125, %126, %127"

// D[64 x 128] (+)= A[64 x 16] B[16 x 128]: A and B by shared-memory descriptors, B K-major;
// scale_d 0 overwrites D.
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  DPA_WGMMA_ASM("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {" DPA_WGMMA_D64_LIST
                "}, %64, %65, p, 1, 1, 0, 0;\n}\n"
                : DPA_WGMMA_D64(d)
                : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

// D[64 x 256] (+)= A[64 x 16] B[16 x 256]: A and B by shared-memory descriptors, B K-major
// (kTransB 0) or N-major (kTransB 1); scale_d 0 overwrites D.
template <int kTransB>
__device__ __forceinline__ void wgmma_m64n256k16(float (&d)[128], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  DPA_WGMMA_ASM("{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
                "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {" DPA_WGMMA_D128_LIST
                "}, %128, %129, p, 1, 1, 0, %131;\n}\n"
                : DPA_WGMMA_D128(d)
                : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(kTransB));
}
// D[64 x 256] += A[64 x 16] B[16 x 256]: A from registers (a[0..3]: bf16 pairs at rows g and
// g + 8 of the warp's 16, columns 2 q4 and 8 + 2 q4, as mma.sync's A fragment), B by an N-major
// shared-memory descriptor. The caller keeps a[] alive until the group's wait.
__device__ __forceinline__ void wgmma_m64n256k16_rs_bt(float (&d)[128], const unsigned (&a)[4], uint64_t desc_b) {
  DPA_WGMMA_ASM("{\n.reg .pred p;\nsetp.ne.b32 p, %133, 0;\n"
                "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {" DPA_WGMMA_D128_LIST
                "}, {%128, %129, %130, %131}, %132, p, 1, 1, 1;\n}\n"
                : DPA_WGMMA_D128(d)
                : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1));
}
__device__ __forceinline__ void wgmma_m64n256k16_bt(float (&d)[128], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  wgmma_m64n256k16<1>(d, desc_a, desc_b, scale_d);
}

}  // namespace dpa::kernels::detail
