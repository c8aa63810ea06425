#include "runtime/comm.h"

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#ifdef FP4C_WITH_MPI
// The C API only (OpenMPI and MPICH would pull in their deprecated C++ bindings).
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace fp4c::runtime {
namespace {

// Messages go in pieces of at most this many bytes (MPI counts are ints).
constexpr uint64_t kPiece = uint64_t(1) << 30;

bool under_mpi_launcher() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK"})
    if (std::getenv(v)) return true;
  return false;
}

#ifdef FP4C_WITH_MPI
void finalize_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

Status mpi_status(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return {};
  char text[MPI_MAX_ERROR_STRING];
  int n = 0;
  MPI_Error_string(rc, text, &n);
  return make_error(std::string("MPI: ") + what + ": " + std::string(text, size_t(n)));
}
#endif

}  // namespace

bool mpi_built() {
#ifdef FP4C_WITH_MPI
  return true;
#else
  return false;
#endif
}

Comm::Comm(int rank, int size, bool mpi) : rank_(rank), size_(size), mpi_(mpi) {
  if (const char* v = std::getenv("FP4C_TEST_KILL")) {
    int r = -1, n = 0;
    if (std::sscanf(v, "%d:%d", &r, &n) == 2 && r == rank_) kill_at_ = n;
  }
}

void Comm::test_point() {
  if (kill_at_ > 0 && ++test_points_ == kill_at_) {
    std::fprintf(stderr, "fp4c: FP4C_TEST_KILL: rank %d kills itself\n", rank_);
    std::fflush(stderr);
    std::raise(SIGKILL);
  }
}

Comm& Comm::single() {
  static Comm one(0, 1, false);
  return one;
}

Comm& Comm::world() {
#ifdef FP4C_WITH_MPI
  static Comm* w = [] {
    if (!under_mpi_launcher()) return &single();
    int provided = 0;
    // OpenMP threads never call MPI: only the main thread does.
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    std::atexit(finalize_at_exit);
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    // MPI_COMM_WORLD keeps MPI_ERRORS_ARE_FATAL: a rank that dies or fails in MPI takes the job down
    // (mpirun names it) rather than leaving the others waiting.
    return new Comm(rank, size, true);
  }();
  return *w;
#else
  return single();
#endif
}

Expected<std::vector<std::string>> Comm::gather(const std::string& mine) {
  std::vector<std::string> out;
  test_point();
  if (!mpi_) {
    out.push_back(mine);
    return out;
  }
#ifdef FP4C_WITH_MPI
  uint64_t n = mine.size();
  std::vector<uint64_t> sizes(rank_ == 0 ? size_t(size_) : 0);
  FP4C_TRY(mpi_status(MPI_Gather(&n, 1, MPI_UINT64_T, sizes.data(), 1, MPI_UINT64_T, 0, MPI_COMM_WORLD), "gather"));
  if (rank_ != 0) {
    sent_ += 8;
    for (uint64_t off = 0; off < n; off += kPiece) {
      const int count = int(std::min(kPiece, n - off));
      FP4C_TRY(mpi_status(MPI_Send(mine.data() + off, count, MPI_BYTE, 0, 1, MPI_COMM_WORLD), "gather send"));
      sent_ += uint64_t(count);
    }
    return out;
  }
  out.resize(size_t(size_));
  out[0] = mine;
  for (int r = 1; r < size_; ++r) {
    received_ += 8;
    out[size_t(r)].resize(sizes[size_t(r)]);
    for (uint64_t off = 0; off < sizes[size_t(r)]; off += kPiece) {
      const int count = int(std::min(kPiece, sizes[size_t(r)] - off));
      FP4C_TRY(mpi_status(MPI_Recv(out[size_t(r)].data() + off, count, MPI_BYTE, r, 1, MPI_COMM_WORLD,
                                   MPI_STATUS_IGNORE),
                          "gather receive"));
      received_ += uint64_t(count);
    }
  }
#endif
  return out;
}

Expected<std::vector<std::string>> Comm::allgather(const std::string& mine) {
  if (!mpi_) return std::vector<std::string>{mine};
  FP4C_ASSIGN(auto all, gather(mine));
  std::string joined;
  if (rank_ == 0)
    for (const std::string& part : all) {
      const uint64_t n = part.size();
      joined.append(reinterpret_cast<const char*>(&n), 8);
      joined += part;
    }
  FP4C_TRY(broadcast(joined));
  std::vector<std::string> out;
  for (size_t pos = 0; pos < joined.size();) {
    uint64_t n = 0;
    if (joined.size() - pos < 8) return make_error("MPI: a malformed allgather");
    std::memcpy(&n, joined.data() + pos, 8);
    pos += 8;
    if (n > joined.size() - pos) return make_error("MPI: a malformed allgather");
    out.emplace_back(joined.data() + pos, n);
    pos += n;
  }
  if (out.size() != size_t(size_)) return make_error("MPI: an allgather without every rank");
  return out;
}

Status Comm::broadcast(std::string& bytes, int root) {
  test_point();
  if (!mpi_) return {};
#ifdef FP4C_WITH_MPI
  uint64_t n = bytes.size();
  FP4C_TRY(mpi_status(MPI_Bcast(&n, 1, MPI_UINT64_T, root, MPI_COMM_WORLD), "broadcast"));
  if (rank_ != root) bytes.resize(n);
  for (uint64_t off = 0; off < n; off += kPiece) {
    const int count = int(std::min(kPiece, n - off));
    FP4C_TRY(mpi_status(MPI_Bcast(bytes.data() + off, count, MPI_BYTE, root, MPI_COMM_WORLD), "broadcast"));
  }
  // What a rank moves in a broadcast, counted as if sent from the root to each other rank.
  if (rank_ == root) sent_ += (8 + n) * uint64_t(size_ - 1);
  else received_ += 8 + n;
#endif
  return {};
}

Status Comm::barrier() {
#ifdef FP4C_WITH_MPI
  if (mpi_) return mpi_status(MPI_Barrier(MPI_COMM_WORLD), "barrier");
#endif
  return {};
}

Status Comm::sum_in_rank_order(std::span<double> values) {
  if (!distributed()) return {};
  std::string mine(reinterpret_cast<const char*>(values.data()), values.size_bytes());
  FP4C_ASSIGN(auto all, gather(mine));
  std::string result;
  if (rank_ == 0) {
    for (size_t r = 1; r < all.size(); ++r) {
      if (all[r].size() != values.size_bytes())
        return make_error("MPI: rank " + std::to_string(r) + " reduced " + std::to_string(all[r].size() / 8) +
                          " values, rank 0 " + std::to_string(values.size()));
      const double* v = reinterpret_cast<const double*>(all[r].data());
      for (size_t i = 0; i < values.size(); ++i) values[i] += v[i];
    }
    result.assign(reinterpret_cast<const char*>(values.data()), values.size_bytes());
  }
  FP4C_TRY(broadcast(result));
  if (result.size() != values.size_bytes()) return make_error("MPI: reduction size differs between ranks");
  std::memcpy(values.data(), result.data(), result.size());
  return {};
}

Status Comm::max_in_rank_order(std::span<float> values) {
  if (!distributed()) return {};
  std::string mine(reinterpret_cast<const char*>(values.data()), values.size_bytes());
  FP4C_ASSIGN(auto all, gather(mine));
  std::string result;
  if (rank_ == 0) {
    for (size_t r = 1; r < all.size(); ++r) {
      if (all[r].size() != values.size_bytes())
        return make_error("MPI: rank " + std::to_string(r) + " reduced " + std::to_string(all[r].size() / 4) +
                          " values, rank 0 " + std::to_string(values.size()));
      const float* v = reinterpret_cast<const float*>(all[r].data());
      for (size_t i = 0; i < values.size(); ++i) values[i] = std::max(values[i], v[i]);
    }
    result.assign(reinterpret_cast<const char*>(values.data()), values.size_bytes());
  }
  FP4C_TRY(broadcast(result));
  if (result.size() != values.size_bytes()) return make_error("MPI: reduction size differs between ranks");
  std::memcpy(values.data(), result.data(), result.size());
  return {};
}

void Comm::abort(int code) {
#ifdef FP4C_WITH_MPI
  if (mpi_) {
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
  }
#endif
  std::exit(code);
}

}  // namespace fp4c::runtime
