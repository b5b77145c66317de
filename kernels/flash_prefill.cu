#include <algorithm>
#include <cfloat>
#include <numeric>
#include <vector>

#include "kernels/common.cuh"
#include "kernels/convert.cuh"
#include "kernels/flash_prefill.cuh"
#include "kernels/mma.cuh"

namespace dpa::kernels {
namespace {

using detail::ldsm_x4;
using detail::ldsm_x4_trans;
using detail::mma16816;
using detail::pack_bf16;

constexpr int kM = 64;   // queries per block (16 per warp)
constexpr int kN = 64;   // keys per tile
constexpr int kThreads = 128;
constexpr float kLog2e = 1.4426950408889634f;

// Up to kMaxSeqs sequences packed along the rows, by value (no upload: a launch stays
// recordable). Block x takes query tile x of the sequence whose tiles [tile0[s], tile0[s + 1])
// hold it, the sequence's last tile first (the most keys), sequences longest first.
constexpr int kMaxSeqs = 24;
struct Args {
  const __nv_bfloat16 *q, *k, *v;  // the inputs rounded to bf16 (same layouts)
  float* out;
  int64_t H;
  float scale_log2;  // softmax scale times log2(e): exp2 domain
  int n_seqs;
  int64_t q0[kMaxSeqs], kv0[kMaxSeqs], q_start[kMaxSeqs];
  int32_t n_q[kMaxSeqs], n_kv[kMaxSeqs], tile0[kMaxSeqs + 1];
};

// Rows [r0, r0 + kRows) of a [rows, H, D] bf16 array (row stride ld elements, head already
// applied) into shared memory rows of stride S, by cp.async; rows past n_rows are zero-filled.
template <int D, int S, int kRows>
__device__ __forceinline__ void load_tile(__nv_bfloat16* dst, const __nv_bfloat16* src, int64_t ld, int64_t r0,
                                          int64_t n_rows) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  for (int idx = threadIdx.x; idx < kRows * kChunks; idx += kThreads) {
    const int r = idx / kChunks, c = (idx % kChunks) * 8;
    const bool valid = r0 + r < n_rows;
    detail::cp_async16(dst + r * S + c, src + (valid ? r0 + r : 0) * ld + c, valid);
  }
}

template <int DQK, int DV>
__global__ void __launch_bounds__(kThreads) flash_prefill_kernel(Args a) {
  // Rows padded by 16 bytes: ldmatrix's 8 rows fall in 8 distinct bank groups.
  constexpr int QS = DQK + 8, VS = DV + 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* sQ = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* sK0 = sQ + kM * QS;        // two stages of K, then two of V
  __nv_bfloat16* sV0 = sK0 + 2 * kN * QS;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int h = blockIdx.y;
  int sq = 0;
  while (sq + 1 < a.n_seqs && a.tile0[sq + 1] <= static_cast<int>(blockIdx.x)) ++sq;
  // Within a sequence, the tiles with the most keys (the last queries) go first.
  const int64_t m0 = static_cast<int64_t>(a.tile0[sq + 1] - 1 - static_cast<int>(blockIdx.x)) * kM;
  const int64_t ldq = a.H * DQK, ldv = a.H * DV;
  const int64_t n_q = a.n_q[sq], n_kv = a.n_kv[sq], q_start = a.q_start[sq];
  const __nv_bfloat16* qs = a.q + a.q0[sq] * ldq + h * DQK;
  const __nv_bfloat16* ks = a.k + a.kv0[sq] * ldq + h * DQK;
  const __nv_bfloat16* vs = a.v + a.kv0[sq] * ldv + h * DV;

  const int64_t last_q = m0 + kM < n_q ? m0 + kM : n_q;
  const int64_t kv_end = q_start + last_q < n_kv ? q_start + last_q : n_kv;
  const int n_tiles = static_cast<int>((kv_end + kN - 1) / kN);
  auto load_kv = [&](int t) {
    const int st = t & 1;
    load_tile<DQK, QS, kN>(sK0 + st * kN * QS, ks, ldq, static_cast<int64_t>(t) * kN, n_kv);
    load_tile<DV, VS, kN>(sV0 + st * kN * VS, vs, ldv, static_cast<int64_t>(t) * kN, n_kv);
  };
  load_tile<DQK, QS, kM>(sQ, qs, ldq, m0, n_q);
  if (n_tiles > 0) load_kv(0);
  detail::cp_async_commit();

  unsigned qf[DQK / 16][4];
  bool have_q = false;
  float o[DV / 8][4];
#pragma unroll
  for (int j = 0; j < DV / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const int64_t row0 = m0 + warp * 16 + (lane >> 2);  // this thread's rows: row0 and row0 + 8

  for (int t = 0; t < n_tiles; ++t) {
    // Tile t + 1 streams in while tile t is used (its stage was released at the end of t - 1).
    if (t + 1 < n_tiles) {
      load_kv(t + 1);
      detail::cp_async_commit();
      detail::cp_async_wait<1>();
    } else {
      detail::cp_async_wait<0>();
    }
    __syncthreads();
    if (!have_q) {
#pragma unroll
      for (int kk = 0; kk < DQK / 16; ++kk)
        ldsm_x4(qf[kk], sQ + (warp * 16 + (lane & 15)) * QS + kk * 16 + (lane >> 4) * 8);
      have_q = true;
    }
    const __nv_bfloat16* sK = sK0 + (t & 1) * kN * QS;
    const __nv_bfloat16* sV = sV0 + (t & 1) * kN * VS;
    const int64_t n0 = static_cast<int64_t>(t) * kN;

    float s[kN / 8][4];
#pragma unroll
    for (int j = 0; j < kN / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < DQK / 16; ++kk)
#pragma unroll
      for (int jj = 0; jj < kN / 16; ++jj) {
        unsigned b[4];
        ldsm_x4(b, sK + (jj * 16 + (lane & 7) + ((lane >> 4) << 3)) * QS + kk * 16 + ((lane >> 3) & 1) * 8);
        mma16816(s[2 * jj], qf[kk], b[0], b[1]);
        mma16816(s[2 * jj + 1], qf[kk], b[2], b[3]);
      }

    // Causal and length mask, scale, online softmax (rows r = 0: row0, 1: row0 + 8).
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < kN / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t key = n0 + 8 * j + 2 * (lane & 3) + (e & 1);
        const int64_t row = row0 + (e >> 1) * 8;
        const bool ok = key < n_kv && key <= q_start + row;
        s[j][e] = ok ? s[j][e] * a.scale_log2 : -INFINITY;
        mx[e >> 1] = fmaxf(mx[e >> 1], s[j][e]);
      }
    float use[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float m_new = fmaxf(m[r], mx[r]);
      use[r] = m_new == -INFINITY ? 0.0f : m_new;
      const float corr = exp2f(m[r] - use[r]);
      m[r] = m_new;
      l[r] *= corr;
#pragma unroll
      for (int j = 0; j < DV / 8; ++j) o[j][2 * r] *= corr, o[j][2 * r + 1] *= corr;
    }
#pragma unroll
    for (int j = 0; j < kN / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[j][e] = exp2f(s[j][e] - use[e >> 1]);
        l[e >> 1] += s[j][e];
      }

    // O += P·V: P's accumulators are the A fragments of 16-key steps.
#pragma unroll
    for (int kk = 0; kk < kN / 16; ++kk) {
      const unsigned pa[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                              pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int nn = 0; nn < DV / 16; ++nn) {
        unsigned b[4];
        ldsm_x4_trans(b, sV + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * VS + nn * 16 + (lane >> 4) * 8);
        mma16816(o[2 * nn], pa, b[0], b[1]);
        mma16816(o[2 * nn + 1], pa, b[2], b[3]);
      }
    }
    __syncthreads();  // this stage is free for tile t + 2
  }
  detail::cp_async_wait<0>();  // no tile at all (n_kv == 0): the query tile's copy

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    const int64_t row = row0 + 8 * r;
    if (row >= n_q) continue;
    const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
    float* dst = a.out + (a.q0[sq] + row) * ldv + h * DV + 2 * (lane & 3);
#pragma unroll
    for (int j = 0; j < DV / 8; ++j)
      *reinterpret_cast<float2*>(dst + 8 * j) = make_float2(o[j][2 * r] * inv, o[j][2 * r + 1] * inv);
  }
}

template <int DQK, int DV>
std::size_t smem_bytes() {
  return static_cast<std::size_t>((kM + 2 * kN) * (DQK + 8) + 2 * kN * (DV + 8)) * sizeof(__nv_bfloat16);
}

template <int DQK, int DV>
void launch(const Args& a, cudaStream_t stream) {
  static const bool configured = [] {
    cudaFuncSetAttribute(flash_prefill_kernel<DQK, DV>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         static_cast<int>(smem_bytes<DQK, DV>()));
    return true;
  }();
  (void)configured;
  const dim3 grid(static_cast<unsigned>(a.tile0[a.n_seqs]), static_cast<unsigned>(a.H));
  flash_prefill_kernel<DQK, DV><<<grid, kThreads, smem_bytes<DQK, DV>(), stream>>>(a);
}


}  // namespace

bool flash_prefill_supported(int64_t d_qk, int64_t d_v, const void* out, int64_t n_heads) {
  // The inputs are read through the bf16 workspace; the output is written as float2.
  return d_qk == 192 && d_v == 128 && n_heads > 0 && n_heads < 65536 && reinterpret_cast<uintptr_t>(out) % 8 == 0;
}

// The rows of q and of k / v that the sequences span.
static void spans(const FlashSeq* seqs, int64_t n_seqs, int64_t* q_rows, int64_t* kv_rows) {
  *q_rows = 0, *kv_rows = 0;
  for (int64_t i = 0; i < n_seqs; ++i) {
    *q_rows = std::max(*q_rows, seqs[i].q0 + seqs[i].n_q);
    *kv_rows = std::max(*kv_rows, seqs[i].kv0 + seqs[i].n_kv);
  }
}

int64_t flash_prefill_workspace(const FlashSeq* seqs, int64_t n_seqs, int64_t n_heads, int64_t d_qk,
                                int64_t d_v) {
  int64_t q_rows, kv_rows;
  spans(seqs, n_seqs, &q_rows, &kv_rows);
  return n_heads * (q_rows * d_qk + kv_rows * (d_qk + d_v));
}

namespace {

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// One block a key row (grid-stride): the row's heads' keys [kvb nope part, the shared rope key]
// and values (kvb's other part), rounded to T; float4 at a time when every width and row start
// allows, else one element at a time.
template <class T>
__global__ void expand_mla_kv_kernel(const float* kvb, const float* k_pe, int64_t rows, int64_t H, int64_t nope,
                                     int64_t rope, int64_t d_v, bool vec, T* k, T* v) {
  const int64_t dqk = nope + rope, w = nope + d_v, per_head = dqk + d_v, step = vec ? 4 : 1;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* src = kvb + r * H * w;
    const float* pe = k_pe + r * rope;
    T* kr = k + r * H * dqk;
    T* vr = v + r * H * d_v;
    for (int64_t i = threadIdx.x * step; i < H * per_head; i += blockDim.x * step) {
      const int64_t h = i / per_head, c = i - h * per_head;
      const float* from = c < nope ? src + h * w + c : c < dqk ? pe + (c - nope) : src + h * w + nope + (c - dqk);
      T* to = c < dqk ? kr + h * dqk + c : vr + h * d_v + (c - dqk);
      if (vec)
        detail::store4(to, *reinterpret_cast<const float4*>(from));
      else
        detail::store(to, *from);
    }
  }
}

template <class T>
void expand_mla_kv_as(const float* kvb, const float* k_pe, int64_t rows, int64_t H, int64_t nope, int64_t rope,
                      int64_t d_v, T* k, T* v, cudaStream_t stream) {
  if (rows <= 0 || H <= 0) return;
  const bool vec = nope % 4 == 0 && rope % 4 == 0 && d_v % 4 == 0 && aligned16(kvb) && aligned16(k_pe) &&
                   reinterpret_cast<uintptr_t>(k) % (4 * sizeof(T)) == 0 &&
                   reinterpret_cast<uintptr_t>(v) % (4 * sizeof(T)) == 0;
  const unsigned grid = static_cast<unsigned>(rows < (1 << 20) ? rows : (1 << 20));
  expand_mla_kv_kernel<T><<<grid, 256, 0, stream>>>(kvb, k_pe, rows, H, nope, rope, d_v, vec, k, v);
}

// The launches over bf16 q / k / v (rows as the sequences say), kMaxSeqs sequences a launch,
// longest first (most keys in their last tile).
void flash_launches(const uint16_t* qb, const uint16_t* kb, const uint16_t* vb, const FlashSeq* seqs,
                    int64_t n_seqs, int64_t n_heads, float scale, float* out, cudaStream_t stream) {
  std::vector<int64_t> by_len(static_cast<std::size_t>(n_seqs));
  std::iota(by_len.begin(), by_len.end(), int64_t{0});
  auto work = [&](int64_t i) { return std::min(seqs[i].n_kv, seqs[i].q_start + seqs[i].n_q); };
  std::stable_sort(by_len.begin(), by_len.end(), [&](int64_t x, int64_t y) { return work(x) > work(y); });
  for (std::size_t b = 0; b < by_len.size(); b += kMaxSeqs) {
    Args a{};
    a.q = reinterpret_cast<const __nv_bfloat16*>(qb), a.k = reinterpret_cast<const __nv_bfloat16*>(kb);
    a.v = reinterpret_cast<const __nv_bfloat16*>(vb), a.out = out, a.H = n_heads, a.scale_log2 = scale * kLog2e;
    for (std::size_t j = b; j < by_len.size() && j < b + kMaxSeqs; ++j) {
      const FlashSeq& s = seqs[by_len[j]];
      if (s.n_q <= 0) continue;
      const int i = a.n_seqs++;
      a.q0[i] = s.q0, a.kv0[i] = s.kv0, a.q_start[i] = s.q_start;
      a.n_q[i] = static_cast<int32_t>(s.n_q), a.n_kv[i] = static_cast<int32_t>(s.n_kv);
      a.tile0[i + 1] = a.tile0[i] + static_cast<int32_t>((s.n_q + kM - 1) / kM);
    }
    if (a.n_seqs > 0) launch<192, 128>(a, stream);
  }
}

// The workspace's bf16 q, k and v: the rows the sequences span, at the same offsets; q rounded
// into it.
struct Rounded {
  uint16_t *q, *k, *v;
  int64_t q_rows, kv_rows;
};
Rounded round_q(const float* q, const FlashSeq* seqs, int64_t n_seqs, int64_t n_heads, int64_t d_qk,
                uint16_t* workspace, cudaStream_t stream) {
  Rounded r;
  spans(seqs, n_seqs, &r.q_rows, &r.kv_rows);
  r.q = workspace, r.k = r.q + r.q_rows * n_heads * d_qk, r.v = r.k + r.kv_rows * n_heads * d_qk;
  f32_to_bf16(q, r.q, r.q_rows * n_heads * d_qk, stream);
  return r;
}

}  // namespace

void flash_prefill(const float* q, const float* k, const float* v, const FlashSeq* seqs, int64_t n_seqs,
                   int64_t n_heads, int64_t d_qk, int64_t d_v, float scale, float* out, uint16_t* workspace,
                   cudaStream_t stream) {
  if (n_seqs <= 0 || n_heads <= 0) return;
  // d_qk, d_v: 192 / 128 (flash_prefill_supported).
  const Rounded r = round_q(q, seqs, n_seqs, n_heads, d_qk, workspace, stream);
  if (r.q_rows <= 0) return;
  f32_to_bf16(k, r.k, r.kv_rows * n_heads * d_qk, stream);
  f32_to_bf16(v, r.v, r.kv_rows * n_heads * d_v, stream);
  flash_launches(r.q, r.k, r.v, seqs, n_seqs, n_heads, scale, out, stream);
}

void flash_prefill_mla(const float* q, const float* kvb, const float* k_pe, const FlashSeq* seqs, int64_t n_seqs,
                       int64_t n_heads, int64_t nope, int64_t rope, int64_t d_v, float scale, float* out,
                       uint16_t* workspace, cudaStream_t stream) {
  if (n_seqs <= 0 || n_heads <= 0) return;
  const Rounded r = round_q(q, seqs, n_seqs, n_heads, nope + rope, workspace, stream);
  if (r.q_rows <= 0) return;
  expand_mla_kv_as(kvb, k_pe, r.kv_rows, n_heads, nope, rope, d_v, reinterpret_cast<__nv_bfloat16*>(r.k),
                   reinterpret_cast<__nv_bfloat16*>(r.v), stream);
  flash_launches(r.q, r.k, r.v, seqs, n_seqs, n_heads, scale, out, stream);
}

void expand_mla_kv(const float* kvb, const float* k_pe, int64_t rows, int64_t n_heads, int64_t nope, int64_t rope,
                   int64_t d_v, float* k, float* v, cudaStream_t stream) {
  expand_mla_kv_as(kvb, k_pe, rows, n_heads, nope, rope, d_v, k, v, stream);
}

}  // namespace dpa::kernels
