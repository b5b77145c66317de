// Two kinds of failure (LAMMPS style): an error every rank sees the same way (bad flag, bad
// config, bad checkpoint) is thrown as a dpa::Error and ends the job cleanly with one message from
// rank 0; a fault only one rank sees (a CUDA error, a failed allocation) goes through fail_one(),
// which prints rank and host and aborts the whole job, so no peer waits forever in a collective.
#pragma once

#include <functional>
#include <stdexcept>
#include <string>

namespace dpa {

// An error every rank reaches deterministically. `what()` is the whole user-facing message.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A configuration or command-line error: names the flag (or config key) at fault.
class ConfigError : public Error {
 public:
  ConfigError(const std::string& flag, const std::string& message)
      : Error("--" + flag + ": " + message), flag_(flag) {}
  const std::string& flag() const { return flag_; }

 private:
  std::string flag_;
};

// Who this process is, for messages. Filled by dist at start-up; defaults describe a lone process.
struct ProcessIdentity {
  int world_rank = 0;
  int world_size = 1;
  int device = -1;  // GPU ordinal, -1 for CPU
  std::string host = "localhost";
};
ProcessIdentity& process_identity();

// "[rank 3/8 host=node1 device=1]"
std::string identity_prefix();

// How fail_one() ends the job: dist installs MPI_Abort; the default is std::abort().
void set_abort_handler(std::function<void(int)> handler);

// A fault seen by one rank: prints the identity, what failed, where, and aborts the job.
[[noreturn]] void fail_one(const char* api, const char* expr, const char* file, int line,
                           const std::string& detail);

}  // namespace dpa

// Checks a condition that only this rank can see; aborts the job with the message when false.
#define DPA_ASSERT(cond, msg)                                                \
  do {                                                                       \
    if (!(cond)) ::dpa::fail_one("assert", #cond, __FILE__, __LINE__, (msg)); \
  } while (0)
