// `dpa_serve make-model`: writes a random DeepSeek checkpoint (rank 0 only; other ranks wait).
#include <cstdio>
#include <memory>

#include <fmt/format.h>

#include "app/commands.h"
#include "core/error.h"
#include "dist/agree.h"
#include "dist/runtime.h"
#include "model/make_model.h"

namespace dpa::app {
namespace {

struct MakeModelFlags {
  model::MakeModelOptions opt;
  std::string dtype = "bf16";
};

int run_make_model(Context& ctx, MakeModelFlags& f) {
  auto& rt = ctx.runtime;
  std::optional<std::string> err;
  if (rt.rank() == 0) {
    try {
      if (f.dtype == "bf16") f.opt.dtype = DType::bf16;
      else if (f.dtype == "f32") f.opt.dtype = DType::f32;
      else throw ConfigError("dtype", fmt::format("'{}' is not bf16 or f32", f.dtype));
      const model::MakeModelResult r = model::make_model(f.opt);
      const auto& c = r.config;
      std::printf("make-model: preset %s -> %s\n", f.opt.preset.c_str(), f.opt.output.c_str());
      std::printf("  %s hidden=%lld layers=%lld heads=%lld q_lora=%lld experts=%lld top-%lld vocab=%lld\n",
                  c.architecture.c_str(), static_cast<long long>(c.hidden_size),
                  static_cast<long long>(c.num_hidden_layers), static_cast<long long>(c.num_attention_heads),
                  static_cast<long long>(c.q_lora_rank), static_cast<long long>(c.n_routed_experts),
                  static_cast<long long>(c.num_experts_per_tok), static_cast<long long>(c.vocab_size));
      std::printf("  parameters: %lld (%.2f B)\n", static_cast<long long>(r.n_params), r.n_params / 1e9);
      std::printf("  wrote %.3f GB in %d shard(s) in %.2f s: %.2f GB/s\n", r.n_bytes / 1e9, r.n_shards, r.seconds,
                  r.seconds > 0 ? r.n_bytes / 1e9 / r.seconds : 0.0);
      std::fflush(stdout);
    } catch (const Error& e) {
      err = e.what();
    }
  }
  // Every rank leaves together; an error on rank 0 becomes the same error everywhere.
  dist::agree_or_throw(rt.world(), err);
  return 0;
}

}  // namespace

Command make_model_command() {
  auto flags = std::make_shared<MakeModelFlags>();
  return {"make-model", "write a random Hugging Face checkpoint (tiny, v2-lite, v3-mini, v3-attn)",
          [flags](po::options_description& desc) {
            auto& o = flags->opt;
            desc.add_options()
                ("preset", po::value<std::string>(&o.preset)->default_value(o.preset), "tiny | v2-lite | v3-mini | v3-attn")
                ("output", po::value<std::string>(&o.output)->required(), "directory to write (created if absent)")
                ("layers", po::value<int64_t>(&o.layers), "override num_hidden_layers")
                ("experts", po::value<int64_t>(&o.experts), "override n_routed_experts")
                ("hidden", po::value<int64_t>(&o.hidden), "override hidden_size")
                ("dtype", po::value<std::string>(&flags->dtype)->default_value(flags->dtype), "bf16 | f32")
                ("seed", po::value<uint64_t>(&o.seed)->default_value(o.seed), "random seed of the weights")
                ("tokenizer-dir", po::value<std::string>(&o.tokenizer_dir),
                 "folder with tokenizer.json and tokenizer_config.json (default: the DeepSeek-V3 one in the source tree)");
          },
          [flags](Context& ctx) { return run_make_model(ctx, *flags); }};
}

}  // namespace dpa::app
