// The SPMD runtime: MPI start-up and shut-down, who this process is, which node it is on.
#pragma once

#include <mpi.h>

#include <string>

namespace dpa::dist {

// Owns MPI for the process: MPI_Init_thread(FUNNELED) in the constructor, MPI_Finalize in the
// destructor. Only the thread that built it may call MPI afterwards.
class Runtime {
 public:
  Runtime(int* argc, char*** argv);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }  // rank among the ranks of this node
  int local_size() const { return local_size_; }  // ranks on this node
  const std::string& host() const { return host_; }
  MPI_Comm world() const { return MPI_COMM_WORLD; }
  MPI_Comm node() const { return node_; }  // ranks sharing memory with this one

 private:
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  std::string host_;
  MPI_Comm node_ = MPI_COMM_NULL;
};

// Refuses a world of one rank when the launcher started more tasks (Open MPI under srun without
// PMI starts N singletons): `launcher_tasks` is what the launcher's environment says (0 = unknown).
// Throws dpa::Error with the hint.
void check_launch(int world_size, int launcher_tasks);

// Abort the whole job from one rank (fail-one path).
[[noreturn]] void abort_job(int code);

std::string mpi_error_string(int code);

}  // namespace dpa::dist

// Checks an MPI call; on failure aborts the job with rank, host, expression and file:line.
#define DPA_CHECK_MPI(expr)                                                                    \
  do {                                                                                         \
    int dpa_mpi_rc_ = (expr);                                                                  \
    if (dpa_mpi_rc_ != MPI_SUCCESS)                                                            \
      ::dpa::fail_one("MPI", #expr, __FILE__, __LINE__, ::dpa::dist::mpi_error_string(dpa_mpi_rc_)); \
  } while (0)
