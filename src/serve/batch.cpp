// The batch runner: read, validate, submit, collect, write in order, resume.
#include "serve/batch.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include <fmt/format.h>

#include "core/error.h"
#include "core/log.h"
#include "serve/generation.h"
#include "text/tokenizer.h"

namespace dpa::serve {

namespace json = boost::json;

namespace {
double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}
}  // namespace

struct BatchRunner::Line {
  int64_t index = 0;
  std::string custom_id;
  ParsedRequest req;
  std::vector<Generation> gens;
  std::vector<int64_t> prompt_len;  // per choice
  int remaining = 0;
  std::string reject;  // engine refusal message, if any
};

BatchOutputScan scan_batch_output(const std::string& path) {
  BatchOutputScan scan;
  std::ifstream in(path, std::ios::binary);
  if (!in) return scan;
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  uint64_t pos = 0;
  while (pos < data.size()) {
    const std::size_t nl = data.find('\n', pos);
    if (nl == std::string::npos) break;  // torn last line: no newline
    const std::string line = data.substr(pos, nl - pos);
    boost::system::error_code ec;
    json::value v = json::parse(line, ec);
    const json::value* cid = (!ec && v.is_object()) ? v.as_object().if_contains("custom_id") : nullptr;
    if (ec || !cid) {
      if (data.find('\n', nl + 1) != std::string::npos)
        throw Error(fmt::format("{}: line at byte {} is not a batch output line; refusing to resume over it", path, pos));
      break;  // an unparsable last line is torn
    }
    if (cid->is_string()) {
      scan.custom_ids.emplace_back(cid->as_string());
    } else if (const json::value* id = v.as_object().if_contains("id"); id && id->is_string()) {
      scan.unnamed_ids.emplace_back(id->as_string());
    }
    pos = nl + 1;
    scan.good_bytes = pos;
  }
  return scan;
}

BatchRunner::BatchRunner(const BatchOptions& opt, const ModelInfo& model, engine::Engine& engine,
                         const std::atomic<bool>& interrupt)
    : opt_(opt), model_(model), engine_(engine), interrupt_(interrupt) {}

BatchRunner::~BatchRunner() = default;

void BatchRunner::on_outputs(std::span<const engine::TokenOutput> outs) {
  std::lock_guard lk(mu_);
  outputs_.insert(outputs_.end(), outs.begin(), outs.end());
  cv_.notify_one();
}

void BatchRunner::on_reject(const engine::Rejection& r) {
  std::lock_guard lk(mu_);
  rejections_.push_back(r);
  cv_.notify_one();
}

namespace {
// The custom_id an error line echoes: the line's own value, or null where there is none or where its
// JSON text would not read back (a number beyond double range parses to infinity, which serializes
// to text no JSON parser accepts; --resume must be able to read every line written).
json::value echoed_custom_id(const json::value* cid) {
  if (!cid) return nullptr;
  boost::system::error_code ec;
  (void)json::parse(json::serialize(*cid), ec);
  return ec ? json::value(nullptr) : *cid;
}

std::string error_line(const json::value& custom_id, int64_t index, const std::string& code,
                       const std::string& message) {
  json::object o{{"id", fmt::format("batch_req_{}", index)},
                 {"custom_id", custom_id},
                 {"response", nullptr},
                 {"error", json::object{{"code", code}, {"message", message}}}};
  return json::serialize(o);
}

std::string response_line(const std::string& custom_id, int64_t index, int status, const json::object& body) {
  json::object o{{"id", fmt::format("batch_req_{}", index)},
                 {"custom_id", custom_id},
                 {"response", json::object{{"status_code", status}, {"request_id", fmt::format("batch_req_{}", index)},
                                           {"body", body}}},
                 {"error", nullptr}};
  return json::serialize(o);
}
}  // namespace

ReadLine read_batch_line(int64_t index, const std::string& text, const ModelInfo& model) {
  ReadLine r;
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) {
    r.error_line = error_line(nullptr, index, "invalid_json", ec ? "the line is not valid JSON: " + ec.message()
                                                                 : "the line is not a JSON object");
    return r;
  }
  const auto& o = v.as_object();
  const json::value* cid = o.if_contains("custom_id");
  if (!cid || !cid->is_string()) {
    r.error_line = error_line(echoed_custom_id(cid), index, "invalid_request", "'custom_id' must be a string");
    return r;
  }
  r.custom_id = std::string(cid->as_string());
  const json::value* url = o.if_contains("url");
  const json::value* body = o.if_contains("body");
  const json::value* method = o.if_contains("method");
  if (method && (!method->is_string() || method->as_string() != "POST")) {
    r.error_line = error_line(*cid, index, "invalid_request", "'method' must be \"POST\"");
    return r;
  }
  Endpoint ep;
  if (url && url->is_string() && url->as_string() == "/v1/completions") ep = Endpoint::completions;
  else if (url && url->is_string() && url->as_string() == "/v1/chat/completions") ep = Endpoint::chat;
  else {
    r.error_line = error_line(*cid, index, "invalid_url", "'url' must be /v1/completions or /v1/chat/completions");
    return r;
  }
  if (!body || !body->is_object()) {
    r.error_line = error_line(*cid, index, "invalid_request", "'body' must be an object");
    return r;
  }
  try {
    r.req = parse_request(*body, ep, model);
  } catch (const ApiError& e) {
    r.error_line = response_line(r.custom_id, index, e.status, e.body());
  }
  return r;
}

void BatchRunner::submit_line(int64_t index, const std::string& text) {
  ReadLine read = read_batch_line(index, text, model_);
  if (!read.error_line.empty()) {
    ready_[index] = std::move(read.error_line);
    ++summary_.errors;
    return;
  }
  auto line = std::make_unique<Line>();
  line->index = index;
  line->custom_id = std::move(read.custom_id);
  line->req = std::move(read.req);
  const auto& req = line->req;
  for (std::size_t p = 0; p < req.prompts.size(); ++p)
    for (int j = 0; j < req.n; ++j) {
      line->gens.emplace_back(line->req, model_.tokenizer, p);
      line->prompt_len.push_back(static_cast<int64_t>(req.prompts[p].size()));
    }
  line->remaining = static_cast<int>(line->gens.size());
  Line* raw = line.get();
  open_[index] = std::move(line);
  int choice = 0;
  for (std::size_t p = 0; p < req.prompts.size(); ++p)
    for (int j = 0; j < req.n; ++j, ++choice) {
      engine::Request r;
      r.prompt = req.prompts[p];
      r.params = req.params;
      // n > 1 with a fixed seed: distinct streams per choice, reproducible.
      if (r.params.seed && req.n > 1) r.params.seed = *r.params.seed + static_cast<uint64_t>(j);
      r.data_parallel_rank = req.data_parallel_rank;
      r.priority = req.priority;
      const uint64_t id = engine_.submit(std::move(r));
      by_req_[id] = {raw, choice};
    }
}

void BatchRunner::handle(const engine::TokenOutput& o) {
  auto it = by_req_.find(o.request_id);
  if (it == by_req_.end()) return;  // a token after a stop-string abort
  auto [line, choice] = it->second;
  Generation& g = line->gens[choice];
  g.add(o);
  if (!g.finished()) return;
  if (g.needs_abort()) engine_.abort(o.request_id);
  by_req_.erase(it);
  if (--line->remaining == 0) finish_line(*line);
}

void BatchRunner::finish_line(Line& l) {
  const int64_t created = unix_now();
  if (!l.reject.empty()) {
    ready_[l.index] = response_line(l.custom_id, l.index, 400, ApiError(400, l.reject).body());
    ++summary_.errors;
  } else {
    int64_t prompt_tokens = 0, completion = 0;
    for (std::size_t i = 0; i < l.gens.size(); i += static_cast<std::size_t>(l.req.n)) prompt_tokens += l.prompt_len[i];
    for (const auto& g : l.gens) completion += static_cast<int64_t>(g.tokens().size());
    const std::string id = fmt::format("{}-{}", l.req.endpoint == Endpoint::chat ? "chatcmpl" : "cmpl", l.index);
    json::object body = l.req.endpoint == Endpoint::chat
                            ? chat_response(id, model_.name, created, l.gens, prompt_tokens)
                            : completion_response(id, model_.name, created, l.gens, prompt_tokens);
    // Token ids of every choice (as vLLM's return_token_ids): exact outputs without a tokenizer.
    auto& choices = body["choices"].as_array();
    for (std::size_t i = 0; i < choices.size(); ++i) {
      json::array ids;
      for (int32_t t : l.gens[i].tokens()) ids.push_back(t);
      choices[i].as_object()["token_ids"] = ids;
    }
    ready_[l.index] = response_line(l.custom_id, l.index, 200, body);
    summary_.prompt_tokens += prompt_tokens;
    summary_.completion_tokens += completion;
  }
  open_.erase(l.index);
}

void BatchRunner::flush_ready() {
  bool wrote = false;
  for (auto it = ready_.find(next_to_write_); it != ready_.end(); it = ready_.find(next_to_write_)) {
    if (!it->second.empty()) {
      const std::string line = it->second + "\n";
      if (std::fwrite(line.data(), 1, line.size(), out_) != line.size())
        throw Error(fmt::format("{}: write failed", opt_.output));
      ++summary_.written;
      wrote = true;
    }
    ready_.erase(it);
    ++next_to_write_;
  }
  if (wrote) std::fflush(out_);
}

void BatchRunner::report_progress(bool final) {
  const double t = now_s();
  if (!final && t - last_report_ < (isatty(2) ? 0.5 : 5.0)) return;
  last_report_ = t;
  const double el = std::max(t - start_, 1e-9);
  const int64_t done = summary_.written + summary_.skipped;
  const std::string msg = fmt::format("batch: {}/{} lines ({} skipped, {} errors), {:.0f} output tok/s, {:.1f} s",
                                      done, summary_.lines, summary_.skipped, summary_.errors,
                                      summary_.completion_tokens / el, el);
  if (!opt_.progress) return;
  if (isatty(2)) {
    const int width = 30;
    const int filled = summary_.lines ? static_cast<int>(width * done / summary_.lines) : width;
    std::fprintf(stderr, "\r[%s%s] %s", std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                 msg.c_str());
    if (final) std::fprintf(stderr, "\n");
  } else {
    std::fprintf(stderr, "%s\n", msg.c_str());
  }
  std::fflush(stderr);
}

void BatchRunner::run() {
  start_ = now_s();
  struct Shutdown {  // whatever happens, the engine loop must end on every rank
    engine::Engine& e;
    ~Shutdown() { e.shutdown(); }
  } shutdown{engine_};
  const BatchOutputScan scan = scan_batch_output(opt_.output);
  const uint64_t good_bytes = scan.good_bytes;
  std::set<std::string> done(scan.custom_ids.begin(), scan.custom_ids.end());
  // A line without a string custom_id never reaches the engine; its error line names it by line
  // number, and a rerun over the same input does not write it twice.
  const std::set<std::string> unnamed_done(scan.unnamed_ids.begin(), scan.unnamed_ids.end());
  // Whatever follows the last whole line is a torn one, also when it is the file's only content.
  std::error_code size_ec;
  const uintmax_t size = std::filesystem::file_size(opt_.output, size_ec);
  if (!size_ec && size > good_bytes) {
    if (truncate(opt_.output.c_str(), static_cast<off_t>(good_bytes)) != 0)
      throw Error(fmt::format("{}: cannot cut the torn last line", opt_.output));
    log::warn("batch: dropped a torn last line of {} bytes from {}", size - good_bytes, opt_.output);
  }
  if (!done.empty() || !unnamed_done.empty())
    log::info("batch: resuming: {} lines already in {}", done.size() + unnamed_done.size(), opt_.output);
  out_ = std::fopen(opt_.output.c_str(), "ab");
  if (!out_) throw Error(fmt::format("cannot open {} for writing", opt_.output));
  std::ifstream in(opt_.input);
  if (!in) throw Error(fmt::format("cannot open {}", opt_.input));
  std::vector<std::string> lines;
  for (std::string s; std::getline(in, s);)
    if (!s.empty() && s.find_first_not_of(" \t\r") != std::string::npos) lines.push_back(std::move(s));
  summary_.lines = static_cast<int64_t>(lines.size());

  int64_t next = 0;
  auto process_events = [&](bool block) {
    std::unique_lock lk(mu_);
    if (block) cv_.wait_for(lk, std::chrono::milliseconds(200), [&] { return !outputs_.empty() || !rejections_.empty(); });
    auto outs = std::move(outputs_);
    auto rejs = std::move(rejections_);
    outputs_.clear();
    rejections_.clear();
    lk.unlock();
    for (auto& r : rejs) {
      auto it = by_req_.find(r.request_id);
      if (it == by_req_.end()) continue;
      auto [line, choice] = it->second;
      line->reject = r.message;
      line->gens[choice].end(engine::FinishReason::abort);
      by_req_.erase(it);
      if (--line->remaining == 0) finish_line(*line);
    }
    for (auto& o : outs) handle(o);
    flush_ready();
    report_progress(false);
  };
  while (!interrupt_) {
    while (next < summary_.lines && static_cast<int64_t>(open_.size()) < opt_.max_inflight_lines) {
      boost::system::error_code ec;
      json::value v = json::parse(lines[next], ec);
      const json::value* cid = (!ec && v.is_object()) ? v.as_object().if_contains("custom_id") : nullptr;
      const bool named = cid && cid->is_string();
      if ((named && done.count(std::string(cid->as_string()))) ||
          (!named && unnamed_done.count(fmt::format("batch_req_{}", next)))) {
        ready_[next] = "";  // written by an earlier run
        ++summary_.skipped;
      } else {
        submit_line(next, lines[next]);
        if (named) done.insert(std::string(cid->as_string()));  // a duplicate later is skipped
      }
      ++next;
    }
    process_events(false);
    if (next >= summary_.lines && open_.empty()) break;
    process_events(true);
  }
  if (interrupt_) {
    summary_.interrupted = true;
    for (auto& [id, lc] : by_req_) engine_.abort(id);
    log::warn("batch: interrupted; {} lines written, rerun the same command to resume", summary_.written);
  }
  flush_ready();
  std::fflush(out_);
  fsync(fileno(out_));
  std::fclose(out_);
  out_ = nullptr;
  summary_.seconds = now_s() - start_;
  report_progress(true);
}

}  // namespace dpa::serve
