// The communicator of a data-parallel run (`mpirun -np N fp4c ...`): MPI's world when fp4c was built
// with MPI (FP4C_MPI) and started by an MPI launcher, otherwise one rank, which is today's single
// process. Only byte-moving collectives live here, each in a fixed rank order, so that what is
// computed from them does not depend on N; the deterministic reductions of statistics are built on
// them (passes/stats_collect.cpp). Errors are values; a rank that dies is OpenMPI's to report: its
// default error handler aborts the job, and mpirun names the rank that died.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/expected.h"

namespace fp4c::runtime {

class Comm {
 public:
  // The process's communicator. Under an MPI launcher (OMPI_COMM_WORLD_SIZE, PMIX_RANK or PMI_SIZE in
  // the environment) with MPI built in, the first call initializes MPI (finalized at exit).
  static Comm& world();
  // One rank, no MPI (tests; the single-process path).
  static Comm& single();

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool distributed() const { return size_ > 1; }

  // Every rank's bytes at rank 0, in rank order (element r from rank r); other ranks get an empty vector.
  Expected<std::vector<std::string>> gather(const std::string& mine);
  // Every rank's bytes on every rank, in rank order (a gather to rank 0, then a broadcast).
  Expected<std::vector<std::string>> allgather(const std::string& mine);
  // `bytes` of rank `root` on every rank.
  Status broadcast(std::string& bytes, int root = 0);
  Status barrier();

  // Deterministic reductions over ranks, the result on every rank: gathered at rank 0, folded there in
  // rank order (((r0 op r1) op r2) ...), broadcast. Same values whatever the network's order.
  Status sum_in_rank_order(std::span<double> values);
  Status max_in_rank_order(std::span<float> values);

  // Ends every rank of the job with `code` (MPI_Abort); in a single process, std::exit.
  [[noreturn]] void abort(int code);

  // A test hook: with FP4C_TEST_KILL=RANK:N in the environment, rank RANK (0 in a single process) kills
  // itself (SIGKILL) at its N-th test point: the start of each collective, the end of each layer's
  // statistics or quantized Linears. Tests use it to end a run mid-way, as a lost node would.
  void test_point();

  // Bytes this rank sent and received through the collectives above, since the start.
  uint64_t bytes_sent() const { return sent_; }
  uint64_t bytes_received() const { return received_; }

 private:
  Comm(int rank, int size, bool mpi);
  int kill_at_ = 0, test_points_ = 0;
  int rank_ = 0, size_ = 1;
  bool mpi_ = false;
  uint64_t sent_ = 0, received_ = 0;
};

// Whether this fp4c was built with MPI.
bool mpi_built();

}  // namespace fp4c::runtime
