// A serving benchmark client in the manner of sglang.bench_serving / vllm bench serve, against
// any OpenAI-compatible server (dpa_serve serve, vLLM, SGLang): random token-id prompts, requests
// sent at a Poisson rate (or all at once: --request-rate inf) under an optional concurrency cap,
// streamed from /v1/completions with ignore_eos; TTFT is the first chunk with text, ITL the gaps
// between chunks, output length from the usage chunk. Prints the bench_serving block and one
// JSON line. One thread, Boost.Asio; one connection per request.
//   bench_serving --base-url http://127.0.0.1:8000 --num-prompts 64 --random-input-len 128
//                 --random-output-len 64 --request-rate 8 --max-concurrency 16
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <boost/program_options.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "serve/bench.h"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
namespace po = boost::program_options;
using tcp = asio::ip::tcp;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Result {
  bool ok = false;
  std::string error;
  double start = 0, first = 0, last = 0;
  std::vector<double> itl;
  int64_t chunks = 0, completion_tokens = -1, prompt_len = 0;
};

// Synchronous helper for the few setup calls.
std::string http_get(asio::io_context& ioc, const std::string& host, const std::string& port, const std::string& target,
                     const std::string& api_key) {
  tcp::resolver res(ioc);
  beast::tcp_stream s(ioc);
  s.connect(res.resolve(host, port));
  http::request<http::empty_body> req{http::verb::get, target, 11};
  req.set(http::field::host, host);
  if (!api_key.empty()) req.set(http::field::authorization, "Bearer " + api_key);
  http::write(s, req);
  beast::flat_buffer buf;
  http::response<http::string_body> resp;
  http::read(s, buf, resp);
  if (resp.result_int() != 200)
    throw std::runtime_error(fmt::format("GET {} -> {}: {}", target, resp.result_int(), resp.body()));
  return resp.body();
}

class Client : public std::enable_shared_from_this<Client> {
 public:
  Client(asio::io_context& ioc, tcp::resolver::results_type ep, std::string host, std::string body, std::string api_key,
         Result& res, std::function<void()> done)
      : stream_(ioc), ep_(std::move(ep)), host_(std::move(host)), body_(std::move(body)), key_(std::move(api_key)),
        res_(res), done_(std::move(done)) {}

  void start() {
    res_.start = now_s();
    stream_.expires_after(std::chrono::seconds(3600));
    stream_.async_connect(ep_, [self = shared_from_this()](beast::error_code ec, const tcp::endpoint&) {
      if (ec) return self->fail("connect: " + ec.message());
      self->send();
    });
  }

 private:
  void send() {
    req_ = {http::verb::post, "/v1/completions", 11};
    req_.set(http::field::host, host_);
    req_.set(http::field::content_type, "application/json");
    if (!key_.empty()) req_.set(http::field::authorization, "Bearer " + key_);
    req_.body() = body_;
    req_.prepare_payload();
    http::async_write(stream_, req_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) return self->fail("write: " + ec.message());
      self->parser_.body_limit(std::numeric_limits<std::uint64_t>::max());
      self->chunk_cb_ = [self = self.get()](std::uint64_t, beast::string_view body, beast::error_code&) {
        self->on_data(std::string(body));
        return body.size();
      };
      self->parser_.on_chunk_body(self->chunk_cb_);
      self->read();
    });
  }

  void read() {
    http::async_read_some(stream_, buf_, parser_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) return self->fail("read: " + ec.message());
      if (self->parser_.is_header_done() && self->parser_.get().result_int() != 200 && self->parser_.is_done())
        return self->fail(fmt::format("HTTP {}: {}", self->parser_.get().result_int(), self->parser_.get().body()));
      if (self->parser_.is_done()) return self->finish();
      self->read();
    });
  }

  void on_data(const std::string& data) {
    pending_ += data;
    for (std::size_t at; (at = pending_.find("\n\n")) != std::string::npos;) {
      const std::string ev = pending_.substr(0, at);
      pending_.erase(0, at + 2);
      if (ev.rfind("data: ", 0) != 0) continue;
      const std::string payload = ev.substr(6);
      if (payload == "[DONE]") continue;
      boost::system::error_code ec;
      const json::value v = json::parse(payload, ec);
      if (ec || !v.is_object()) continue;
      const auto& o = v.as_object();
      if (const auto* u = o.if_contains("usage"); u && u->is_object())
        if (const auto* ct = u->as_object().if_contains("completion_tokens"); ct && ct->is_int64())
          res_.completion_tokens = ct->as_int64();
      const auto* ch = o.if_contains("choices");
      if (!ch || !ch->is_array() || ch->as_array().empty()) continue;
      const auto* text = ch->as_array()[0].as_object().if_contains("text");
      if (!text || !text->is_string() || text->as_string().empty()) continue;
      const double t = now_s();
      if (res_.chunks == 0) res_.first = t;
      else res_.itl.push_back(t - res_.last);
      res_.last = t;
      ++res_.chunks;
    }
  }

  void finish() {
    const int status = parser_.get().result_int();
    if (status != 200) return fail(fmt::format("HTTP {}", status));
    res_.ok = res_.chunks > 0;
    if (!res_.ok) res_.error = "no token chunk";
    end();
  }
  void fail(const std::string& why) {
    res_.ok = false;
    res_.error = why;
    end();
  }
  void end() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    if (done_) std::exchange(done_, nullptr)();
  }

  beast::tcp_stream stream_;
  tcp::resolver::results_type ep_;
  std::string host_, body_, key_;
  Result& res_;
  std::function<void()> done_;
  http::request<http::string_body> req_;
  beast::flat_buffer buf_;
  http::response_parser<http::string_body> parser_;
  std::function<std::size_t(std::uint64_t, beast::string_view, beast::error_code&)> chunk_cb_;
  std::string pending_;
};

}  // namespace

int main(int argc, char** argv) {
  std::string base_url = "http://127.0.0.1:8000", model, api_key, result_json;
  double rate = std::numeric_limits<double>::infinity();
  std::string rate_s = "inf";
  int64_t max_conc = 0;
  double duration = 0;
  std::string response_format, guided_regex, guided_grammar;
  double frequency_penalty = 0;
  dpa::serve::BenchOptions bo;
  int64_t low_id = 1000;
  po::options_description d("bench_serving options");
  d.add_options()("help,h", "show this help")
      ("base-url", po::value(&base_url)->default_value(base_url), "server, http://HOST:PORT")
      ("model", po::value(&model), "model name (default: the server's first /v1/models entry)")
      ("api-key", po::value(&api_key), "Bearer key (default: env OPENAI_API_KEY)")
      ("num-prompts", po::value(&bo.num_prompts)->default_value(bo.num_prompts), "requests to send")
      ("random-input-len", po::value(&bo.random_input_len)->default_value(bo.random_input_len), "prompt tokens")
      ("random-output-len", po::value(&bo.random_output_len)->default_value(bo.random_output_len), "output tokens")
      ("random-range-ratio", po::value(&bo.random_range_ratio)->default_value(bo.random_range_ratio), "lengths uniform in [len * ratio, len]")
      ("dataset", po::value(&bo.dataset), "JSONL {\"prompt\": ids, \"output_len\": n} instead of random prompts")
      ("request-rate", po::value(&rate_s)->default_value(rate_s), "requests per second, Poisson arrivals (inf: all at once)")
      ("max-concurrency", po::value(&max_conc)->default_value(0), "most requests in flight (0: no cap)")
      ("duration", po::value(&duration)->default_value(0), "soak: keep --max-concurrency clients busy (each starts its next request when one ends, prompts reused in turn) for this many seconds (0: send --num-prompts once)")
      ("seed", po::value(&bo.seed)->default_value(bo.seed), "prompts and arrivals")
      ("low-token-id", po::value(&low_id)->default_value(low_id), "random ids start here (skips special tokens)")
      ("result-json", po::value(&result_json), "also append the JSON line to this file")
      ("response-format", po::value(&response_format), "json_object: every request asks for it (the structured-output mask each step; ignore_eos keeps the lengths)")
      ("guided-regex", po::value(&guided_regex), "every request asks for this pattern (guided_regex); with ignore_eos, one that never completes: e.g. '[a-z ]*'")
      ("guided-grammar", po::value(&guided_grammar), "every request asks for this GBNF grammar (guided_grammar); with ignore_eos, one whose strings go on: e.g. $'root ::= w (\" \" w)*\\nw ::= [a-z]+'")
      ("frequency-penalty", po::value(&frequency_penalty)->default_value(0.0), "every request asks for it (logit edits from the tokens drawn so far, each step)");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, d), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::fprintf(stderr, "bench_serving: %s\n", e.what());
    return 2;
  }
  if (vm.count("help")) {
    std::cout << d << "\n";
    return 0;
  }
  if (api_key.empty())
    if (const char* k = std::getenv("OPENAI_API_KEY")) api_key = k;
  rate = rate_s == "inf" ? std::numeric_limits<double>::infinity() : std::stod(rate_s);
  if (!response_format.empty() && response_format != "json_object") {
    std::fprintf(stderr, "bench_serving: --response-format takes json_object\n");
    return 2;
  }
  if (duration > 0 && max_conc <= 0) {
    std::fprintf(stderr, "bench_serving: --duration needs --max-concurrency (the number of clients)\n");
    return 2;
  }
  std::string hostport = base_url;
  if (hostport.rfind("http://", 0) == 0) hostport = hostport.substr(7);
  while (!hostport.empty() && hostport.back() == '/') hostport.pop_back();
  const std::size_t colon = hostport.rfind(':');
  const std::string host = colon == std::string::npos ? hostport : hostport.substr(0, colon);
  const std::string port = colon == std::string::npos ? "80" : hostport.substr(colon + 1);

  asio::io_context ioc(1);
  int64_t vocab = 0;
  try {
    const json::value models = json::parse(http_get(ioc, host, port, "/v1/models", api_key));
    if (model.empty()) model = std::string(models.at("data").at(0).at("id").as_string());
    try {
      const json::value info = json::parse(http_get(ioc, host, port, "/get_server_info", api_key));
      vocab = info.at("vocab_size").to_number<int64_t>();
    } catch (...) {
      vocab = 32000;  // a server without /get_server_info: a vocabulary every model has
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_serving: cannot reach %s: %s\n", base_url.c_str(), e.what());
    return 1;
  }
  auto reqs = dpa::serve::make_bench_requests(bo, vocab, low_id);
  std::deque<Result> results(reqs.size());  // a deque: clients keep references while it grows
  std::vector<int64_t> prompt_lens;
  std::vector<std::string> bodies;
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    json::array p;
    for (int32_t t : reqs[i].prompt) p.push_back(t);
    json::object b{{"model", model}, {"prompt", p}, {"max_tokens", reqs[i].output_len}, {"temperature", 0.0},
                   {"ignore_eos", true}, {"stream", true}, {"stream_options", json::object{{"include_usage", true}}}};
    if (!response_format.empty()) b["response_format"] = json::object{{"type", response_format}};
    if (!guided_regex.empty()) b["guided_regex"] = guided_regex;
    if (!guided_grammar.empty()) b["guided_grammar"] = guided_grammar;
    if (frequency_penalty != 0) b["frequency_penalty"] = frequency_penalty;
    bodies.push_back(json::serialize(b));
    results[i].prompt_len = static_cast<int64_t>(reqs[i].prompt.size());
    prompt_lens.push_back(results[i].prompt_len);
  }
  const auto ep = tcp::resolver(ioc).resolve(host, port);

  // Arrivals: exponential gaps at `rate`; a request past the concurrency cap waits for a slot.
  std::mt19937_64 rng(bo.seed + 17);
  std::exponential_distribution<double> gap(std::isinf(rate) ? 1.0 : rate);
  std::deque<std::size_t> ready;
  std::size_t next = 0, done = 0;
  int64_t in_flight = 0;
  asio::steady_timer timer(ioc);
  std::function<void()> pump, arrive;
  pump = [&] {
    while (!ready.empty() && (max_conc <= 0 || in_flight < max_conc)) {
      const std::size_t i = ready.front();
      ready.pop_front();
      ++in_flight;
      std::make_shared<Client>(ioc, ep, host, bodies[i], api_key, results[i], [&] {
        --in_flight;
        ++done;
        pump();
      })->start();
    }
  };
  arrive = [&] {
    if (next >= reqs.size()) return;
    ready.push_back(next++);
    pump();
    if (next >= reqs.size()) return;
    if (std::isinf(rate)) return asio::post(ioc, arrive);
    timer.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(gap(rng))));
    timer.async_wait([&](beast::error_code) { arrive(); });
  };
  // Soak: closed-loop clients; request k uses prompt k mod N; no new request after the deadline.
  std::function<void()> soak;
  double deadline = 0;
  soak = [&] {
    while (in_flight < max_conc && now_s() < deadline) {
      const std::size_t k = next++;
      if (k >= results.size()) results.emplace_back().prompt_len = prompt_lens[k % bodies.size()];
      ++in_flight;
      std::make_shared<Client>(ioc, ep, host, bodies[k % bodies.size()], api_key, results[k], [&] {
        --in_flight;
        ++done;
        asio::post(ioc, soak);
      })->start();
    }
  };
  const double t0 = now_s();
  if (duration > 0) {
    deadline = t0 + duration;
    soak();
  } else {
    arrive();
  }
  ioc.run();
  const double dur = now_s() - t0;

  int64_t ok = 0, in_tok = 0, out_tok = 0, rejected = 0;
  for (const auto& r : results) rejected += !r.ok && r.error.rfind("HTTP 429", 0) == 0;
  std::vector<double> ttft, tpot, itl, e2e;
  for (const auto& r : results) {
    if (!r.ok) continue;
    ++ok;
    const int64_t n = r.completion_tokens >= 0 ? r.completion_tokens : r.chunks;
    in_tok += r.prompt_len;
    out_tok += n;
    ttft.push_back((r.first - r.start) * 1e3);
    e2e.push_back((r.last - r.start) * 1e3);
    if (n > 1) tpot.push_back((r.last - r.first) / static_cast<double>(n - 1) * 1e3);
    for (double g : r.itl) itl.push_back(g * 1e3);
  }
  for (const auto& r : results)
    if (!r.ok && r.error.rfind("HTTP 429", 0) != 0) {
      std::fprintf(stderr, "bench_serving: a request failed: %s\n", r.error.c_str());
      break;
    }
  const int64_t failed = static_cast<int64_t>(results.size()) - ok - rejected;
  using dpa::serve::percentiles;
  const dpa::serve::LatencyReport lat{percentiles(ttft), percentiles(tpot), percentiles(itl), percentiles(e2e)};
  std::printf("\n============ Serving Benchmark Result ============\n");
  std::printf("%-40s %s\n", "Backend:", "openai-completions");
  std::printf("%-40s %s\n", "Traffic request rate:", rate_s.c_str());
  std::printf("%-40s %s\n", "Max request concurrency:", max_conc > 0 ? std::to_string(max_conc).c_str() : "not set");
  std::printf("%-40s %lld\n", "Successful requests:", static_cast<long long>(ok));
  std::printf("%-40s %lld\n", "Rejected requests (429):", static_cast<long long>(rejected));
  std::printf("%-40s %lld\n", "Failed requests:", static_cast<long long>(failed));
  std::printf("%-40s %.2f\n", "Benchmark duration (s):", dur);
  std::printf("%-40s %lld\n", "Total input tokens:", static_cast<long long>(in_tok));
  std::printf("%-40s %lld\n", "Total generated tokens:", static_cast<long long>(out_tok));
  std::printf("%-40s %.2f\n", "Request throughput (req/s):", ok / dur);
  std::printf("%-40s %.2f\n", "Input token throughput (tok/s):", in_tok / dur);
  std::printf("%-40s %.2f\n", "Output token throughput (tok/s):", out_tok / dur);
  std::printf("%-40s %.2f\n", "Total token throughput (tok/s):", (in_tok + out_tok) / dur);
  dpa::serve::print_latency(lat);
  json::object j{{"backend", "openai-completions"},
                 {"base_url", base_url},
                 {"model", model},
                 {"request_rate", std::isinf(rate) ? json::value("inf") : json::value(rate)},
                 {"max_concurrency", max_conc},
                 {"completed", ok},
                 {"failed", failed},
                 {"rejected_429", rejected},
                 {"soak_duration", duration},
                 {"duration", dur},
                 {"total_input_tokens", in_tok},
                 {"total_output_tokens", out_tok},
                 {"request_throughput", ok / dur},
                 {"input_throughput", in_tok / dur},
                 {"output_throughput", out_tok / dur},
                 {"total_throughput", (in_tok + out_tok) / dur},
                 {"random_input_len", bo.random_input_len},
                 {"random_output_len", bo.random_output_len},
                 {"random_range_ratio", bo.random_range_ratio}};
  dpa::serve::add_latency_json(j, lat);
  const std::string line = json::serialize(j);
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  if (!result_json.empty()) {
    std::ofstream f(result_json, std::ios::app);
    f << line << "\n";
  }
  // A soak may see explicit 429s (the server's queue cap); anything else is a failure.
  return failed == 0 && (duration > 0 || rejected == 0) ? 0 : 1;
}
