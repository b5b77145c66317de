// Intake and output encodings.
#include "engine/wire.h"

#include <cstring>
#include <string>

#include "core/error.h"

namespace dpa::engine {
namespace {

class Writer {
 public:
  template <typename T>
  void put(const T& v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    buf.insert(buf.end(), p, p + sizeof(T));
  }
  template <typename T>
  void put_vec(const std::vector<T>& v) {
    put<uint64_t>(v.size());
    const auto* p = reinterpret_cast<const uint8_t*>(v.data());
    buf.insert(buf.end(), p, p + v.size() * sizeof(T));
  }
  void put_str(const std::string& s) {
    put<uint64_t>(s.size());
    buf.insert(buf.end(), s.begin(), s.end());
  }
  std::vector<uint8_t> buf;
};

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> b) : b_(b) {}
  template <typename T>
  T get() {
    T v;
    need(sizeof(T));
    std::memcpy(&v, b_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  template <typename T>
  std::vector<T> get_vec() {
    const uint64_t n = get<uint64_t>();
    if (n > (b_.size() - pos_) / sizeof(T)) fail();
    std::vector<T> v(n);
    if (n) std::memcpy(v.data(), b_.data() + pos_, n * sizeof(T));  // an empty vector's data() may be null
    pos_ += n * sizeof(T);
    return v;
  }
  std::string get_str() {
    const uint64_t n = get<uint64_t>();
    need(n);
    std::string s(reinterpret_cast<const char*>(b_.data() + pos_), n);
    pos_ += n;
    return s;
  }
  bool done() const { return pos_ == b_.size(); }

 private:
  void need(uint64_t n) {
    if (n > b_.size() - pos_) fail();
  }
  [[noreturn]] void fail() { fail_one("engine", "wire decode", __FILE__, __LINE__, "truncated step message"); }
  std::span<const uint8_t> b_;
  std::size_t pos_ = 0;
};

void put_params(Writer& w, const SamplingParams& p) {
  w.put(p.temperature);
  w.put(p.top_p);
  w.put(p.top_k);
  w.put(p.min_p);
  w.put(p.presence_penalty);
  w.put(p.frequency_penalty);
  w.put(p.repetition_penalty);
  w.put<uint8_t>(p.seed.has_value());
  w.put<uint64_t>(p.seed.value_or(0));
  w.put(p.max_tokens);
  w.put(p.min_tokens);
  w.put<uint8_t>(p.ignore_eos);
  w.put_vec(p.stop_token_ids);
  w.put(p.logprobs);
  w.put(p.prompt_logprobs);
  w.put_vec(p.logit_bias);
  w.put<uint8_t>(static_cast<uint8_t>(p.structure));
  w.put<uint64_t>(p.choices.size());
  for (const auto& c : p.choices) w.put_str(c);
  w.put_str(p.json_schema);
  w.put_str(p.regex);
  w.put_str(p.grammar);
  w.put_vec(p.allowed_token_ids);
  w.put<uint64_t>(p.bad_words.size());
  for (const auto& b : p.bad_words) w.put_vec(b);
  // Stop strings are matched on rank 0 alone; other ranks do not need them.
}

SamplingParams get_params(Reader& r) {
  SamplingParams p;
  p.temperature = r.get<float>();
  p.top_p = r.get<float>();
  p.top_k = r.get<int32_t>();
  p.min_p = r.get<float>();
  p.presence_penalty = r.get<float>();
  p.frequency_penalty = r.get<float>();
  p.repetition_penalty = r.get<float>();
  const bool has_seed = r.get<uint8_t>();
  const uint64_t seed = r.get<uint64_t>();
  if (has_seed) p.seed = seed;
  p.max_tokens = r.get<int32_t>();
  p.min_tokens = r.get<int32_t>();
  p.ignore_eos = r.get<uint8_t>();
  p.stop_token_ids = r.get_vec<int32_t>();
  p.logprobs = r.get<int32_t>();
  p.prompt_logprobs = r.get<int32_t>();
  p.logit_bias = r.get_vec<LogitBias>();
  const uint8_t structure = r.get<uint8_t>();
  if (structure > static_cast<uint8_t>(Structure::grammar)) fail_one("engine", "wire decode", __FILE__, __LINE__, "unknown output structure");
  p.structure = static_cast<Structure>(structure);
  const uint64_t n_choices = r.get<uint64_t>();
  for (uint64_t i = 0; i < n_choices; ++i) p.choices.push_back(r.get_str());
  p.json_schema = r.get_str();
  p.regex = r.get_str();
  p.grammar = r.get_str();
  p.allowed_token_ids = r.get_vec<int32_t>();
  const uint64_t n_bad = r.get<uint64_t>();
  for (uint64_t i = 0; i < n_bad; ++i) p.bad_words.push_back(r.get_vec<int32_t>());
  return p;
}

}  // namespace

std::vector<uint8_t> encode_intake(const std::vector<Request>& reqs, const std::vector<uint64_t>& aborts, bool shutdown,
                                   bool flush_cache) {
  if (reqs.empty() && aborts.empty() && !shutdown && !flush_cache) return {};
  Writer w;
  w.put<uint64_t>(reqs.size());
  for (const auto& r : reqs) {
    w.put(r.id);
    w.put(r.data_parallel_rank);
    w.put(r.priority);
    w.put_vec(r.prompt);
    put_params(w, r.params);
  }
  w.put_vec(aborts);
  w.put<uint8_t>(shutdown);
  w.put<uint8_t>(flush_cache);
  return std::move(w.buf);
}

void decode_intake(std::span<const uint8_t> blob, std::vector<Request>* reqs, std::vector<uint64_t>* aborts,
                   bool* shutdown, bool* flush_cache) {
  reqs->clear();
  aborts->clear();
  *shutdown = false;
  if (flush_cache) *flush_cache = false;
  if (blob.empty()) return;
  Reader r(blob);
  const uint64_t n = r.get<uint64_t>();
  for (uint64_t i = 0; i < n; ++i) {
    Request q;
    q.id = r.get<uint64_t>();
    q.data_parallel_rank = r.get<int32_t>();
    q.priority = r.get<int32_t>();
    q.prompt = r.get_vec<int32_t>();
    q.params = get_params(r);
    reqs->push_back(std::move(q));
  }
  *aborts = r.get_vec<uint64_t>();
  *shutdown = r.get<uint8_t>();
  const bool flush = r.get<uint8_t>();
  if (flush_cache) *flush_cache = flush;
}

std::vector<uint8_t> encode_outputs(const std::vector<TokenOutput>& outs) {
  if (outs.empty()) return {};
  Writer w;
  w.put<uint64_t>(outs.size());
  for (const auto& o : outs) {
    w.put(o.request_id);
    w.put(o.token);
    w.put(o.logprob);
    w.put<uint8_t>(static_cast<uint8_t>(o.finish));
    w.put_vec(o.top);
    w.put(o.cached_tokens);
    w.put<uint64_t>(o.prompt_logprobs.size());
    for (const auto& e : o.prompt_logprobs) {
      w.put(e.token);
      w.put(e.logprob);
      w.put(e.rank);
      w.put_vec(e.top);
    }
  }
  return std::move(w.buf);
}

std::vector<TokenOutput> decode_outputs(std::span<const uint8_t> blob) {
  std::vector<TokenOutput> outs;
  if (blob.empty()) return outs;
  Reader r(blob);
  const uint64_t n = r.get<uint64_t>();
  for (uint64_t i = 0; i < n; ++i) {
    TokenOutput o;
    o.request_id = r.get<uint64_t>();
    o.token = r.get<int32_t>();
    o.logprob = r.get<float>();
    o.finish = static_cast<FinishReason>(r.get<uint8_t>());
    o.top = r.get_vec<TokenLogprob>();
    o.cached_tokens = r.get<int32_t>();
    const uint64_t n_scored = r.get<uint64_t>();
    for (uint64_t k = 0; k < n_scored; ++k) {
      PromptLogprob e;
      e.token = r.get<int32_t>();
      e.logprob = r.get<float>();
      e.rank = r.get<int32_t>();
      e.top = r.get_vec<TokenLogprob>();
      o.prompt_logprobs.push_back(std::move(e));
    }
    outs.push_back(std::move(o));
  }
  return outs;
}

}  // namespace dpa::engine
