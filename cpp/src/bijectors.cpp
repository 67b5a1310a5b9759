// Batch entry points of the bijectors: validation, threads (fixed chunks) and SIMD dispatch.
#include "nfhep/bijectors.hpp"

#include <cmath>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bijectors_isa.hpp"
#include "nfhep/parallel.hpp"

namespace nfhep {
namespace {

// Fixed chunk sizes (elements): the split never depends on the thread count.
constexpr std::size_t kRqsChunk = 2048;
// Parameter-gradient outputs of at least this size use non-temporal stores (see rqs_backward). Tests set
// NFHEP_STREAM_BYTES to exercise that path on small arrays.
const std::size_t kStreamBytes = [] {
  const char* v = std::getenv("NFHEP_STREAM_BYTES");
  if (v && *v) {
    char* endp = nullptr;
    const unsigned long long b = std::strtoull(v, &endp, 10);
    if (endp && *endp == '\0') return static_cast<std::size_t>(b);
  }
  return std::size_t{128} << 20;
}();
constexpr std::size_t kAffineChunk = 32768;

std::string num(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}

void require_ptr(const void* p, std::size_t n, const char* func, const char* arg) {
  if (n > 0 && p == nullptr) throw std::invalid_argument(std::string(func) + ": " + arg + " must not be null");
}

void require_repeat(std::size_t repeat, const char* func, const char* arg) {
  if (repeat == 0) throw std::invalid_argument(std::string(func) + ": " + arg + " must be >= 1, got 0");
}

}  // namespace

void validate_rqs(int num_bins, const RqsOptions& o) {
  if (num_bins < 2)
    throw std::invalid_argument("num_bins must be >= 2 (K = (P + 1) / 3 with P = 3K - 1 parameters), got " +
                                std::to_string(num_bins));
  if (!(o.bound > 0) || !std::isfinite(o.bound))
    throw std::invalid_argument("bound must be finite and > 0, got " + num(o.bound));
  const struct {
    const char* name;
    double v;
  } mins[] = {{"min_bin_width", o.min_bin_width}, {"min_bin_height", o.min_bin_height},
              {"min_derivative", o.min_derivative}};
  for (const auto& m : mins)
    if (!(m.v >= 0) || !std::isfinite(m.v))
      throw std::invalid_argument(std::string(m.name) + " must be finite and >= 0, got " + num(m.v));
  if (!(o.min_bin_width * num_bins < 1))
    throw std::invalid_argument("min_bin_width * num_bins must be < 1 so that " + std::to_string(num_bins) +
                                " bins fit, got min_bin_width = " + num(o.min_bin_width));
  if (!(o.min_bin_height * num_bins < 1))
    throw std::invalid_argument("min_bin_height * num_bins must be < 1 so that " + std::to_string(num_bins) +
                                " bins fit, got min_bin_height = " + num(o.min_bin_height));
}

template <class T>
void rqs_forward(const T* x, const T* params, std::size_t n, int K, const RqsOptions& opt, T* y, T* lad) {
  validate_rqs(K, opt);
  for (auto [p, a] : {std::pair<const void*, const char*>{x, "x"}, {params, "params"}, {y, "y"}, {lad, "logabsdet"}})
    require_ptr(p, n, "rqs_forward", a);
  parallel_for(n, kRqsChunk, [&](std::size_t b, std::size_t e) {
    std::vector<T> work(detail::rqs_work_size(K, false));
    NFHEP_DISPATCH(rqs_run, 0, x, params, b, e, K, opt, y, lad, work.data());
  });
}

template <class T>
void rqs_inverse(const T* y, const T* params, std::size_t n, int K, const RqsOptions& opt, T* x, T* lad) {
  validate_rqs(K, opt);
  for (auto [p, a] : {std::pair<const void*, const char*>{y, "y"}, {params, "params"}, {x, "x"}, {lad, "logabsdet"}})
    require_ptr(p, n, "rqs_inverse", a);
  parallel_for(n, kRqsChunk, [&](std::size_t b, std::size_t e) {
    std::vector<T> work(detail::rqs_work_size(K, false));
    NFHEP_DISPATCH(rqs_run, 1, y, params, b, e, K, opt, x, lad, work.data());
  });
}

template <class T>
void rqs_backward(const T* in, const T* params, const T* gout, std::size_t rgo, const T* glad, std::size_t rgl,
                  std::size_t n, int K, const RqsOptions& opt, bool inverse, T* gin, T* gparams) {
  validate_rqs(K, opt);
  for (auto [p, a] : {std::pair<const void*, const char*>{in, "inputs"}, {params, "params"}, {gin, "grad_inputs"},
                      {gparams, "grad_params"}})
    require_ptr(p, n, "rqs_backward", a);
  require_repeat(rgo, "rqs_backward", "grad_out_repeat");
  require_repeat(rgl, "rqs_backward", "grad_logabsdet_repeat");
  // Parameter gradients far larger than the caches are written with non-temporal stores (where the SIMD
  // level has them): they would not stay cached for their consumer anyway, and plain stores first read
  // every destination line (at 10^6 x 28 x 23 float32, 2.6 GB of extra reads). Same values either way.
  const bool stream = n * static_cast<std::size_t>(3 * K - 1) * sizeof(T) >= kStreamBytes;
  parallel_for(n, kRqsChunk, [&](std::size_t b, std::size_t e) {
    std::vector<T> work(detail::rqs_work_size(K, true));
    NFHEP_DISPATCH(rqs_grad, inverse, in, params, gout, rgo, glad, rgl, b, e, K, opt, gin, gparams, work.data(),
                   stream);
  });
}

template <class T>
void rqs_backward(const T* in, const T* params, const T* gout, const T* glad, std::size_t n, int K,
                  const RqsOptions& opt, bool inverse, T* gin, T* gparams) {
  rqs_backward<T>(in, params, gout, 1, glad, 1, n, K, opt, inverse, gin, gparams);
}

template <class T>
void affine_forward(const T* x, const T* params, std::size_t n, T* y, T* lad) {
  for (auto [p, a] : {std::pair<const void*, const char*>{x, "x"}, {params, "params"}, {y, "y"}, {lad, "logabsdet"}})
    require_ptr(p, n, "affine_forward", a);
  parallel_for(n, kAffineChunk, [&](std::size_t b, std::size_t e) {
    NFHEP_DISPATCH(affine_run, 0, x, params, b, e, y, lad);
  });
}

template <class T>
void affine_inverse(const T* y, const T* params, std::size_t n, T* x, T* lad) {
  for (auto [p, a] : {std::pair<const void*, const char*>{y, "y"}, {params, "params"}, {x, "x"}, {lad, "logabsdet"}})
    require_ptr(p, n, "affine_inverse", a);
  parallel_for(n, kAffineChunk, [&](std::size_t b, std::size_t e) {
    NFHEP_DISPATCH(affine_run, 1, y, params, b, e, x, lad);
  });
}

template <class T>
void affine_backward(const T* in, const T* params, const T* gout, std::size_t rgo, const T* glad, std::size_t rgl,
                     std::size_t n, bool inverse, T* gin, T* gparams) {
  for (auto [p, a] : {std::pair<const void*, const char*>{in, "inputs"}, {params, "params"}, {gin, "grad_inputs"},
                      {gparams, "grad_params"}})
    require_ptr(p, n, "affine_backward", a);
  require_repeat(rgo, "affine_backward", "grad_out_repeat");
  require_repeat(rgl, "affine_backward", "grad_logabsdet_repeat");
  parallel_for(n, kAffineChunk, [&](std::size_t b, std::size_t e) {
    NFHEP_DISPATCH(affine_grad, inverse, in, params, gout, rgo, glad, rgl, b, e, gin, gparams);
  });
}

template <class T>
void affine_backward(const T* in, const T* params, const T* gout, const T* glad, std::size_t n, bool inverse,
                     T* gin, T* gparams) {
  affine_backward<T>(in, params, gout, 1, glad, 1, n, inverse, gin, gparams);
}

namespace detail {
template <class T>
void special_function(const char* name, const T* in, std::size_t n, T* out) {
  const std::string s = name;
  int fn;
  if (s == "exp") fn = 0;
  else if (s == "log") fn = 1;
  else if (s == "log1p") fn = 2;
  else if (s == "softplus") fn = 3;
  else if (s == "sigmoid") fn = 4;
  else if (s == "exp_nonpos") fn = 5;
  else if (s == "log1p_unit") fn = 6;
  else
    throw std::invalid_argument(
        "special_function: name must be exp, log, log1p, softplus, sigmoid, exp_nonpos or log1p_unit, got '" + s +
        "'");
  NFHEP_DISPATCH(special_eval, fn, in, n, out);
}
template NFHEP_API void special_function<float>(const char*, const float*, std::size_t, float*);
template NFHEP_API void special_function<double>(const char*, const double*, std::size_t, double*);
}  // namespace detail

#define NFHEP_INSTANTIATE(T)                                                                                     \
  template NFHEP_API void rqs_forward<T>(const T*, const T*, std::size_t, int, const RqsOptions&, T*, T*);       \
  template NFHEP_API void rqs_inverse<T>(const T*, const T*, std::size_t, int, const RqsOptions&, T*, T*);       \
  template NFHEP_API void rqs_backward<T>(const T*, const T*, const T*, const T*, std::size_t, int,              \
                                          const RqsOptions&, bool, T*, T*);                                      \
  template NFHEP_API void affine_forward<T>(const T*, const T*, std::size_t, T*, T*);                            \
  template NFHEP_API void affine_inverse<T>(const T*, const T*, std::size_t, T*, T*);                            \
  template NFHEP_API void affine_backward<T>(const T*, const T*, const T*, const T*, std::size_t, bool, T*, T*);   \
  template NFHEP_API void rqs_backward<T>(const T*, const T*, const T*, std::size_t, const T*, std::size_t,       \
                                          std::size_t, int, const RqsOptions&, bool, T*, T*);                    \
  template NFHEP_API void affine_backward<T>(const T*, const T*, const T*, std::size_t, const T*, std::size_t,    \
                                             std::size_t, bool, T*, T*);

NFHEP_INSTANTIATE(float)
NFHEP_INSTANTIATE(double)

}  // namespace nfhep
