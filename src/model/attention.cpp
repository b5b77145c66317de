// MLA attention of one layer for this rank's heads: projections, RoPE and cache write (one
// mla_prepare), then the absorbed form for single-token sequences (decode: W_UK folded into the
// query, one batched mla_decode over the paged latents of every such sequence, W_UV after), and
// the expanded form (k/v rebuilt from the cached latents through kv_b_proj, sequences packed
// along the rows) for chunks of several tokens, or the absorbed form when forced; o_proj on the
// local heads' columns, all-reduced over attn_tp. Every buffer is backend memory.
#include <algorithm>
#include <vector>

#include "dist/communicator.h"
#include "model/forward.h"

namespace dpa::model {

void Model::attention(int64_t layer, const Micro& m, const PreNorm& pre, float* h, float* out) {
  const ModelConfig& c = config();
  const std::vector<SeqInput>& batch = m.batch;
  const int64_t n = m.n;
  const LayerWeights& lw = weights_.layers[static_cast<std::size_t>(layer)];
  const int64_t Hl = weights_.n_local_heads(), D = c.hidden_size;
  const int64_t nope = c.qk_nope_head_dim, R = c.qk_rope_head_dim, dqk = c.qk_head_dim();
  const int64_t dv = c.v_head_dim, L = c.kv_lora_rank;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const float scale = static_cast<float>(c.softmax_scale());

  // h from its pre-norm, then q [n, Hl, dqk] and the compressed kv [n, L + R], both projections
  // of h (one call: the rows are rounded once, as the norm writes them, where the backend rounds
  // them). When every row takes the absorbed form, q is read only by mla_prepare_uk, which takes
  // row strides: one product over q_proj's and kv_a_proj's rows together then writes both side
  // by side (one GEMM of 3,648 columns instead of 3,072 and 576: V2-Lite's 576 alone fill a
  // fifth of the GPU for as long as q_proj's take).
  const bool fused = m.all_absorbed && lw.q_kv_a.data && fuse_q_kv_a_;
  const int64_t q_stride = fused ? lw.q_kv_a.rows : Hl * dqk, kva_stride = fused ? lw.q_kv_a.rows : L + R;
  float* q = scratch(q_, n * q_stride);
  float* kva = fused ? q + Hl * dqk : scratch(kva_, n * (L + R));
  if (fused) {
    const backend::Backend::LinearOut outs[] = {{&lw.q_kv_a, q}};
    be_.norm_linear(pre.residual, pre.x, pre.w, n, eps, h, outs);
  } else if (c.q_lora_rank > 0) {
    float* qa = scratch(qa_, n * c.q_lora_rank);
    const backend::Backend::LinearOut outs[] = {{&lw.q_a_proj, qa}, {&lw.kv_a_proj, kva}};
    be_.norm_linear(pre.residual, pre.x, pre.w, n, eps, h, outs);
    be_.rms_norm(qa, lw.q_a_norm, n, eps, qa);
    be_.linear(qa, n, lw.q_b_proj, q);
  } else {
    const backend::Backend::LinearOut outs[] = {{&lw.q_proj, q}, {&lw.kv_a_proj, kva}};
    be_.norm_linear(pre.residual, pre.x, pre.w, n, eps, h, outs);
  }
  // Rope on q; the latent [n, L] normalized and k_pe [n, R] rotated, both into the cache; when
  // every row takes the absorbed form, q's rope parts also copied apart for it (q_pe), and its
  // q_lat [n, Hl, L] = q_nope · W_UK per head in the same call.
  void* layer_base = cache_->view(layer, nullptr).base;
  const DType kv_dt = cache_->dtype();
  backend::MlaPrepare prep;
  prep.n = n, prep.q = q, prep.n_heads = Hl, prep.q_stride = q_stride, prep.q_head_dim = dqk, prep.nope = nope;
  prep.q_pe = m.all_absorbed ? scratch(q_pe_, n * Hl * R) : nullptr;
  prep.kva = kva, prep.kva_stride = kva_stride, prep.kv_lora = L, prep.kv_norm = lw.kv_a_norm, prep.eps = eps;
  prep.positions = d_pos_.data() + m.row0, prep.rope = rope_;
  prep.cache = layer_base, prep.cache_dtype = kv_dt, prep.slots = d_slots_.data() + m.row0;
  const backend::WeightView w_uk = w_uk_[static_cast<std::size_t>(layer)].row_slice(0, L);
  const std::vector<bool>& absorbed = m.absorbed;
  const bool any_absorbed = m.any_absorbed, all_absorbed = m.all_absorbed;
  if (all_absorbed) be_.mla_prepare_uk(prep, w_uk, L * nope, scratch(q_lat_, n * Hl * L));
  else be_.mla_prepare(prep);

  float* o = scratch(o_, n * Hl * dv);
  const int64_t nd = static_cast<int64_t>(m.decode_rows.size());
  bool out_done = false;  // o_proj run with the decode
  if (any_absorbed) {
    mark("attention.decode");
    // The absorbed rows: every row when every sequence is absorbed; in a mixed step only the
    // single-token rows (the automatic form absorbs nothing else), gathered first so that the
    // W_UK and W_UV products do not run over the prefill tokens.
    const bool rows_only = !all_absorbed;
    const int64_t na = rows_only ? nd : n;
    const float* qa = q;
    if (rows_only) {
      float* dq = scratch(dq_, nd * Hl * dqk);
      be_.gather_rows(q, m.d_decode_rows.data(), nd, Hl * dqk, dq);
      qa = dq;
    }
    // q_lat [na, Hl, L] = q_nope · W_UK per head, q_pe [na, Hl, R] (all absorbed: both written by
    // mla_prepare_uk).
    float* q_lat = scratch(q_lat_, na * Hl * L);
    float* q_pe = scratch(q_pe_, na * Hl * R);
    float* out_lat = scratch(out_lat_, na * Hl * L);
    if (rows_only) {
      be_.copy2d(q_pe, R, qa + nope, dqk, na * Hl, R);
      be_.linear_batched(qa, Hl * dqk, dqk, na, w_uk, L * nope, Hl, q_lat, Hl * L, L);
    }
    // W_UV per head over the attended latents, into o (through the decode rows in a mixed step):
    // with the decode itself when it attends every absorbed row.
    const backend::WeightView w_uv0 = lw.w_uv(0, c);
    float* o_abs = rows_only ? scratch(o_abs_, nd * Hl * dv) : o;
    bool projected = false;

    // Every single-token sequence in one batched decode call.
    if (nd > 0) {
      backend::PagedBatch pb;
      pb.base = layer_base;
      pb.pages = d_pages_.data();
      pb.table_offset = m.d_decode_offset.data();
      pb.ctx_len = m.d_decode_ctx.data();
      pb.n_seqs = nd;
      pb.page_size = opts_.page_size;
      pb.kv_lora = L;
      pb.rope_dim = R;
      pb.max_ctx_len = decode_max_ctx_;
      pb.pool_rows = cache_->n_pages() * opts_.page_size;
      pb.dtype = kv_dt;
      if (m.decode_contiguous || rows_only) {
        // o_proj too when the decode rows are the step's rows.
        const backend::Backend::LinearOut proj{&lw.o_proj, out};
        out_done = !rows_only;
        be_.mla_decode_uv(q_lat, q_pe, Hl, pb, scale, out_lat, w_uv0, (nope + dv) * L, o_abs, Hl * dv, dv,
                          out_done ? &proj : nullptr);
        projected = true;
      } else {  // every sequence absorbed (forced), some of several tokens
        float* dq_lat = scratch(dq_lat_, nd * Hl * L);
        float* dq_pe = scratch(dq_pe_, nd * Hl * R);
        float* dout = scratch(dout_lat_, nd * Hl * L);
        be_.gather_rows(q_lat, m.d_decode_rows.data(), nd, Hl * L, dq_lat);
        be_.gather_rows(q_pe, m.d_decode_rows.data(), nd, Hl * R, dq_pe);
        be_.mla_decode(dq_lat, dq_pe, Hl, pb, scale, dout);
        be_.scatter_rows(dout, m.d_decode_rows.data(), nd, Hl * L, out_lat);
      }
    }
    if (!rows_only) {  // every sequence absorbed: those of several tokens one at a time
      int64_t t0 = 0;
      for (std::size_t i = 0; i < batch.size(); ++i) {
        const SeqInput& s = batch[i];
        const int64_t ns = static_cast<int64_t>(s.tokens.size());
        if (ns > 1) {
          const backend::PagedLatent view = cache_->view(layer, d_pages_.data() + m.page_offset[i]);
          be_.mla_absorbed(q_lat + t0 * Hl * L, q_pe + t0 * Hl * R, ns, Hl, view, s.start, scale,
                           out_lat + t0 * Hl * L);
        }
        t0 += ns;
      }
    }
    if (!projected) be_.linear_batched(out_lat, Hl * L, L, na, w_uv0, (nope + dv) * L, Hl, o_abs, Hl * dv, dv);
    if (rows_only) be_.scatter_rows(o_abs, m.d_decode_rows.data(), nd, Hl * dv, o);
  }

  if (!all_absorbed) {
    mark("attention.prefill");
    // Expanded: k = [k_nope from kv_b_proj, k_pe], v from kv_b_proj, for every cached position of
    // each chunk's sequence (the backend assembles them from kv_b_proj's output and the rope keys:
    // attention_packed_mla). The sequences are packed along the rows, as many at once as
    // kExpandedBytes of f32 buffers hold (at least one), so kv_b_proj and the attention run once
    // per pack instead of once per sequence.
    constexpr int64_t kExpandedBytes = int64_t{512} << 20;
    const int64_t row_bytes = (L + Hl * (nope + dv) + R + Hl * dqk + Hl * dv) * static_cast<int64_t>(sizeof(float));
    const int64_t budget_rows = std::max<int64_t>(1, kExpandedBytes / row_bytes);
    std::vector<backend::PackedSeq> pack;
    std::vector<backend::PagedLatent> views;  // each packed sequence's cache
    int64_t rows = 0;
    auto run_pack = [&] {
      if (pack.empty()) return;
      float* ctx_lat = scratch(ctx_lat_, rows * L);
      float* kvb = scratch(kvb_, rows * Hl * (nope + dv));
      float* k_pe = scratch(k_pe_, rows * R);
      float* k = scratch(k_, rows * Hl * dqk);
      float* v = scratch(v_, rows * Hl * dv);
      std::vector<int64_t> n_kv, kv0;
      for (const backend::PackedSeq& p : pack) n_kv.push_back(p.n_kv), kv0.push_back(p.kv0);
      const int64_t ns = static_cast<int64_t>(pack.size());
      be_.paged_gather_many(views.data(), n_kv.data(), kv0.data(), ns, 0, L, ctx_lat, L);
      be_.paged_gather_many(views.data(), n_kv.data(), kv0.data(), ns, L, R, k_pe, R);
      be_.linear(ctx_lat, rows, lw.kv_b_proj, kvb);
      be_.attention_packed_mla(q, kvb, k_pe, pack.data(), static_cast<int64_t>(pack.size()), Hl, nope, R, dv, scale, k,
                               v, o);
      pack.clear(), views.clear(), rows = 0;
    };
    int64_t t0 = 0;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const SeqInput& s = batch[i];
      const int64_t ns = static_cast<int64_t>(s.tokens.size());
      if (ns > 0 && !absorbed[i]) {
        const int64_t n_ctx = s.start + ns;
        if (rows > 0 && rows + n_ctx > budget_rows) run_pack();
        pack.push_back(backend::PackedSeq{t0, ns, rows, n_ctx, s.start});
        views.push_back(cache_->view(layer, d_pages_.data() + m.page_offset[i]));
        rows += n_ctx;
      }
      t0 += ns;
    }
    run_pack();
  }
  mark("attention.out");
  if (!out_done) be_.linear(o, n, lw.o_proj, out);
  if (comms_.attn_tp && comms_.attn_tp->size() > 1)
    comms_.attn_tp->all_reduce(out, out, static_cast<std::size_t>(n * D), DType::f32,
                               dist::ReduceOp::sum);
}

}  // namespace dpa::model
