#include <algorithm>
#include <cfloat>

#include "kernels/common.cuh"
#include "kernels/sample.cuh"

namespace dpa::kernels {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kBuckets = 256;

// Unsigned keys in the order of the float values (-0 and +0 share one key).
__device__ __forceinline__ uint32_t order_key(float v) {
  uint32_t b = __float_as_uint(v);
  if (b == 0x80000000u) b = 0;
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// The position in the row's order (logit descending, ids ascending on ties) at which a running
// total first meets a target: the element there has key `key` and is the j-th (1-based) id of
// that key; k elements come up to and including it, weighing `weight`.
struct Cross {
  int found;
  int64_t k, j;
  unsigned long long weight;
  uint32_t key;
};

enum Mode : int { kCount, kWeightAtLeast, kWeightAbove };

struct Shared {
  uint32_t cnt[kBuckets];
  unsigned long long mass[kBuckets];
  uint32_t kmin[kBuckets], kmax[kBuckets];
  double red_d[kWarps];
  unsigned long long red_u[kWarps];
  float red_f[kWarps];
  long long red_i[kWarps];
  int warp_count[kWarps];
  // Descent state, written by thread 0.
  uint32_t lo, hi;
  int level0, done;
  long long above_c;
  unsigned long long above_w;
  Cross cross;
  int n_list;
  int32_t list[kSampleMaxTop];
  int64_t found_id;
};

struct Row {
  const float* x;
  int64_t V;
  double t, top, scale;  // temperature, max / t, 2^fixed_bits
  __device__ double w(float v) const { return exp(static_cast<double>(v) / t - top); }
  __device__ unsigned long long q(double w) const { return __double2ull_rn(w * scale); }
  // Logit i; NaN (a broken model) counts as -inf, as in the reference.
  __device__ float at(int64_t i) const {
    const float v = x[i];
    return v == v ? v : -INFINITY;
  }
};

// Sum (or other associative op) over the block in a fixed order; every thread gets the result.
template <typename T, typename Op>
__device__ T block_reduce(T v, Op op, T* red) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  T r = red[0];
  for (int w = 1; w < kWarps; ++w) r = op(r, red[w]);
  return r;
}

struct Add {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a + b; }
};

// Level 0 buckets by value over [xmin, max] (scale = 256 / (max - xmin), 0 when degenerate);
// -inf goes to bucket 0. Monotone in v, so each bucket is a contiguous key range.
__device__ __forceinline__ int bucket0(float v, float xmin, float scale) {
  if (scale == 0.0f || !(v >= xmin)) return 0;
  const float f = (v - xmin) * scale;
  return f >= 255.0f ? 255 : static_cast<int>(f);
}

// Narrows the key range bucket by bucket (256 at a time) to the crossing of `target`:
// kCount: the first k with k >= target; kWeightAtLeast / kWeightAbove: the first k whose
// running weight is >= / > target. Called by the whole block.
template <bool kWeights>
__device__ Cross descend(const Row& r, Shared& sh, int mode, unsigned long long target, float xmin, float scale0) {
  if (threadIdx.x == 0) {
    sh.lo = 0, sh.hi = 0xffffffffu, sh.level0 = 1, sh.done = 0;
    sh.above_c = 0, sh.above_w = 0;
    sh.cross = Cross{0, 0, 0, 0, 0};
  }
  __syncthreads();
  while (!sh.done) {
    const uint32_t lo = sh.lo, hi = sh.hi;
    const bool level0 = sh.level0;
    const unsigned long long range = static_cast<unsigned long long>(hi - lo) + 1;
    for (int b = threadIdx.x; b < kBuckets; b += kThreads)
      sh.cnt[b] = 0, sh.mass[b] = 0, sh.kmin[b] = 0xffffffffu, sh.kmax[b] = 0;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < r.V; i += kThreads) {
      const float v = r.at(i);
      const uint32_t key = order_key(v);
      int b;
      if (level0) {
        b = bucket0(v, xmin, scale0);
      } else {
        if (key < lo || key > hi) continue;
        b = static_cast<int>((static_cast<unsigned long long>(key - lo) << 8) / range);
      }
      atomicAdd(&sh.cnt[b], 1u);
      if (kWeights) {
        const unsigned long long q = r.q(r.w(v));
        if (q) atomicAdd(&sh.mass[b], q);
      }
      if (level0) atomicMin(&sh.kmin[b], key), atomicMax(&sh.kmax[b], key);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      long long above_c = sh.above_c;
      unsigned long long above_w = sh.above_w;
      int chosen = -1;
      for (int b = kBuckets - 1; b >= 0; --b) {
        const long long nc = above_c + sh.cnt[b];
        const unsigned long long nw = above_w + sh.mass[b];
        const bool hit = mode == kCount ? nc >= static_cast<long long>(target)
                                        : (mode == kWeightAtLeast ? nw >= target : nw > target);
        if (hit) {
          chosen = b;
          break;
        }
        above_c = nc, above_w = nw;
      }
      if (chosen < 0) {
        sh.done = 1;
      } else {
        uint32_t nlo, nhi;
        if (level0) {
          nlo = sh.kmin[chosen], nhi = sh.kmax[chosen];
        } else {
          const unsigned long long c = static_cast<unsigned long long>(chosen);
          nlo = lo + static_cast<uint32_t>((c * range + 255) / 256);
          nhi = lo + static_cast<uint32_t>(((c + 1) * range + 255) / 256 - 1);
        }
        if (nlo == nhi) {  // one key left: equal logits, equal weights, ids in ascending order
          const long long n = sh.cnt[chosen];
          const unsigned long long q = kWeights && n > 0 ? sh.mass[chosen] / n : 0;
          long long j;
          if (mode == kCount) j = static_cast<long long>(target) - above_c;
          else if (q == 0) j = n;
          // (q | !q) is q (not 0 here); it keeps the count-only instantiation free of a division by 0.
          else if (mode == kWeightAtLeast) j = static_cast<long long>((target - above_w + q - 1) / (q | !q));
          else j = static_cast<long long>((target - above_w) / (q | !q)) + 1;
          j = j < 1 ? 1 : (j > n ? n : j);
          sh.cross = Cross{1, above_c + j, j, above_w + static_cast<unsigned long long>(j) * q, nlo};
          sh.done = 1;
        } else {
          sh.lo = nlo, sh.hi = nhi, sh.level0 = 0;
          sh.above_c = above_c, sh.above_w = above_w;
        }
      }
    }
    __syncthreads();
  }
  const Cross c = sh.cross;
  __syncthreads();
  return c;
}

// The j-th (1-based) id whose key is `key`, in ascending id order; with `collect`, the first j
// such ids also go to collect[0 .. j).
__device__ int64_t nth_with_key(const Row& r, Shared& sh, uint32_t key, int64_t j, int32_t* collect) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (threadIdx.x == 0) sh.found_id = 0;
  int64_t seen = 0;
  for (int64_t base = 0; base < r.V && seen < j; base += kThreads) {
    const int64_t i = base + threadIdx.x;
    const bool match = i < r.V && order_key(r.at(i)) == key;
    const unsigned ballot = __ballot_sync(0xffffffffu, match);
    if (lane == 0) sh.warp_count[warp] = __popc(ballot);
    __syncthreads();
    int before = 0, total = 0;
    for (int w = 0; w < kWarps; ++w) {
      const int c = sh.warp_count[w];
      before += w < warp ? c : 0;
      total += c;
    }
    const int64_t rank = seen + before + __popc(ballot & ((1u << lane) - 1u)) + 1;
    if (match && rank <= j) {
      if (collect) collect[rank - 1] = static_cast<int32_t>(i);
      if (rank == j) sh.found_id = i;
    }
    __syncthreads();
    seen += total;
  }
  __syncthreads();
  return sh.found_id;
}

__global__ void __launch_bounds__(kThreads) sample_kernel(const float* logits, int64_t V, const SampleSpecArgs* specs,
                                                          int fixed_bits, SampleOutArgs* outs) {
  __shared__ Shared sh;
  const int64_t row = blockIdx.x;
  const SampleSpecArgs spec = specs[row];
  Row r{logits + row * V, V, 1.0, 0.0, 1.0};
  const int lane = threadIdx.x & 31;

  // Max (lowest id on ties) and the smallest finite value.
  float bv = -INFINITY, mn = INFINITY;
  int64_t bi = V;
  for (int64_t i = threadIdx.x; i < V; i += kThreads) {
    const float v = r.at(i);
    if (v > bv || (v == bv && i < bi)) bv = v, bi = i;
    if (v < mn && v > -INFINITY) mn = v;
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ov > bv || (ov == bv && oi < bi)) bv = ov, bi = oi;
  }
  __syncthreads();
  if (lane == 0) sh.red_f[threadIdx.x >> 5] = bv, sh.red_i[threadIdx.x >> 5] = bi;
  __syncthreads();
  bv = sh.red_f[0], bi = sh.red_i[0];
  for (int w = 1; w < kWarps; ++w)
    if (sh.red_f[w] > bv || (sh.red_f[w] == bv && sh.red_i[w] < bi)) bv = sh.red_f[w], bi = sh.red_i[w];
  if (bi >= V) bi = 0;
  mn = block_reduce(mn, [](float a, float b) { return fminf(a, b); }, sh.red_f);
  const double mx = bv;
  const bool forced = spec.forced >= 0 && spec.forced < V;  // a scored prompt token: no draw
  const bool sampling = spec.temperature > 0.0f && isfinite(bv) && !forced;
  if (sampling) r.t = spec.temperature, r.top = mx / r.t, r.scale = ldexp(1.0, fixed_bits);

  // Log-partition, total weight, and the weight of the ids at or above min_p.
  double z = 0;
  unsigned long long total = 0, min_p_w = 0;
  long long min_p_c = 0;
  for (int64_t i = threadIdx.x; i < V; i += kThreads) {
    const float v = r.at(i);
    z += exp(static_cast<double>(v) - mx);
    if (sampling) {
      const double w = r.w(v);
      const unsigned long long q = r.q(w);
      total += q;
      if (spec.min_p > 0.0f && w >= static_cast<double>(spec.min_p)) ++min_p_c, min_p_w += q;
    }
  }
  z = block_reduce(z, Add{}, sh.red_d);
  total = block_reduce(total, Add{}, sh.red_u);
  min_p_w = block_reduce(min_p_w, Add{}, sh.red_u);
  min_p_c = block_reduce(min_p_c, Add{}, sh.red_i);
  const double log_z = mx + log(z);
  auto logprob = [&](int64_t i) { return static_cast<float>(static_cast<double>(r.at(i)) - log_z); };

  float scale0 = mn < bv ? 256.0f / (bv - mn) : 0.0f;
  if (!isfinite(scale0)) scale0 = 0.0f;
  SampleOutArgs* out = outs + row;

  // Top logprobs: the ids above the n_top-th key, then that key's first ids.
  const int n_top = spec.n_top < 0 ? 0 : (spec.n_top > kSampleMaxTop ? kSampleMaxTop : (spec.n_top > V ? int(V) : spec.n_top));
  if (n_top > 0) {
    const Cross c = descend<false>(r, sh, kCount, n_top, mn, scale0);
    if (threadIdx.x == 0) sh.n_list = 0;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < V; i += kThreads)
      if (order_key(r.at(i)) > c.key) sh.list[atomicAdd(&sh.n_list, 1)] = static_cast<int32_t>(i);
    __syncthreads();
    nth_with_key(r, sh, c.key, c.j, sh.list + (c.k - c.j));
    if (threadIdx.x == 0) {
      for (int a = 1; a < n_top; ++a)  // insertion sort: logit descending, id ascending
        for (int b = a; b > 0; --b) {
          const int32_t p = sh.list[b - 1], q = sh.list[b];
          if (r.at(q) > r.at(p) || (r.at(q) == r.at(p) && q < p)) sh.list[b - 1] = q, sh.list[b] = p;
          else break;
        }
      out->n_top = n_top;
      for (int a = 0; a < n_top; ++a) out->top_token[a] = sh.list[a], out->top_logprob[a] = logprob(sh.list[a]);
    }
    __syncthreads();
  } else if (threadIdx.x == 0) {
    out->n_top = 0;
  }

  int64_t token = bi;
  int32_t rank = 0;
  if (forced) {  // its place in the order: the ids before it, + 1
    token = spec.forced;
    const float f = r.at(token);
    long long before = 0;
    for (int64_t i = threadIdx.x; i < V; i += kThreads) {
      const float v = r.at(i);
      before += v > f || (v == f && i < token);
    }
    rank = static_cast<int32_t>(block_reduce(before, Add{}, sh.red_i) + 1);
  }
  if (sampling) {
    long long keep = V;
    unsigned long long top_k_w = total, keep_w = total;
    if (spec.top_k > 0 && spec.top_k < V) {
      const Cross c = descend<true>(r, sh, kCount, spec.top_k, mn, scale0);
      keep = spec.top_k, top_k_w = keep_w = c.weight;
    }
    if (spec.min_p > 0.0f && min_p_c < keep) {
      keep = min_p_c > 1 ? min_p_c : 1;
      keep_w = min_p_c > 0 ? min_p_w : r.q(1.0);
    }
    if (spec.top_p < 1.0f) {
      const auto need = static_cast<unsigned long long>(ceil(static_cast<double>(spec.top_p) * static_cast<double>(top_k_w)));
      const Cross c = descend<true>(r, sh, kWeightAtLeast, need, mn, scale0);
      if (c.found && c.k <= keep) keep = c.k, keep_w = c.weight;
    }
    const auto u = static_cast<unsigned long long>(floor(spec.u * static_cast<double>(keep_w)));
    Cross c = descend<true>(r, sh, kWeightAbove, u, mn, scale0);
    if (!c.found || c.k > keep) c = descend<false>(r, sh, kCount, static_cast<unsigned long long>(keep), mn, scale0);
    token = nth_with_key(r, sh, c.key, c.j, nullptr);
  }
  if (threadIdx.x == 0) out->token = static_cast<int32_t>(token), out->logprob = logprob(token), out->rank = rank;
}

__global__ void edit_kernel(float* logits, int64_t V, const LogitEditArgs* edits, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const LogitEditArgs e = edits[i];
  float* p = logits + static_cast<int64_t>(e.row) * V + e.token;
  double v = *p;
  if (e.repetition != 1.0f) v = v > 0 ? v / e.repetition : v * e.repetition;
  v -= e.subtract;
  *p = static_cast<float>(v);
}

// One thread per token of a masked row (blockIdx.y: the row), so the row is read and written
// in order.
__global__ void mask_kernel(float* logits, int64_t V, const uint32_t* masks, const int32_t* rows) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= V) return;
  const uint32_t w = masks[static_cast<int64_t>(blockIdx.y) * ((V + 31) / 32) + (t >> 5)];
  if (!((w >> (t & 31)) & 1u)) logits[static_cast<int64_t>(rows[blockIdx.y]) * V + t] = -INFINITY;
}

}  // namespace

void mask_logits(float* logits, int64_t vocab, const uint32_t* masks, const int32_t* rows, int64_t n,
                 cudaStream_t stream) {
  if (n <= 0 || vocab <= 0) return;
  const int64_t words = (vocab + 31) / 32;
  for (int64_t i = 0; i < n; i += 65535) {  // gridDim.y's limit
    const dim3 grid(static_cast<unsigned>((vocab + 255) / 256), static_cast<unsigned>(std::min<int64_t>(n - i, 65535)));
    mask_kernel<<<grid, 256, 0, stream>>>(logits, vocab, masks + i * words, rows + i);
  }
}

void edit_logits(float* logits, int64_t vocab, const LogitEditArgs* edits, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  edit_kernel<<<detail::blocks_for(n, 256), 256, 0, stream>>>(logits, vocab, edits, n);
}

void sample(const float* logits, int64_t n, int64_t vocab, const SampleSpecArgs* specs, int fixed_bits,
            SampleOutArgs* out, cudaStream_t stream) {
  if (n <= 0 || vocab <= 0) return;
  sample_kernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(logits, vocab, specs, fixed_bits, out);
}

}  // namespace dpa::kernels
