// Offline batch inference from an OpenAI Batch JSONL file, on rank 0. Each input line
// {"custom_id", "method": "POST", "url": "/v1/completions" | "/v1/chat/completions", "body"}
// becomes engine requests; each output line {"id", "custom_id", "response": {"status_code",
// "request_id", "body"}, "error"} is written in input order as soon as every line before it is.
// Resume: custom_ids already in the output file are skipped, a torn last line is cut off, so a
// rerun after SIGKILL or preemption yields every custom_id exactly once. SIGTERM / SIGUSR1 stop
// the intake, flush what is complete, and end with exit code 75 (rerun to resume).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "serve/openai_request.h"

namespace dpa::serve {

struct BatchOptions {
  std::string input, output;
  int64_t max_inflight_lines = 1024;  // lines submitted but not yet written
  bool progress = true;
};

struct BatchSummary {
  int64_t lines = 0, skipped = 0, written = 0, errors = 0;
  int64_t prompt_tokens = 0, completion_tokens = 0;
  double seconds = 0;
  bool interrupted = false;
};

// What an existing output file holds: the custom_ids of its complete lines; the ids
// ("batch_req_<line>") of its error lines for input lines without a string custom_id, which only
// their line number names; and the byte length of the complete prefix (a torn or unparsable last
// line is excluded).
struct BatchOutputScan {
  std::vector<std::string> custom_ids;
  std::vector<std::string> unnamed_ids;
  uint64_t good_bytes = 0;
};
// Throws dpa::Error when a line other than the last is not valid JSON.
BatchOutputScan scan_batch_output(const std::string& path);

// One input line read and checked as the runner does before it submits: either error_line (the
// output line that answers a malformed line or a rejected request: valid JSON that --resume reads
// back) or the custom_id and the parsed request. Never throws for bad input.
struct ReadLine {
  std::string error_line;
  std::string custom_id;
  ParsedRequest req;
};
ReadLine read_batch_line(int64_t index, const std::string& text, const ModelInfo& model);

class BatchRunner {
 public:
  BatchRunner(const BatchOptions& opt, const ModelInfo& model, engine::Engine& engine,
              const std::atomic<bool>& interrupt);
  ~BatchRunner();
  // Engine-thread callbacks (rank 0): queue the event for the batch thread.
  void on_outputs(std::span<const engine::TokenOutput> outs);  // a step's
  void on_reject(const engine::Rejection& r);
  // The batch thread: reads, submits, writes; calls engine.shutdown() at the end.
  void run();
  const BatchSummary& summary() const { return summary_; }

 private:
  struct Line;
  void submit_line(int64_t index, const std::string& text);
  void handle(const engine::TokenOutput& o);
  void finish_line(Line& l);
  void flush_ready();
  void report_progress(bool final);

  BatchOptions opt_;
  const ModelInfo& model_;
  engine::Engine& engine_;
  const std::atomic<bool>& interrupt_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<engine::TokenOutput> outputs_;
  std::deque<engine::Rejection> rejections_;

  std::map<int64_t, std::unique_ptr<Line>> open_;     // by input index
  std::map<uint64_t, std::pair<Line*, int>> by_req_;  // engine request -> (line, choice)
  std::map<int64_t, std::string> ready_;              // finished lines waiting for their turn
  int64_t next_to_write_ = 0;
  std::vector<int64_t> skipped_indices_;
  std::FILE* out_ = nullptr;
  BatchSummary summary_;
  double start_ = 0, last_report_ = 0;
};

}  // namespace dpa::serve
