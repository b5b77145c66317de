// The backend interface: the ops the DeepSeek forward needs, one commented slot each (ggml style).
// The CPU backend is the plain, unfused, deterministic fp32 reference every other backend is
// tested against op by op. Activations are f32; weights are f32 or bf16 views (often straight
// into a checkpoint's memory mapping), converted on the fly.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace dpa::backend {

// A row-major matrix [rows, cols] of f32 or bf16 with a row stride `ld` (elements), so that
// row ranges (heads, experts) and column ranges (o_proj inputs of a head slice) are views, not
// copies. The memory is not owned.
struct WeightView {
  const void* data = nullptr;
  DType dtype = DType::f32;
  int64_t rows = 0, cols = 0;
  int64_t ld = 0;  // elements between row starts; == cols when dense

  static WeightView dense(const void* data, DType dtype, int64_t rows, int64_t cols) {
    return WeightView{data, dtype, rows, cols, cols};
  }
  // Rows [r0, r1) and columns [c0, c1) of this view (throws dpa::Error when out of range).
  WeightView slice(int64_t r0, int64_t r1, int64_t c0, int64_t c1) const;
  WeightView row_slice(int64_t r0, int64_t r1) const { return slice(r0, r1, 0, cols); }
  WeightView col_slice(int64_t c0, int64_t c1) const { return slice(0, rows, c0, c1); }
  // Element (r, c) as float (slow; for tests and small vectors).
  float at(int64_t r, int64_t c) const;
};

// Rotary embedding: pair i of a head's rope part rotates by position * inv_freq[i]; cos and sin
// are multiplied by attention_scaling (YaRN's mscale ratio; 1 without YaRN).
struct RopeParams {
  const float* inv_freq = nullptr;  // [dim / 2]
  int64_t dim = 0;                  // qk_rope_head_dim
  float attention_scaling = 1.0f;
};

enum class Scoring : uint8_t { softmax, sigmoid };
enum class TopkMethod : uint8_t { greedy, group_limited_greedy, noaux_tc };

// MoE router settings (DESIGN section 5).
struct GateParams {
  int64_t n_experts = 0;
  int64_t top_k = 0;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  Scoring scoring = Scoring::softmax;
  TopkMethod method = TopkMethod::greedy;
  bool norm_topk_prob = false;
  float routed_scaling_factor = 1.0f;
  const float* correction_bias = nullptr;  // [n_experts], noaux_tc only: used to choose, not weigh
  // Slots every token gets after its top_k: experts n_experts .. n_experts + shared_slots - 1 with
  // weight 1 (the shared experts run among the routed ones, cut to their size). The outputs are
  // then [n, top_k + shared_slots].
  int64_t shared_slots = 0;
};

// MLA's per-token preparation before attention (Backend::mla_prepare), n tokens.
struct MlaPrepare {
  int64_t n = 0;
  // Queries: n_heads heads of q_head_dim at row stride q_stride, each with its rope part of
  // rope.dim after the first nope elements.
  float* q = nullptr;
  int64_t n_heads = 0, q_stride = 0, q_head_dim = 0, nope = 0;
  float* q_pe = nullptr;  // [n, n_heads, rope.dim], or null
  // kv_a_proj's output: the latent [kv_lora] then the rope key [rope.dim], row stride kva_stride.
  const float* kva = nullptr;
  int64_t kva_stride = 0, kv_lora = 0;
  WeightView kv_norm;  // [kv_lora]
  float eps = 0;
  const int64_t* positions = nullptr;  // [n]
  RopeParams rope;
  // The layer's cache rows (kv_write's layout, width kv_lora + rope.dim) and each token's slot.
  void* cache = nullptr;
  DType cache_dtype = DType::f32;
  const int64_t* slots = nullptr;
};

// One sequence's view of a paged latent cache layer: page p holds page_size tokens of
// [kv_lora + rope_dim] elements of `dtype` (f32 or bf16; the normalized latent, then the rotated
// rope key). Both pointers are in backend memory; token() is for an f32 cache in host memory only
// (CPU backend, tests).
struct PagedLatent {
  void* base = nullptr;            // the layer's pages: [n_pages, page_size, kv_lora + rope_dim]
  const int32_t* pages = nullptr;  // the sequence's page table
  int64_t page_size = 0;
  int64_t kv_lora = 0, rope_dim = 0;
  DType dtype = DType::f32;
  int64_t width() const { return kv_lora + rope_dim; }
  float* token(int64_t pos) const {
    return static_cast<float*>(base) +
           (static_cast<int64_t>(pages[pos / page_size]) * page_size + pos % page_size) * (kv_lora + rope_dim);
  }
};

// One layer's paged latent cache seen by a batch of single-token sequences (decode): sequence
// s attends to its positions 0 .. ctx_len[s]-1 (its new token's included), whose pages are
// pages[table_offset[s] ...]. Pointers in backend memory; max_ctx_len is a host value.
struct PagedBatch {
  void* base = nullptr;
  const int32_t* pages = nullptr;
  const int32_t* table_offset = nullptr;  // [n_seqs]
  const int32_t* ctx_len = nullptr;       // [n_seqs], each >= 1
  int64_t n_seqs = 0, page_size = 0, kv_lora = 0, rope_dim = 0;
  int64_t max_ctx_len = 0;
  // Cache rows from base that page ids may reach (the layer's pages x page_size); 0: unknown (a
  // backend that needs the bound then asks the allocator for the allocation's extent).
  int64_t pool_rows = 0;
  DType dtype = DType::f32;
};

// One sequence of a packed attention call (Backend::attention_packed): its queries are rows
// q0 .. q0 + n_q - 1 of q and out, its keys and values rows kv0 .. kv0 + n_kv - 1 of k and v,
// and its query i sits at position q_start + i. Host values.
struct PackedSeq {
  int64_t q0 = 0, n_q = 0, kv0 = 0, n_kv = 0, q_start = 0;
};

// ---- Sampling (DESIGN: the sampler runs where the logits are; only tokens come back).
// The most top-logprob entries a row may ask for (OpenAI's top_logprobs limit).
constexpr int kMaxTopLogprobs = 20;

// One sparse edit of a logits row before sampling (penalties, suppressed ids): x = logits[row,
// token]; if repetition != 1, x = x > 0 ? x / repetition : x * repetition; then x -= subtract
// (frequency * count + presence; +inf bans the token); computed in double, stored as float.
// (row, token) pairs are distinct.
struct LogitEdit {
  int32_t row = 0, token = 0;
  float repetition = 1.0f;
  float subtract = 0.0f;
};

// The tokens a row may draw (structured output), one bit each: bit t % 32 of word t / 32.
constexpr int64_t token_mask_words(int64_t vocab) { return (vocab + 31) / 32; }

// Constrained rows of a step: rows[i] (a row of the sampled ones) may draw only the tokens whose
// bits are set in bits[i * token_mask_words(vocab) ...].
struct TokenMasks {
  std::span<const int32_t> rows;
  std::span<const uint32_t> bits;
};

// How to draw the token of one logits row. temperature <= 0: greedy (the argmax, lowest id on
// ties). Otherwise, with the row ordered by logit (ties: lower id first) and weights
// w_i = exp(x_i / t - max / t) quantized to fixed point (sampling_fixed_bits), the kept set is
// the first top_k (all when <= 0), cut to the ids with w >= min_p, then to the shortest prefix
// holding top_p of the weight of the top-k set; the pick is the first kept id at which the
// running weight exceeds floor(u * the kept weight). A NaN logit counts as -inf. Every backend
// gives the same picks (integer sums), up to a one-ulp difference of exp() landing on a rounding
// boundary. forced >= 0 (a prompt token being scored): no draw; the pick is that id, and the
// result gives its rank too.
struct SampleSpec {
  float temperature = 0.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  double u = 0.0;     // the uniform draw in [0, 1)
  int32_t n_top = 0;  // top logprobs wanted, 0 .. kMaxTopLogprobs
  int32_t forced = -1;  // >= 0: the pick, not drawn (must be < vocab)
};

// A row's result: the token, its log-softmax under the (edited) logits before temperature and
// truncation, and the n_top highest-logit ids (ties: lower id) with theirs. With a forced pick,
// rank is the token's place in that order (1: the highest; ties: lower id first, a NaN logit
// last); 0 for drawn rows (not computed).
struct SampleOut {
  int32_t token = 0;
  float logprob = 0.0f;
  int32_t n_top = 0;
  int32_t rank = 0;
  int32_t top_token[kMaxTopLogprobs] = {};
  float top_logprob[kMaxTopLogprobs] = {};
};

// Fixed-point fraction bits of the sampling weights for a vocabulary: the sum of a row's
// weights (each <= 1) stays below 2^62.
int sampling_fixed_bits(int64_t vocab);
// The reference definitions the backends share: a LogitEdit applied to its value, and the
// sampling of one (edited) row.
float apply_logit_edit(float x, const LogitEdit& e);
void sample_row_reference(const float* x, int64_t vocab, const SampleSpec& spec, SampleOut& out);

// Where a rank's padded-exchange blocks go in its peers' memory (see Backend::moe_ep_pack_peers);
// every pointer in backend memory.
struct EpPeers {
  float* const* blocks = nullptr;   // [n_peers]: where this rank's block starts in peer p's area
  int64_t* const* flags = nullptr;  // [n_peers]: this rank's flag in peer p's flags
  int64_t* seq = nullptr;           // this rank's dispatch count
  int32_t* done = nullptr;          // a counter the backend keeps at 0 between calls
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  // ---- Memory. Activations, KV pages and op outputs live in the backend's memory: host for
  // the CPU backend, device for CUDA. Every pointer an op takes is in that memory (ids,
  // positions, page tables, RopeParams::inv_freq and GateParams::correction_bias included),
  // except where an op says "host". Ops are queued in order on the backend's stream.
  virtual void* alloc(std::size_t bytes) = 0;                           // never null; aborts on OOM
  virtual void release(void* p) = 0;
  virtual void upload(void* dst, const void* host_src, std::size_t bytes) = 0;    // host -> backend
  // host -> backend from memory of host_alloc() that the caller leaves unchanged until the ops
  // queued so far have run (CUDA: copied from where it is when the stream reaches the copy, not
  // through upload's staging, whatever its size).
  virtual void upload_pinned(void* dst, const void* host_src, std::size_t bytes) { upload(dst, host_src, bytes); }
  virtual void download(void* host_dst, const void* src, std::size_t bytes) = 0;  // backend -> host (waits)
  virtual void copy(void* dst, const void* src, std::size_t bytes) = 0;           // within backend memory
  virtual void fill_zero(void* p, std::size_t bytes) = 0;
  // Downloads that do not wait (a step's draws, read while the next step runs): download_async()
  // queues the copy behind the ops queued so far and returns a ticket; the bytes are in host_dst
  // once download_wait(ticket) has returned. host_dst comes from host_alloc() (CUDA: page-locked)
  // and must stay allocated until then. The CPU backend copies at once.
  virtual void* host_alloc(std::size_t bytes) { return ::operator new(bytes); }
  virtual void host_release(void* p) { ::operator delete(p); }
  virtual uint64_t download_async(void* host_dst, const void* src, std::size_t bytes) {
    if (bytes) download(host_dst, src, bytes);
    return 0;
  }
  virtual void download_wait(uint64_t ticket) { (void)ticket; }
  // A weight usable by the ops: the CPU backend returns `w` (views into the checkpoint mapping);
  // the CUDA backend copies it to the device once and keeps it until the backend is destroyed.
  virtual WeightView prepare_weight(const WeightView& w) = 0;
  // Waits for all queued work (CUDA: the backend's stream).
  virtual void synchronize() = 0;
  // The cudaStream_t ops are queued on, or nullptr (CPU); communicators share it.
  virtual void* stream() const { return nullptr; }
  // ---- Lanes: a second queue beside the first, for the two-batch overlap (one micro-batch's
  // exchange on lane 1 while the other's compute runs on lane 0). Ops go to the current lane
  // (0 unless set_lane said otherwise); lane_signal() marks the point the current lane has
  // reached and lane_wait(mark) holds the current lane until that point, whichever lane it was
  // on. Only the model's exchange steps run on lane 1, so ops that share a backend workspace never
  // run side by side. A backend of one queue (the CPU's: every op done when it returns) ignores
  // all of it; a recording (capture_begin) must start and end on lane 0, with lane 1 waited for.
  virtual int lanes() const { return 1; }
  virtual void set_lane(int lane) { (void)lane; }
  virtual uint64_t lane_signal() { return 0; }
  virtual void lane_wait(uint64_t mark) { (void)mark; }
  // The cudaStream_t of `lane` (communicators bound to lane 1), or nullptr.
  virtual void* lane_stream(int lane) const { return lane == 0 ? stream() : nullptr; }

  // Whether weight views of `dtype` are accepted by embedding, rms_norm and linear.
  virtual bool supports_weight(DType dtype) const = 0;
  // Whether a KV cache of `dtype` elements is taken by the cache ops (paged_write, paged_gather,
  // kv_write, mla_absorbed, mla_decode). f32 always is.
  virtual bool supports_kv(DType dtype) const { return dtype == DType::f32; }

  // out[i, :] = table[ids[i], :] for i < n; ids must lie in [0, table.rows).
  virtual void embedding(const WeightView& table, const int32_t* ids, int64_t n, float* out) = 0;
  // out[i] = x[i] / sqrt(mean(x[i]^2) + eps) * w, rows of d = w.cols; out may equal x.
  virtual void rms_norm(const float* x, const WeightView& w, int64_t n, float eps, float* out) = 0;
  // residual += x, then out = rms_norm(residual) (the pre-norm of the next sub-layer).
  virtual void add_rms_norm(float* residual, const float* x, const WeightView& w, int64_t n,
                            float eps, float* out) = 0;
  // y[n, w.rows] = x[n, w.cols] · W^T (nn.Linear without bias); y must not alias x.
  virtual void linear(const float* x, int64_t n, const WeightView& w, float* y) = 0;
  // linear(x, n, *o.w, o.y) for each o: several projections of the same rows (MLA's q and kv_a,
  // an MLP's gate and up), whose weights share x's width. A backend that rounds the rows for its
  // GEMMs rounds them once. Default: one linear call each.
  struct LinearOut {
    const WeightView* w;
    float* y;
  };
  virtual void linear_many(const float* x, int64_t n, std::span<const LinearOut> outs);
  // A sub-layer's pre-norm and its first projections in one call: out = rms_norm(x) (residual
  // null) or add_rms_norm(residual, x, ...), then linear_many(out, n, outs). A backend that rounds
  // the rows for its GEMMs rounds them as the norm writes them. Each y must not alias out.
  // Default: the two calls.
  virtual void norm_linear(float* residual, const float* x, const WeightView& w, int64_t n, float eps, float* out,
                           std::span<const LinearOut> outs);
  // dst[r * ldd + c] = src[r * lds + c] for r < rows, c < cols (strided 2-D copy; no overlap).
  virtual void copy2d(float* dst, int64_t ldd, const float* src, int64_t lds, int64_t rows,
                      int64_t cols) = 0;
  // Cache write: columns [col0, col0 + cols) of the cache rows of positions start .. start+n-1
  // of the sequence `cache` describes take src rows (row i at src + i * lds).
  virtual void paged_write(const PagedLatent& cache, int64_t col0, int64_t cols, int64_t start,
                           int64_t n, const float* src, int64_t lds) = 0;
  // Cache read: out[j * ldo + k * copy_stride + c] = column col0 + c of the cache row of
  // position j, j < n, for each of `copies` copies (k < copies; 1 for a plain gather; MLA's
  // expanded form puts the shared rope key into every head this way).
  virtual void paged_gather(const PagedLatent& cache, int64_t col0, int64_t cols, int64_t n,
                            float* out, int64_t ldo, int64_t copies, int64_t copy_stride) = 0;
  // paged_gather (one copy) for several sequences: caches[i]'s positions j < n[i] into out rows
  // row0[i] + j (row stride ldo). Default: one paged_gather each.
  virtual void paged_gather_many(const PagedLatent* caches, const int64_t* n, const int64_t* row0, int64_t n_seqs,
                                 int64_t col0, int64_t cols, float* out, int64_t ldo);
  // Batched strided linear: for b < batch, y_b[n, w.rows] = x_b[n, w.cols] · W_b^T with
  // x_b(i, c) = x[b * stride_x + i * ldx + c], y_b(i, r) = y[b * stride_y + i * ldy + r] and W_b
  // the view w moved by b * w_stride elements (per-head projections of MLA in one call).
  virtual void linear_batched(const float* x, int64_t ldx, int64_t stride_x, int64_t n,
                              const WeightView& w, int64_t w_stride, int64_t batch, float* y,
                              int64_t ldy, int64_t stride_y) = 0;
  // Cache write by flat slot: base[slots[i] * width + col0 + c] = src[i * lds + c], i < n,
  // c < cols (slot = page * page_size + position % page_size, the same for every layer); the
  // cache holds elements of `dtype` (values rounded to it). A negative slot skips its row (the
  // padding rows of a decode step, ForwardOptions::decode_bucket).
  virtual void kv_write(void* base, DType dtype, int64_t width, const int64_t* slots, int64_t n,
                        int64_t col0, int64_t cols, const float* src, int64_t lds) = 0;
  // MlaPrepare in one pass: each token's query rope parts rotated in place (and copied to q_pe
  // when given); rms_norm(latent) · kv_norm and the rotated rope key written to its cache slot
  // (a negative slot writes nothing). The same values as rope, rms_norm and kv_write one by one;
  // kva is left as it is.
  virtual void mla_prepare(const MlaPrepare& a) = 0;
  // mla_prepare, then the absorbed form's query latents: q_lat [n, n_heads, w_uk.rows] = each
  // head's nope part times its W_UK, linear_batched(a.q, a.q_stride, a.q_head_dim, a.n, w_uk,
  // w_stride, a.n_heads, q_lat, n_heads * w_uk.rows, w_uk.rows) with w_uk.cols = a.nope. One call,
  // so that a backend can write the product's input in its GEMM's precision as it prepares the
  // rows. Default: the two calls.
  virtual void mla_prepare_uk(const MlaPrepare& a, const WeightView& w_uk, int64_t w_stride, float* q_lat);
  // y[i] += x[i], i < count.
  virtual void add(float* y, const float* x, int64_t count) = 0;
  // out[i] = silu(gate[i]) * up[i], i < count (SwiGLU; out may alias either input).
  virtual void silu_mul(const float* gate, const float* up, int64_t count, float* out) = 0;

  // In-place interleaved RoPE (DeepSeek: pairs (2i, 2i+1)) on the rope part of n tokens × n_heads
  // heads: head h of token t starts at x + t*token_stride + h*head_stride; positions[t] its
  // position in the sequence.
  virtual void rope(float* x, int64_t n, int64_t n_heads, int64_t token_stride,
                    int64_t head_stride, const int64_t* positions, const RopeParams& p) = 0;

  // Expanded (naive) attention of one sequence: q [n_q, H, d_qk], k [n_kv, H, d_qk],
  // v [n_kv, H, d_v] -> out [n_q, H, d_v]. Query i sits at position q_start + i and sees keys
  // 0 .. q_start + i (causal over cached + new tokens). Scores scaled by `scale`, fp32 softmax.
  virtual void attention(const float* q, const float* k, const float* v, int64_t n_q, int64_t n_kv,
                         int64_t n_heads, int64_t d_qk, int64_t d_v, int64_t q_start, float scale,
                         float* out) = 0;
  // attention() for several sequences packed along the rows of q, k, v and out (seqs: HOST
  // array of n_seqs, rows of different sequences disjoint), so that one call can fill the GPU.
  // The default runs attention() per sequence.
  virtual void attention_packed(const float* q, const float* k, const float* v, const PackedSeq* seqs,
                                int64_t n_seqs, int64_t n_heads, int64_t d_qk, int64_t d_v, float scale, float* out);
  // attention_packed in MLA's expanded form, from what its keys and values are made of: kvb
  // [kv rows, H, nope + d_v] (kv_b_proj's output: each head's key part, then its value) and k_pe
  // [kv rows, rope] (the rotated rope key, shared by the heads), kv rows = the sequences' key rows.
  // Head h's key at row r is [kvb[r, h, :nope], k_pe[r]] and its value kvb[r, h, nope:]. k
  // [kv rows, H, nope + rope] and v [kv rows, H, d_v] are room for them: the default builds them
  // there, then runs attention_packed; a backend may build them in its own memory instead.
  virtual void attention_packed_mla(const float* q, const float* kvb, const float* k_pe, const PackedSeq* seqs,
                                    int64_t n_seqs, int64_t n_heads, int64_t nope, int64_t rope, int64_t d_v,
                                    float scale, float* k, float* v, float* out);
  // Absorbed MLA of one sequence over its paged latent cache: q_lat [n_q, H, kv_lora] (q_nope
  // already multiplied by W_UK), q_pe [n_q, H, rope_dim] (rotated) -> out_lat [n_q, H, kv_lora]
  // = softmax(scale · (q_lat·c + q_pe·k_pe)) · c over cache positions 0 .. q_start + i.
  virtual void mla_absorbed(const float* q_lat, const float* q_pe, int64_t n_q, int64_t n_heads,
                            const PagedLatent& cache, int64_t q_start, float scale,
                            float* out_lat) = 0;

  // Absorbed MLA decode of a batch of single-token sequences: q_lat [n_seqs, H, kv_lora],
  // q_pe [n_seqs, H, rope_dim] -> out_lat [n_seqs, H, kv_lora], as mla_absorbed per sequence.
  virtual void mla_decode(const float* q_lat, const float* q_pe, int64_t n_heads,
                          const PagedBatch& cache, float scale, float* out_lat) = 0;
  // mla_decode, then each head's value projection: linear_batched(out_lat, n_heads * kv_lora,
  // kv_lora, n_seqs, w_uv, w_stride, n_heads, o, ldo, stride_o), then, when o_proj is given, the
  // output projection linear(o, n_seqs, *o_proj->w, o_proj->y) (o's rows contiguous: ldo =
  // o_proj->w->cols). One call, so that a backend can hand each product's input to its GEMM in
  // the GEMM's input precision, without a pass over it; out_lat (scratch of [n_seqs, H,
  // kv_lora]) may then be left unwritten, and o too when o_proj is given. Default: the calls.
  virtual void mla_decode_uv(const float* q_lat, const float* q_pe, int64_t n_heads, const PagedBatch& cache,
                             float scale, float* out_lat, const WeightView& w_uv, int64_t w_stride, float* o,
                             int64_t ldo, int64_t stride_o, const LinearOut* o_proj);

  // MoE router: logits [n, n_experts] (x · gate^T) -> ids [n, top_k] and weights [n, top_k]
  // (each row followed by p.shared_slots slots). Ids of a token are ordered by descending selection
  // score (ties: lower expert id first).
  virtual void moe_gate(const float* logits, int64_t n, const GateParams& p, int32_t* ids,
                        float* weights) = 0;
  // Stable counting sort of n_slots expert ids: order[j] = the slot at sorted position j;
  // position[order[j]] = j when position is not null (where each slot went). The slots per expert
  // go to the host (the all-to-all and the grouped GEMMs need them there) and are read by
  // moe_counts, which must follow before the next moe_sort: work issued in between overlaps their
  // trip, the one host synchronisation of a MoE layer.
  virtual void moe_sort(const int32_t* ids, int64_t n_slots, int64_t n_experts, int32_t* order,
                        int32_t* position) = 0;
  // counts[e] = slots of the last moe_sort routed to expert e (its n_experts entries, HOST
  // memory); waits for them. An expert id outside [0, n_experts) throws here or in moe_sort.
  virtual void moe_counts(int64_t* counts) = 0;
  // The counts of the last moe_sort into BACKEND memory dst [n_experts], in stream order: no
  // wait, and moe_counts may still follow.
  virtual void moe_counts_to(int64_t* dst) = 0;
  // out[j, :] = x[rows[j], :] for j < n, rows of d floats (token permute).
  virtual void gather_rows(const float* x, const int32_t* rows, int64_t n, int64_t d,
                           float* out) = 0;
  // out[j, :] = x[rows[j] / div, :]: the tokens of sorted MoE slots (slot = token * top_k + k)
  // straight from moe_sort's order, with no trip through the host. out_dtype bf16: rounded
  // (rows of bf16 for an exchange to move, as bf16 experts read them).
  virtual void gather_rows_div(const float* x, const int32_t* rows, int64_t div, int64_t n,
                               int64_t d, void* out, DType out_dtype = DType::f32) = 0;
  // out[rows[j], :] = x[j, :] for j < n, rows of d floats (token unpermute); rows distinct.
  virtual void scatter_rows(const float* x, const int32_t* rows, int64_t n, int64_t d,
                            float* out) = 0;
  // The routed experts of one rank: sorted rows p_e .. p_e + counts[e] - 1 (p_e = counts of the
  // experts before e; counts in HOST memory) go through expert e's SwiGLU
  // down(silu(gate x) * up x): row p reads x[order[p] / x_div] and its result lands in
  // out[order[p]] (rows of out that no slot names keep their bytes). x rows have gate[0].cols
  // floats; experts with no rows are skipped. With
  // x_div = top_k and order = moe_sort's order, x is the tokens themselves and out is in slot
  // order (no gathered copy of the rows); x_div = 1: rows in and out at the same index.
  // out_dtype bf16: each result rounded once to bf16 (as a bf16 model's down projection writes it),
  // half the bytes for moe_combine to read; out then has out_rows rows (every order value below).
  // x_dtype bf16: x holds bf16 rows (an exchange's, which bf16 experts' kernels read as they are);
  // only with x_div 1 and out_rows the rows of x.
  virtual void moe_experts(const void* x, const int32_t* order, int64_t x_div, const int64_t* counts,
                           int64_t n_experts, const WeightView* gate, const WeightView* up,
                           const WeightView* down, void* out, DType out_dtype = DType::f32,
                           int64_t out_rows = 0, DType x_dtype = DType::f32) = 0;
  // moe_experts with the counts in BACKEND memory (moe_counts_to) and every expert given
  // `capacity` rows, counts[e] <= capacity (a bound known without the counts, such as the tokens
  // routed: top-k picks distinct experts): shapes fixed by (n_experts, capacity), no host trip, so
  // a step can be queued whole. Experts with no rows cost their weights' read. `rows`: the sum of
  // the counts as known without them (the slots routed), by which a backend may shape its work;
  // a wrong one costs time, never results; 0: none known. out_dtype, out_rows, x_dtype: as
  // moe_experts'.
  virtual void moe_experts_fixed(const void* x, const int32_t* order, int64_t x_div, const int64_t* counts,
                                 int64_t n_experts, int64_t capacity, int64_t rows, const WeightView* gate,
                                 const WeightView* up, const WeightView* down, void* out,
                                 DType out_dtype = DType::f32, int64_t out_rows = 0,
                                 DType x_dtype = DType::f32) = 0;
  // The padded expert-parallel exchange (Model::moe with ep > 1 and the counts kept in backend
  // memory): every peer of the EP group gets a block of `capacity` rows, so the all-to-all's sizes
  // are known without the counts. Sender: sorted slot j (moe_sort's order; counts [n_peers *
  // experts_per_peer] from moe_counts_to) of expert e goes to peer p = e / experts_per_peer, at
  // row r = p * capacity + (j - the first sorted slot of p's experts): send[r, :] =
  // x[order[j] / x_div, :] and slot_row[order[j]] = r (moe_combine's rows once the results come
  // back in the same layout). Rows of a block past its count are left as they are. A peer's count
  // must not exceed capacity (tokens * min(top_k, experts_per_peer) is a bound: a token picks
  // distinct experts); the CPU reference throws, CUDA clamps (memory stays safe, results do not).
  // send_dtype bf16: the rows rounded to bf16 (half the bytes to move).
  virtual void moe_ep_pack(const float* x, const int32_t* order, int64_t x_div, const int64_t* counts,
                           int64_t n_peers, int64_t experts_per_peer, int64_t capacity, int64_t n_slots, int64_t d,
                           void* send, int32_t* slot_row, DType send_dtype = DType::f32) = 0;
  // Receiver: counts [n_peers, n_local] (source p's rows per local expert, in BACKEND memory),
  // whose rows sit in p's block (p * capacity ..), experts ascending. local_counts[e] = Σ_p
  // counts[p, e] and order[q] = the received row at position q of the rows sorted by expert,
  // sources ascending within an expert: moe_experts_fixed's order (x_div 1), results landing in
  // the received rows' layout. Negative counts, or a source's counts past its block: the CPU
  // reference throws; CUDA counts them as 0 and cuts them at the block.
  virtual void moe_ep_unpack(const int64_t* counts, int64_t n_peers, int64_t n_local, int64_t capacity,
                             int64_t* local_counts, int32_t* order) = 0;
  // The padded exchange with no collective library (EpExchange over peer memory): each rank's
  // receive and return areas are mapped into its peers, blocks are `stride` rows (capacity rows,
  // then a header row holding the counts of the receiver's experts as int64: 8 * experts_per_peer
  // bytes, within a row of d f32 or bf16 values), and a flag per source says a block is complete. Flags only grow; *peers.seq counts the
  // rank's dispatches, the same on every rank. All pointers in BACKEND memory.
  // moe_ep_pack's rows, written to peers.blocks[p] + i * d, the header at row capacity, slot_row
  // = p * stride + i; then *seq + 1 into each peers.flags[p], and *seq incremented. Rows of
  // rows_dtype (f32, or bf16 with d % 4 == 0: rows and header at d bf16 values a row).
  virtual void moe_ep_pack_peers(const float* x, const int32_t* order, int64_t x_div, const int64_t* counts,
                                 int64_t n_peers, int64_t experts_per_peer, int64_t capacity, int64_t stride,
                                 int64_t n_slots, int64_t d, const EpPeers& peers, int32_t* slot_row,
                                 DType rows_dtype = DType::f32) = 0;
  // Waits until flags[p] >= *seq for every source p, then counts [n_peers * experts_per_peer] =
  // the headers of the blocks in `area` (source p's block at row p * stride, rows of rows_dtype),
  // and local_counts / order as moe_ep_unpack gives them from those counts with blocks of `stride`
  // rows.
  virtual void moe_ep_unpack_peers(const void* area, const int64_t* flags, const int64_t* seq, int64_t n_peers,
                                   int64_t experts_per_peer, int64_t capacity, int64_t stride, int64_t d,
                                   int64_t* counts, int64_t* local_counts, int32_t* order,
                                   DType rows_dtype = DType::f32) = 0;
  // Source p's results (rows p * stride .. as many as counts [p, :] sum to, cut at capacity) to
  // peers.blocks[p]; then *seq into each peers.flags[p]. Rows of d values of `dtype`, f32 or bf16
  // (moe_experts' bf16 results: half the bytes), the same in the peers' blocks (row i at
  // peers.blocks[p] + i * d values of that type).
  virtual void moe_ep_return_peers(const void* results, const int64_t* counts, int64_t n_peers,
                                   int64_t experts_per_peer, int64_t capacity, int64_t stride, int64_t d,
                                   const EpPeers& peers, DType dtype = DType::f32) = 0;
  // Waits until flags[0 .. n) all reach *seq.
  virtual void moe_ep_wait(const int64_t* flags, int64_t n, const int64_t* seq) = 0;

  // Memory another process of the node can map (CUDA IPC): export_memory gives the bytes that
  // import_memory takes there for an allocation of alloc(); release_imported unmaps it. Both
  // throw dpa::Error where the mapping cannot be made (no peer access between the GPUs).
  virtual bool supports_peer_memory() const { return false; }
  // Whether bf16 experts (moe_experts*) compute from their input rows rounded to bf16, as every
  // CUDA form does; then rows handed to them in bf16 (an exchange's) change no result. The CPU
  // reference computes with f32 rows.
  virtual bool bf16_expert_rows() const { return false; }
  virtual std::vector<uint8_t> export_memory(void* p);
  virtual void* import_memory(const std::vector<uint8_t>& handle);
  virtual void release_imported(void* p);

  // out[t, :] += Σ_k weights[t, k] · y[row(t*top_k + k), :], summed in k order, where row(s) =
  // rows[s] (the expert results still in sorted order: moe_sort's position) or s when rows is
  // null (unpermuted). With accumulate false, out[t, :] = the sum (no zero fill before). y holds
  // f32 rows, or bf16 ones with y_dtype bf16 (moe_experts_fixed's bf16 results).
  virtual void moe_combine(const void* y, const int32_t* rows, const float* weights, int64_t n,
                           int64_t top_k, int64_t d, float* out, bool accumulate, DType y_dtype = DType::f32) = 0;

  // dst[pairs[2i]] = src[pairs[2i + 1] * stride] for i < n: a step's input ids taken from an
  // earlier step's draws where they are (argmax outputs: stride 1; SampleOut::token: the size of a
  // SampleOut in int32s), so the host need not see them first.
  virtual void take_tokens(int32_t* dst, const int32_t* src, int64_t stride, const int32_t* pairs, int64_t n) = 0;
  // out[i] = argmax of logits row i (lowest index on ties): greedy sampling.
  virtual void argmax(const float* logits, int64_t n, int64_t vocab, int32_t* out) = 0;
  // logits[e.row * vocab + e.token] = apply_logit_edit(that, e) for each of n edits.
  virtual void edit_logits(float* logits, int64_t vocab, const LogitEdit* edits, int64_t n) = 0;
  // For i < n: logits[rows[i] * vocab + t] = -inf for every t < vocab whose bit is clear in
  // masks[i * token_mask_words(vocab) ...] (the tokens a constrained row may not draw); rows are
  // distinct.
  virtual void mask_logits(float* logits, int64_t vocab, const uint32_t* masks, const int32_t* rows, int64_t n) = 0;
  // out[i] = the token drawn from logits row i under specs[i] (SampleSpec's definition), with
  // logprobs; i < n.
  virtual void sample(const float* logits, int64_t n, int64_t vocab, const SampleSpec* specs,
                      SampleOut* out) = 0;

  // Lets attention round its fp32 operands to TF32 (the GEMM forms, expanded and absorbed) or
  // to bf16 (the CUDA flash kernel of the expanded form) on tensor cores. The model turns it on
  // over a bf16 KV cache, whose values already carry bf16 precision; off by default (IEEE
  // fp32). Backends without such a path ignore it.
  virtual void set_attention_tf32(bool) {}

  // Copy bandwidth of the backend's memory in GB/s of bytes read + written (a large buffer copied
  // a few times, the median), measured on the first call and kept; 0 when it cannot be measured
  // (no room for the buffers). The denominator of a step's floor (--profile-phases).
  virtual double copy_bandwidth_gbs();

  // ---- Graphs (experimental: DPA_CUDA_GRAPHS). capture_begin() starts recording the ops queued
  // from now on instead of running them (false: this backend cannot); capture_end() stops and
  // returns an executable graph of them, or null when the capture failed; nothing recorded has
  // run either way. While recording, an op that would wait for the device, copy from the host or
  // (re)allocate memory throws instead. replay(g) queues graph g; drop_graph(g) frees it.
  // workspace_epoch() changes whenever a workspace the backend owns is reallocated: a graph that
  // recorded the old address must not be replayed after that.
  virtual bool capture_begin() { return false; }
  virtual void* capture_end() { return nullptr; }
  virtual void replay(void* graph) { (void)graph; }
  virtual void drop_graph(void* graph) { (void)graph; }
  virtual uint64_t workspace_epoch() const { return 0; }

  // ---- Profiler window (DPA_PROFILE_DECODE_STEP): open(true) / open(false) bracket the work an
  // outside profiler should record (the CUDA backend: cudaProfilerStart / Stop, for `ncu
  // --profile-from-start off`). A no-op elsewhere.
  virtual void profiler_window(bool open) { (void)open; }

  // ---- Phase timing (profiling). phase_mark(name) starts phase `name` at this point of the
  // queue, ending the previous one; phase_collect() ends the last phase, waits for the queued
  // work and adds each phase's seconds into into[name], then forgets the marks. This default
  // takes wall-clock times after synchronize() (exact for the synchronous CPU ops); the CUDA
  // backend records events instead, so marking does not stall the stream.
  virtual void phase_mark(const char* name) {
    synchronize();
    marks_.emplace_back(name, std::chrono::steady_clock::now());
  }
  virtual void phase_collect(std::map<std::string, double>& into) {
    if (marks_.empty()) return;
    synchronize();
    const auto end = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < marks_.size(); ++i) {
      const auto stop = i + 1 < marks_.size() ? marks_[i + 1].second : end;
      into[marks_[i].first] += std::chrono::duration<double>(stop - marks_[i].second).count();
    }
    marks_.clear();
  }

 private:
  std::vector<std::pair<const char*, std::chrono::steady_clock::time_point>> marks_;
};

// Owning buffer of n elements of T in a backend's memory.
template <typename T>
class Buffer {
 public:
  Buffer() = default;
  Buffer(Backend& be, std::size_t n) : be_(&be), n_(n), p_(n ? static_cast<T*>(be.alloc(n * sizeof(T))) : nullptr) {}
  ~Buffer() { reset(); }
  Buffer(Buffer&& o) noexcept : be_(o.be_), n_(o.n_), p_(o.p_) { o.p_ = nullptr, o.n_ = 0; }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) reset(), be_ = o.be_, n_ = o.n_, p_ = o.p_, o.p_ = nullptr, o.n_ = 0;
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  // Grows (never shrinks) to at least n elements; contents are not kept.
  void ensure(Backend& be, std::size_t n) {
    if (n > n_ || be_ != &be) *this = Buffer(be, n);
  }
  // As ensure, but a buffer that must grow takes half as much again (and 16), so that a size that
  // creeps up each step (page tables, the experts' row orders) does not move it every step.
  // Returns whether it moved (a recorded graph holding the old address is then stale).
  bool ensure_headroom(Backend& be, std::size_t n) {
    if (n <= n_ && be_ == &be) return false;
    *this = Buffer(be, n + n / 2 + 16);
    return true;
  }
  T* data() const { return p_; }
  std::size_t size() const { return n_; }
  void reset() {
    if (p_) be_->release(p_);
    p_ = nullptr, n_ = 0;
  }

 private:
  Backend* be_ = nullptr;
  std::size_t n_ = 0;
  T* p_ = nullptr;
};

// The plain fp32 CPU reference.
std::unique_ptr<Backend> make_cpu_backend();

// The experts' x on every backend (same message): f32, or bf16 rows with row divisor 1 and their
// count in out_rows.
void check_expert_rows(const char* op, DType x_dtype, int64_t x_div, int64_t out_rows);
// The argument checks moe_ep_pack / moe_ep_unpack share on every backend (same messages).
void check_ep_layout(const char* op, int64_t n_peers, int64_t per_peer, int64_t capacity, int64_t x_div);
// The bytes of one row of d values the exchange dispatches (moe_ep_pack*, gather_rows_div, the
// experts' x): f32, or bf16 with d % 4 == 0 (the peer form's int64 headers stay aligned).
std::size_t ep_row_bytes(const char* op, int64_t d, DType dtype);
// ... and those of the peer-memory form, which returns a row's bytes: blocks of at least
// capacity + 1 rows, rows of d values of `rows` (as ep_row_bytes) that hold the header's per_peer
// int64 counts and keep them 8-byte aligned.
std::size_t check_ep_peers(const char* op, int64_t n_peers, int64_t per_peer, int64_t capacity, int64_t stride,
                           int64_t d, DType rows = DType::f32);
// The bytes of one result row of d values in moe_ep_return_peers: f32, or bf16 with d even (the
// row a whole number of 4-byte words); anything else throws.
std::size_t ep_result_row_bytes(const char* op, int64_t d, DType dtype);

// moe_experts one expert at a time through be's plain ops (gather, gate and up, SwiGLU, down,
// scatter): the CPU reference's definition, and the CUDA backend's path for experts of mixed
// shapes or dtypes. `workspace(floats)` returns backend memory for one expert's rows (reused).
void moe_experts_per_expert(Backend& be, const float* x, const int32_t* order, int64_t x_div,
                            const int64_t* counts, int64_t n_experts, const WeightView* gate, const WeightView* up,
                            const WeightView* down, float* out,
                            const std::function<float*(std::size_t floats)>& workspace);

}  // namespace dpa::backend
