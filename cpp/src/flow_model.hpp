// Private: the in-memory form of a loaded flow (built by flow_load.cpp, evaluated by flow_eval.cpp).
//
// The loader turns the file's tensors into this form once: batch norms folded into their linear layers,
// MADE masks applied to the weights and checked against the degree rule, and every MADE's units sorted by
// degree (inputs as [context, x], so "degree <= m" is a prefix of the inputs), so that the evaluation can
// skip the masked-out blocks and autoregressive sampling can compute only the units that change per step.
#pragma once
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "nfhep/bijectors.hpp"
#include "nfhep/flow.hpp"

namespace nfhep::detail {

enum class Activation { relu, tanh, elu, gelu, silu, leaky_relu, sigmoid };

/// y = x W^T + b, W row-major (out x in). For MADE layers, rows (outputs) and columns (inputs) are in
/// degree order and `need[o]` is the number of leading inputs output o depends on (non-decreasing in o).
template <class T>
struct Dense {
  int in = 0;
  int out = 0;
  std::vector<T> W;
  std::vector<T> b;
  /// Output blocks [o_begin, o_end) that read the input prefix [0, k_end) (MADE: masked-out columns
  /// skipped; dense layers: one block).
  struct Block {
    int o_begin, o_end, k_end;
  };
  std::vector<Block> blocks;
};

/// A conditioner network: hidden Dense layers (each followed by the activation) and the output layer.
template <class T>
struct Net {
  std::vector<Dense<T>> layers;  ///< hidden..., output (the last one has no activation)
  Activation act = Activation::relu;
  bool constant = false;         ///< coupling with nothing to condition on: params = const_out
  std::vector<T> const_out;
  // MADE (autoregressive) only: per layer (hidden layers then output), for each degree m = 0..D the
  // range of output units of degree m, [deg_begin[m], deg_begin[m+1]) (degrees sorted ascending), and for
  // each degree m the input prefix those units read (prefix[m]).
  std::vector<std::vector<int>> deg_begin;
  std::vector<std::vector<int>> prefix;
};

enum class LayerKind { permutation, actnorm, autoregressive, coupling };

template <class T>
struct Layer {
  LayerKind kind = LayerKind::permutation;
  std::vector<int> perm, inverse_perm;  // permutation
  std::vector<T> log_scale, shift;      // actnorm
  T sum_log_scale = T(0);
  Net<T> net;                           // autoregressive / coupling
};

enum class Transformer { affine, rqs };

/// Per-feature preprocessing (docs/model-format.md section 5).
enum class PreKind { identity, log, two_sided, lower, upper };

/// Model-file version 2 per-feature kinds (docs/model-format.md section 5), applied around PreKind.
enum class Special { none, periodic, discrete, spike };

/// |x - v| <= kMatchTol * max(1, |v|) matches a discrete value or a spike (as nfhep.preprocessing.MATCH_TOL).
constexpr double kMatchTol = 1e-5;

template <class T>
struct Model {
  int D = 0;
  int C = 0;
  Transformer transformer = Transformer::affine;
  int P = 2;                 ///< transformer parameters per element
  T log_scale_clamp = T(3);  ///< affine
  int K = 0;                 ///< rqs
  RqsOptions rqs;
  int split = 0;             ///< coupling: floor(D / 2)
  std::vector<Layer<T>> layers;
  // preprocessing
  std::vector<PreKind> pre_kind;
  std::vector<double> lo, hi;     ///< bounds (as doubles; NaN where open)
  std::vector<T> lo_t, hi_t;      ///< the same in T
  std::vector<T> log_width;       ///< log(hi - lo) (two-sided), computed in double, rounded to T
  std::vector<T> mean, std_;      ///< standardisation
  T sum_log_std = T(0);
  std::vector<T> cmean, cstd;     ///< context standardisation
  std::vector<Special> special;   ///< per feature (none for version-1 files)
  std::vector<T> period_a, period_b, shift;      ///< periodic: [a, b) and the shift
  std::vector<int> relative_to;                  ///< periodic: the feature it is relative to (-1: none)
  bool any_relative = false;                     ///< some relative_to >= 0
  std::vector<std::vector<T>> values;            ///< discrete: the allowed values (increasing)
  std::vector<T> spike, cell0, cell1, spike_split;  ///< spike: value, cell [c0, c1], sampling split
  std::vector<double> log_cell;                  ///< spike: log(c1 - c0)
  bool dequantized = false;                      ///< some feature is discrete or has a spike
  std::vector<std::vector<T>> q_v, q_u, q_s;     ///< quantile maps: knots (v, u) and segment slopes (empty: none)
  int max_width = 0;              ///< widest hidden layer
  int max_params = 0;             ///< widest conditioner output
  /// An ensemble (family "ensemble"): the member flows' layers (and their D, C, transformer, widths);
  /// this Model then holds the shared preprocessing and no layers. Empty for a single flow.
  std::vector<Model<T>> members;
};

/// The Model whose layers give the workspace's shapes: a single flow itself, an ensemble its first member
/// (every member has the same configuration but the seed).
template <class T>
const Model<T>& shape_model(const Model<T>& m) {
  return m.members.empty() ? m : m.members.front();
}

struct FlowImpl {
  std::string path;
  std::string family;
  std::string checksum;
  std::string metadata_json;
  std::vector<std::string> features, context_features;
  std::vector<double> lower, upper;
  bool f32 = true;
  Model<float> mf;
  Model<double> md;
  // Free workspaces for the parallel calls (taken and returned under the mutex).
  mutable std::mutex pool_mutex;
  mutable std::vector<WorkspaceImpl*> pool;
  ~FlowImpl();
};

/// The scratch arrays of one chunk of R events, carved out of a workspace's buffer (flow_eval.cpp).
template <class T>
struct Scratch {
  T* h = nullptr;       ///< R x D: the flow's state
  T* tmp = nullptr;     ///< R x D
  T* lad = nullptr;     ///< R x D: per-element log-derivatives
  T* in = nullptr;      ///< R x (C + D): MADE input [context, h] / coupling input [h_1..h_s, context]
  T* ctx = nullptr;     ///< R x C: standardised context
  T* prm = nullptr;     ///< R x max_params
  T* x2 = nullptr;      ///< R x D: coupling's transformed half (input)
  T* y2 = nullptr;      ///< R x D: coupling's transformed half (output)
  T* col = nullptr;     ///< 3 x R: one feature's column during autoregressive sampling
  T* work = nullptr;    ///< the RQS batch loop's work memory
  T* const* hid = nullptr;  ///< per hidden layer: R x width
  double* ld = nullptr;     ///< R: flow log-det
  double* pre = nullptr;    ///< R: preprocessing log-det
  double* z = nullptr;      ///< R x D: latent draws (log_prob of an ensemble: the preprocessed u)
  double* acc = nullptr;    ///< 2 R: an ensemble's running logsumexp (maximum, sum)
  T* u_out = nullptr;       ///< R x D: an ensemble's sampled u, gathered back from the members
  T* ctx_all = nullptr;     ///< R x C: an ensemble's standardised context of every row
  T* xrow = nullptr;        ///< D: one event in data units while sampling (relative angles)
  unsigned char* bad = nullptr;  ///< R: 0 ok, 1 outside the support, 2 NaN
};

/// Scratch for one thread (sized for chunks of up to `rows` events); carved once, on first use.
struct WorkspaceImpl {
  const FlowImpl* owner = nullptr;
  std::size_t rows = 0;
  bool carved = false;
  std::vector<float> f;
  std::vector<double> d;
  std::vector<float*> hid_f;
  std::vector<double*> hid_d;
  Scratch<float> sf;
  Scratch<double> sd;
};

/// Parse and validate a model file's bytes (flow_load.cpp).
std::shared_ptr<FlowImpl> load_flow(const unsigned char* data, std::size_t size, const std::string& where);

/// dtype-generic BLAS wrappers (blas.cpp): C[M x N] (ldc) += A[M x K] (lda, row-major) * B^T, with B
/// row-major N x K (ldb), i.e. C += A B^T, the layout of y = b + x W^T with C holding b. OpenBLAS runs single-threaded: the
/// engine parallelises over event chunks itself.
void gemm_abt(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C, int ldc);
void gemm_abt(int M, int N, int K, const double* A, int lda, const double* B, int ldb, double* C, int ldc);
/// y[N] += B[N x K] (row-major, ldb) x[K]: one event (M = 1), where a GEMV has less call overhead.
void gemv_ab(int N, int K, const float* B, int ldb, const float* x, float* y);
void gemv_ab(int N, int K, const double* B, int ldb, const double* x, double* y);
/// The BLAS library's name and version (for build_info).
const char* blas_name();

}  // namespace nfhep::detail
