// Engine flags, model loading, executor and engine construction, signals.
#include "app/engine_setup.h"

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "core/error.h"
#include "core/log.h"
#include "dist/agree.h"
#include "dist/runtime.h"

namespace dpa::app {

namespace {
std::atomic<bool> g_interrupted{false};
extern "C" void on_signal(int) { g_interrupted.store(true); }

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("cannot read {}", path));
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// tokenizer_config.json: bos/eos tokens (strings or {"content": ...}) and the chat template
// (a string, or a list of {"name", "template"} of which "default" is taken).
void read_tokenizer_config(const std::string& path, EngineStack& s) {
  if (path.empty()) return;
  boost::system::error_code ec;
  auto v = boost::json::parse(read_file(path), ec);
  if (ec || !v.is_object()) throw Error(fmt::format("{}: not a JSON object", path));
  const auto& o = v.as_object();
  auto token = [&](const char* key) -> std::string {
    const auto* t = o.if_contains(key);
    if (!t) return "";
    if (t->is_string()) return std::string(t->as_string());
    if (t->is_object())
      if (const auto* c = t->as_object().if_contains("content"); c && c->is_string()) return std::string(c->as_string());
    return "";
  };
  s.info.bos_token = token("bos_token");
  s.info.eos_token = token("eos_token");
  const auto* ct = o.if_contains("chat_template");
  std::string tmpl;
  if (ct && ct->is_string()) tmpl = std::string(ct->as_string());
  if (ct && ct->is_array())
    for (const auto& e : ct->as_array())
      if (e.is_object()) {
        const auto* n = e.as_object().if_contains("name");
        const auto* t = e.as_object().if_contains("template");
        if (n && n->is_string() && n->as_string() == "default" && t && t->is_string()) tmpl = std::string(t->as_string());
      }
  if (!tmpl.empty()) s.chat_template = text::ChatTemplate::parse(tmpl);
  // transformers' Llama tokenizers (DeepSeek's among them) rebuild the post-processor from
  // add_bos_token (default true) and add_eos_token (default false): a completions prompt starts
  // with BOS there (vLLM's, SGLang's), whatever tokenizer.json's post-processor says.
  const auto* cls = o.if_contains("tokenizer_class");
  const std::string klass = cls && cls->is_string() ? std::string(cls->as_string()) : "";
  static const char* const kLlamaLike[] = {"LlamaTokenizerFast", "LlamaTokenizer", "CodeLlamaTokenizerFast",
                                           "CodeLlamaTokenizer", "GemmaTokenizerFast", "GemmaTokenizer"};
  if (!s.tokenizer || std::find(std::begin(kLlamaLike), std::end(kLlamaLike), klass) == std::end(kLlamaLike)) return;
  auto flag = [&](const char* key, bool def) {
    const auto* v = o.if_contains(key);
    return v && v->is_bool() ? v->as_bool() : def;
  };
  auto affix = [&](bool on, const std::string& token, const char* key) {
    std::vector<int32_t> ids;
    if (!on) return ids;
    const auto id = token.empty() ? std::nullopt : s.tokenizer->token_to_id(token);
    if (!id) throw Error(fmt::format("{}: {} is set but its token '{}' is not in the tokenizer", path, key, token));
    ids.push_back(*id);
    return ids;
  };
  s.tokenizer->set_special_affixes(affix(flag("add_bos_token", true), s.info.bos_token, "add_bos_token"),
                                   affix(flag("add_eos_token", false), s.info.eos_token, "add_eos_token"));
}
// --chat-template: a readable file, else the text itself when it looks like a template (vLLM
// takes both). A template that does not parse is a configuration error, not a per-request one.
std::unique_ptr<text::ChatTemplate> load_chat_template(const std::string& arg) {
  std::string tmpl;
  if (std::filesystem::is_regular_file(arg)) tmpl = read_file(arg);
  else if (arg.find("{{") != std::string::npos || arg.find("{%") != std::string::npos) tmpl = arg;
  else throw ConfigError("chat-template", fmt::format("'{}' is neither a file nor a template", arg));
  try {
    return text::ChatTemplate::parse(tmpl);
  } catch (const Error& e) {
    throw ConfigError("chat-template", e.what());
  }
}

serve::ToolParser resolve_tool_parser(const std::string& name, const text::Tokenizer* tok) {
  if (name == "auto")
    return tok && tok->token_to_id(serve::tool_calls_begin_marker()) ? serve::ToolParser::deepseek : serve::ToolParser::none;
  if (auto p = serve::tool_parser_from_name(name)) return *p;
  throw ConfigError("tool-call-parser", fmt::format("'{}': auto, none, deepseek_v3 or deepseek_v31", name));
}
}  // namespace

const std::atomic<bool>& interrupted() { return g_interrupted; }

void install_signal_handlers() {
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  std::signal(SIGUSR1, on_signal);
}

void add_engine_options(po::options_description& desc, EngineFlags& f) {
  desc.add_options()
      ("model", po::value<std::string>(&f.model)->required(), "Hugging Face checkpoint directory")
      ("served-model-name", po::value<std::string>(&f.served_model_name), "model name in the API (default: the directory name)")
      ("page-size", po::value<int64_t>(&f.page_size)->default_value(f.page_size), "tokens per KV page")
      ("max-total-tokens", po::value<int64_t>(&f.max_total_tokens)->default_value(f.max_total_tokens), "KV cache capacity per replica, in tokens (0: 16384 on the CPU; on GPUs what --gpu-memory-utilization leaves, capped by this when set)")
      ("gpu-memory-utilization", po::value<double>(&f.gpu_memory_utilization)->default_value(f.gpu_memory_utilization), "share of each GPU's memory for weights + KV cache")
      ("kv-cache-dtype", po::value<std::string>(&f.kv_cache_dtype)->default_value(f.kv_cache_dtype), "KV cache elements: auto (bfloat16 on GPUs for bf16 checkpoints, else float32) | float32 | bfloat16 (GPUs only)")
      ("max-num-seqs", po::value<int64_t>(&f.max_num_seqs)->default_value(f.max_num_seqs), "most sequences a replica runs at once")
      ("scheduling-policy", po::value<std::string>(&f.scheduling_policy)->default_value(f.scheduling_policy), "order of admission from each replica's queue: fcfs | priority (the request's 'priority', lower first, then arrival; the largest is preempted first) | lpm (longest cached prefix first; fcfs above 128 waiting or without prefix caching)")
      ("enforce-eager", po::bool_switch(&f.enforce_eager), "GPUs: run every step op by op (no CUDA graphs)")
      ("disable-overlap-schedule", po::bool_switch(&f.disable_overlap_schedule), "schedule and launch each step only after the one before has finished (by default the host prepares the next step while the device runs the current one)")
      ("cuda-graph-max-bs", po::value<int64_t>(&f.cuda_graph_max_bs)->default_value(f.cuda_graph_max_bs), "GPUs, single-rank replicas (attn_tp 1, ep 1): decode steps of up to this many sequences replay recorded CUDA graphs, their experts at a fixed capacity (0: none)")
      ("ep-exchange", po::value<std::string>(&f.ep_exchange)->default_value(f.ep_exchange), "ep > 1: how MoE rows move between ranks: exact (the routed rows, counts through the host: one wait per MoE layer) or padded (steps of up to --cuda-graph-max-bs tokens on every rank: fixed-size blocks, counts on the device, no wait; decode graphs too with attn_tp 1; larger steps exact)")
      ("enable-two-batch-overlap", po::bool_switch(&f.two_batch_overlap), "ep > 1 with --ep-exchange padded: run each step of at least --tbo-min-tokens tokens a rank as two micro-batches, one's exchange overlapping the other's compute (attn_tp 1)")
      ("tbo-min-tokens", po::value<int64_t>(&f.tbo_min_tokens)->default_value(f.tbo_min_tokens), "the fewest tokens a rank (the step's largest slice over the EP group) for which --enable-two-batch-overlap splits a step (0: where each half gives every local expert 32 rows on average)")
      ("max-num-batched-tokens", po::value<int64_t>(&f.max_num_batched_tokens)->default_value(f.max_num_batched_tokens), "token budget of one step per replica (chunked prefill; 0: 8192 on GPUs, 4096 on the CPU)")
      ("max-model-len", po::value<int64_t>(&f.max_model_len)->default_value(f.max_model_len), "longest prompt + output (0: min of the model's and the KV capacity)")
      ("enable-prefix-caching", po::value<bool>(&f.enable_prefix_caching)->default_value(f.enable_prefix_caching)->implicit_value(true), "reuse the KV pages of cached prompt prefixes on every replica (--enable-prefix-caching=false or --no-prefix-caching: off)")
      ("no-prefix-caching", po::bool_switch(&f.no_prefix_caching), "turn prefix caching off")
      ("router-policy", po::value<std::string>(&f.router.policy)->default_value(f.router.policy), "round_robin | random | shortest_queue | power_of_two | cache_aware")
      ("cache-threshold", po::value<double>(&f.router.cache_threshold)->default_value(f.router.cache_threshold), "cache_aware: least prefix-match ratio that routes by cache")
      ("balance-abs-threshold", po::value<int64_t>(&f.router.balance_abs_threshold)->default_value(f.router.balance_abs_threshold), "cache_aware: imbalanced when max - min requests exceeds this ...")
      ("balance-rel-threshold", po::value<double>(&f.router.balance_rel_threshold)->default_value(f.router.balance_rel_threshold), "cache_aware: ... and max > this * min")
      ("eviction-interval-secs", po::value<double>(&f.router.eviction_interval_secs)->default_value(f.router.eviction_interval_secs), "cache_aware: seconds between prefix-tree evictions")
      ("max-tree-size", po::value<int64_t>(&f.router.max_tree_size)->default_value(f.router.max_tree_size), "cache_aware: tokens per replica's prefix tree before LRU eviction")
      ("watchdog-timeout", po::value<double>(&f.watchdog_timeout)->default_value(f.watchdog_timeout), "seconds a step may stall before the job ends with a dump (0: off)")
      ("test-fault-rank", po::value<int>(&f.fault_rank)->default_value(f.fault_rank), "tests only: this world rank hangs at --test-fault-step (fault injection)")
      ("test-fault-step", po::value<int64_t>(&f.fault_step)->default_value(f.fault_step), "tests only: the step at which --test-fault-rank hangs")
      ("seed", po::value<uint64_t>(&f.seed)->default_value(f.seed), "base seed of unseeded sampling")
      ("chat-template", po::value<std::string>(&f.chat_template), "Jinja chat template (a file, or the template text itself) in place of tokenizer_config.json's")
      ("tool-call-parser", po::value<std::string>(&f.tool_call_parser)->default_value(f.tool_call_parser), "how chat tool calls are read from the output into message.tool_calls: auto (deepseek_v3 when the tokenizer has DeepSeek's tool-call tokens, else none) | none | deepseek_v3 | deepseek_v31 (both read V3 and V3.1 markup)")
      ("reasoning-parser", po::value<std::string>(&f.reasoning_parser)->default_value(f.reasoning_parser), "chat: the text before </think> becomes message.reasoning_content: none | deepseek_r1 (every request thinks unless chat_template_kwargs says thinking false) | deepseek_v3 (V3.1: those that say thinking true)")
      ("enable-auto-tool-choice", po::bool_switch(&f.enable_auto_tool_choice), "accepted for vLLM command lines: tool_choice \"auto\" is served whenever --tool-call-parser is not none");
}

EngineStack build_engine(Context& ctx, const EngineFlags& f) {
  EngineStack s;
  auto& rt = ctx.runtime;
  s.groups = std::make_unique<dist::Groups>(rt.world(), ctx.common.parallel);
  // Every rank opens the checkpoint; a problem on one node becomes one error everywhere.
  std::optional<std::string> err;
  try {
    s.checkpoint = model::Checkpoint::open(f.model);
  } catch (const Error& e) {
    err = e.what();
  }
  dist::agree_or_throw(rt.world(), err);
  const auto& cfg = s.checkpoint->config();
  engine::check_model_layout(cfg, s.groups->layout());
  if (f.page_size <= 0) throw ConfigError("page-size", "must be positive");
  const bool gpu = ctx.device == DeviceKind::cuda;
  const int64_t max_total_tokens = f.max_total_tokens > 0 ? f.max_total_tokens : gpu ? 0 : 16384;
  if (f.max_total_tokens < 0 || (max_total_tokens > 0 && max_total_tokens < f.page_size))
    throw ConfigError("max-total-tokens", "must hold at least one page");
  if (!(f.gpu_memory_utilization > 0 && f.gpu_memory_utilization <= 1))
    throw ConfigError("gpu-memory-utilization", "must be in (0, 1]");
  if (!s.checkpoint->tokenizer_path().empty()) s.tokenizer = text::Tokenizer::from_file(s.checkpoint->tokenizer_path());
  read_tokenizer_config(s.checkpoint->tokenizer_config_path(), s);
  // The template file may be missing on one node only: one error on every rank, no rank left waiting.
  err.reset();
  try {
    if (!f.chat_template.empty()) s.chat_template = load_chat_template(f.chat_template);
    s.info.tool_parser = resolve_tool_parser(f.tool_call_parser, s.tokenizer.get());
    const auto rp = serve::reasoning_parser_from_name(f.reasoning_parser);
    if (!rp)
      throw ConfigError("reasoning-parser", fmt::format("'{}': none, deepseek_r1 or deepseek_v3", f.reasoning_parser));
    s.info.reasoning_parser = *rp;
    if (f.enable_auto_tool_choice && s.info.tool_parser == serve::ToolParser::none)
      throw ConfigError("enable-auto-tool-choice",
                        "needs a tool-call parser: --tool-call-parser deepseek_v3 (auto found no tool-call tokens)");
  } catch (const Error& e) {
    err = e.what();
  }
  dist::agree_or_throw(rt.world(), err);

  engine::ExecutorOptions eo;
  eo.page_size = f.page_size;
  eo.n_pages = max_total_tokens / f.page_size;
  eo.gpu = gpu ? ctx.gpu : -1;
  eo.gpu_sharers = ctx.gpu_sharers;
  eo.gpu_memory_utilization = f.gpu_memory_utilization;
  eo.max_pages = eo.n_pages;
  eo.profile_phases = f.profile_phases;
  eo.keep_expert_counts = f.collect_expert_stats;
  if (f.cuda_graph_max_bs < 0 || f.cuda_graph_max_bs > (1 << 20))
    throw ConfigError("cuda-graph-max-bs", "must be in [0, 1048576]");
  eo.cuda_graph_max_tokens = f.enforce_eager ? 0 : f.cuda_graph_max_bs;
  if (f.ep_exchange != "exact" && f.ep_exchange != "padded")
    throw ConfigError("ep-exchange", fmt::format("'{}': exact or padded", f.ep_exchange));
  if (f.ep_exchange == "padded" && f.cuda_graph_max_bs == 0)
    throw ConfigError("ep-exchange", "padded sizes its blocks by --cuda-graph-max-bs, which is 0");
  eo.ep_padded_max_tokens = f.ep_exchange == "padded" ? f.cuda_graph_max_bs : 0;
  if (f.two_batch_overlap && f.ep_exchange != "padded")
    throw ConfigError("enable-two-batch-overlap", "overlaps the padded exchange: add --ep-exchange padded");
  if (f.tbo_min_tokens != 0 && (f.tbo_min_tokens < 2 || f.tbo_min_tokens > (1 << 20)))
    throw ConfigError("tbo-min-tokens", "must be 0 (auto) or in [2, 1048576]: a split needs two tokens");
  // Auto: where each half still gives every local expert kTboRowsPerExpert rows on average. Below
  // that the experts stream their weights, and two halves read them twice (perf/RESULTS.md: a
  // V2-Lite decode step of 256 tokens split in two took 1.8x as long on one H200).
  constexpr int64_t kTboRowsPerExpert = 32;
  const int64_t local_experts = cfg.n_routed_experts / std::max(1, s.groups->layout().ep);
  const int64_t tbo_auto = cfg.num_experts_per_tok > 0
                               ? (2 * kTboRowsPerExpert * local_experts / cfg.num_experts_per_tok + 15) / 16 * 16
                               : 2;
  eo.two_batch_overlap_min_tokens =
      f.two_batch_overlap ? (f.tbo_min_tokens > 0 ? f.tbo_min_tokens : std::max<int64_t>(tbo_auto, 2)) : 0;
  // Experiment: the exchange at ep 1, with the rank itself (its cost, the overlap, on one GPU).
  if (const char* v = std::getenv("DPA_EP_SELF_EXCHANGE")) {
    if (std::string(v) != "0" && std::string(v) != "1")
      throw Error(fmt::format("DPA_EP_SELF_EXCHANGE='{}': 0 or 1", v));
    eo.ep_self_exchange = std::string(v) == "1";
  }
  if (f.kv_cache_dtype == "float32" || f.kv_cache_dtype == "fp32")
    eo.kv_dtype = DType::f32;
  else if (f.kv_cache_dtype == "bfloat16" || f.kv_cache_dtype == "bf16")
    eo.kv_dtype = DType::bf16;
  else if (f.kv_cache_dtype != "auto")
    throw ConfigError("kv-cache-dtype", fmt::format("'{}': expected auto, float32 or bfloat16", f.kv_cache_dtype));
  s.executor = std::make_unique<engine::CheckpointExecutor>(*s.checkpoint, *s.groups, eo);
  const int64_t kv_tokens = s.executor->num_pages() * f.page_size;

  engine::EngineConfig ec;
  ec.scheduler.max_num_seqs = f.max_num_seqs;
  if (f.max_num_batched_tokens < 0) throw ConfigError("max-num-batched-tokens", "must be >= 0 (0: the device's default)");
  // GPUs: larger prefill chunks keep the GEMMs busy (v2-lite on an H200, 512 x 1024/1024: ~4%
  // more output tok/s at 8192 than at 4096, p99 ITL 163 -> 246 ms during prefill bursts).
  ec.scheduler.max_num_batched_tokens = f.max_num_batched_tokens > 0 ? f.max_num_batched_tokens : gpu ? 8192 : 4096;
  ec.scheduler.enable_prefix_caching = f.enable_prefix_caching && !f.no_prefix_caching;
  if (f.scheduling_policy == "fcfs")
    ec.scheduler.policy = engine::SchedulingPolicy::fcfs;
  else if (f.scheduling_policy == "priority")
    ec.scheduler.policy = engine::SchedulingPolicy::priority;
  else if (f.scheduling_policy == "lpm")
    ec.scheduler.policy = engine::SchedulingPolicy::lpm;
  else
    throw ConfigError("scheduling-policy", fmt::format("'{}': expected fcfs, priority or lpm", f.scheduling_policy));
  ec.scheduler.max_model_len = f.max_model_len > 0 ? f.max_model_len
                                                   : std::min<int64_t>(cfg.max_position_embeddings, kv_tokens);
  if (ec.scheduler.max_model_len > cfg.max_position_embeddings)
    throw ConfigError("max-model-len", fmt::format("{} exceeds the model's max_position_embeddings {}",
                                                   ec.scheduler.max_model_len, cfg.max_position_embeddings));
  ec.router = f.router;
  ec.router.seed = f.seed;
  ec.collect_expert_stats = f.collect_expert_stats;
  ec.overlap_schedule = !f.disable_overlap_schedule;
  ec.watchdog_timeout_s = f.watchdog_timeout;
  ec.fault_rank = f.fault_rank;
  ec.fault_step = f.fault_step;
  ec.seed = f.seed;
  for (int64_t e : cfg.eos_token_ids) ec.eos_ids.push_back(static_cast<int32_t>(e));
  if (s.tokenizer) {  // structured output reads the tokens' bytes (special tokens have none to give)
    std::vector<std::string> bytes(static_cast<std::size_t>(s.tokenizer->vocab_size()));
    for (std::size_t id = 0; id < bytes.size(); ++id) {
      const int32_t one[1] = {static_cast<int32_t>(id)};
      if (!s.tokenizer->is_special(one[0])) bytes[id] = s.tokenizer->decode(one, false);
    }
    ec.vocab_trie = std::make_shared<engine::TokenTrie>(bytes);
  }
  s.engine = std::make_unique<engine::Engine>(ec, *s.groups, *s.executor);

  auto& info = s.info;
  info.name = f.served_model_name;
  if (info.name.empty()) {
    std::string d = f.model;
    while (d.size() > 1 && d.back() == '/') d.pop_back();
    info.name = d.substr(d.find_last_of('/') == std::string::npos ? 0 : d.find_last_of('/') + 1);
  }
  info.tokenizer = s.tokenizer.get();
  info.chat_template = s.chat_template.get();
  info.max_model_len = ec.scheduler.max_model_len;
  info.vocab_size = cfg.vocab_size;
  info.priority_scheduling = ec.scheduler.policy == engine::SchedulingPolicy::priority;
  if (rt.rank() == 0)
    log::info("model {} ({}): {} layers, hidden {}, {} experts top-{}; dp {} attn_tp {} ep {}; KV {} pages x {} tokens per replica; prefix caching {}; scheduling {}",
              info.name, cfg.architecture, cfg.num_hidden_layers, cfg.hidden_size, cfg.n_routed_experts,
              cfg.num_experts_per_tok, s.groups->layout().dp, s.groups->layout().attn_tp, s.groups->layout().ep,
              s.executor->num_pages(), eo.page_size, ec.scheduler.enable_prefix_caching ? "on" : "off", f.scheduling_policy);
  return s;
}

}  // namespace dpa::app
