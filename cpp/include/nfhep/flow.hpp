// nfhep/flow.hpp: the C++ inference engine. Loads an nfhep model file (docs/model-format.md) and
// evaluates log p(x | c) and samples from it with no Python, no torch and no ROOT.
//
//   nfhep::Flow flow = nfhep::Flow::load("model.safetensors");   // throws nfhep::FormatError
//   std::vector<double> lp(n);
//   flow.log_prob(x.data(), n, lp.data());                        // x: n x D row-major, raw branch values
//   flow.sample(n, /*seed=*/42, /*first_index=*/0, out.data());   // n x D, the same events for any
//                                                                 // thread count and batch split
//
// All four families (MAF, RealNVP, C-RQS, A-RQS) and ensembles of them (an equal-weight mixture: the density
// is the average of the members' densities; sample() draws each event's member from the event's stream),
// with and without context, float32 and float64 models.
// The model's preprocessing (bounds, log, standardisation) is applied inside: callers pass raw values.
// Events outside the model's support (a bounded feature outside its open interval, a log feature <= 0)
// get log p = -inf; an event with a NaN feature, or a NaN or infinite context value, gets NaN.
//
// Precision: the model computes in its own dtype (float32 or float64, Flow::is_float32()); inputs of the
// other precision are converted to it chunk by chunk (as nfhep.Model.log_prob does) and the results
// converted back to the caller's type.
//
// Threads: a Flow is immutable after loading and may be shared by any number of threads. The calls without
// a Workspace argument split the batch into fixed chunks run on nfhep's pool (nfhep::set_num_threads /
// NFHEP_NUM_THREADS). The calls taking a Workspace run serially on the calling thread using that
// workspace's scratch: one Workspace per thread (e.g. per RDataFrame slot), never shared by two threads
// at once. Memory is bounded by the chunk size, not by n.
//
// Sampling uses a counter-based generator (Philox-4x32-10) keyed on (seed, global event index): event i
// of sample(n, seed, first_index) is event first_index + i of the stream `seed`, bit for bit, whatever
// the thread count or the way the stream is split into calls.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "nfhep/config.hpp"

namespace nfhep {

/// A file that is not a valid nfhep model file, or a model this engine cannot evaluate; the message names
/// the file and what is wrong (truncated, bad header, bad JSON, unknown version, out-of-range offsets,
/// checksum mismatch, shape/dtype mismatch, NaN weights, unsupported option, ...).
class NFHEP_API FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
struct FlowImpl;
struct WorkspaceImpl;
}  // namespace detail

/// Per-thread scratch of a Flow (see the file comment). Movable, not copyable.
class NFHEP_API Workspace {
 public:
  Workspace();
  ~Workspace();
  Workspace(Workspace&&) noexcept;
  Workspace& operator=(Workspace&&) noexcept;
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

 private:
  friend class Flow;
  std::unique_ptr<detail::WorkspaceImpl> impl_;
};

/// A loaded flow. Cheap to copy (copies share the immutable model).
class NFHEP_API Flow {
 public:
  /// Read and validate a model file. Throws nfhep::FormatError (bad file) or std::runtime_error (I/O).
  static Flow load(const std::string& path);
  /// The same from bytes in memory (`name` appears in error messages).
  static Flow from_bytes(const void* data, std::size_t size, const std::string& name = "<memory>");

  // -- what the model is ------------------------------------------------------------------------------
  std::size_t num_features() const;  ///< D
  std::size_t num_context() const;   ///< C (0: unconditional)
  const std::vector<std::string>& features() const;          ///< branch names, in input column order
  const std::vector<std::string>& context_features() const;  ///< context names, in order
  bool is_float32() const;            ///< the model's dtype: float32 (true) or float64
  const std::string& family() const;  ///< "maf", "realnvp", "crqs", "arqs" or "ensemble"
  /// The number of flows averaged: an ensemble's members (nfhep train --ensemble), 1 for a single flow.
  std::size_t num_members() const;
  const std::string& path() const;    ///< the file it was loaded from (or the name given to from_bytes)
  const std::string& checksum() const;  ///< the tensors' SHA-256 (hex), as in the file
  const std::string& metadata_json() const;  ///< the file's "nfhep" metadata document (JSON text)
  /// Lower / upper support bounds per feature (-inf / +inf where open; log features have lower 0).
  const std::vector<double>& lower_bounds() const;
  const std::vector<double>& upper_bounds() const;

  /// A workspace for the serial calls below, sized for batches of up to `max_batch` events
  /// (larger batches are cut into pieces of that size).
  Workspace make_workspace(std::size_t max_batch = 256) const;

  // -- density -------------------------------------------------------------------------------------------
  /// log p(x | c) of n events: x is n x D row-major (raw values), context n x C row-major (required iff
  /// num_context() > 0, else must be null), out has n values. Parallel over fixed chunks.
  void log_prob(const float* x, std::size_t n, float* out, const float* context = nullptr) const;
  void log_prob(const double* x, std::size_t n, double* out, const double* context = nullptr) const;
  /// The same, serially on the calling thread with its workspace.
  void log_prob(Workspace& ws, const float* x, std::size_t n, float* out, const float* context = nullptr) const;
  void log_prob(Workspace& ws, const double* x, std::size_t n, double* out,
                const double* context = nullptr) const;

  /// Each member flow's log p_k(x | c) (an ensemble's; for a single flow the same as log_prob): out is
  /// n x num_members() row-major. log_prob is log((1/M) sum_k p_k); the spread over k estimates the
  /// model's uncertainty at x. log_prob (optional, n values): log_prob() of the events, bit for bit, from
  /// the same pass. Parallel over fixed chunks.
  void log_prob_members(const float* x, std::size_t n, float* out, const float* context = nullptr,
                        float* log_prob = nullptr) const;
  void log_prob_members(const double* x, std::size_t n, double* out, const double* context = nullptr,
                        double* log_prob = nullptr) const;

  /// 1 where the event lies inside the model's support (every bounded feature strictly inside its bounds,
  /// every log feature > 0, no NaN), else 0.
  void in_support(const float* x, std::size_t n, std::uint8_t* out) const;
  void in_support(const double* x, std::size_t n, std::uint8_t* out) const;

  // -- sampling ----------------------------------------------------------------------------------------
  /// Events first_index .. first_index + n - 1 of the stream `seed`, written to out (n x D, raw units,
  /// clipped to closed bounds). context: null (unconditional flows), or context_rows = 1 (one context row
  /// for every event) or context_rows = n (one row per event). log_prob (optional, n values): the
  /// model's log-density of each event drawn. Parallel over fixed chunks.
  void sample(std::size_t n, std::uint64_t seed, std::uint64_t first_index, float* out,
              const float* context = nullptr, std::size_t context_rows = 0, float* log_prob = nullptr) const;
  void sample(std::size_t n, std::uint64_t seed, std::uint64_t first_index, double* out,
              const double* context = nullptr, std::size_t context_rows = 0, double* log_prob = nullptr) const;

  /// The standard-normal latent draws behind sample() (n x D, in the model's base space), for checks.
  void latent(std::size_t n, std::uint64_t seed, std::uint64_t first_index, double* out) const;

 private:
  explicit Flow(std::shared_ptr<const detail::FlowImpl> impl);
  std::shared_ptr<const detail::FlowImpl> impl_;
};

}  // namespace nfhep
