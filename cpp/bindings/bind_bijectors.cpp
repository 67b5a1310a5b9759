// Bindings of the bijector kernels: nfhep._core.bijectors (numpy in, numpy out).
//
// Validation (types, dtypes, shapes, contiguity, spline options) happens with the GIL held and every
// error names the function and the argument; the compute runs with the GIL released. float32 and float64
// only, all arrays of one call in the same dtype, never a silent cast.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "bind_common.hpp"
#include "nfhep/bijectors.hpp"

#include "nfhep/cuda/bijectors.hpp"

namespace pyb = pybind11;
using namespace pyb::literals;
using nfhep::py::as_array;

namespace {

struct Checked {
  bool f32 = false;
  std::size_t n = 0;
  int P = 0;
  std::vector<pyb::ssize_t> shape;       // S
  std::vector<pyb::ssize_t> pshape;      // S + (P,)
};

// ValueError unless `a` has the shape of the reference argument `ref`.
void require_same_shape(const pyb::array& a, const pyb::array& ref, const char* func, const char* name,
                        const char* ref_name) {
  if (a.ndim() != ref.ndim() || !std::equal(ref.shape(), ref.shape() + ref.ndim(), a.shape()))
    throw pyb::value_error(std::string(func) + ": argument '" + name + "' must have the same shape as '" +
                           ref_name + "' " + nfhep::py::shape_str(ref) + ", got shape " + nfhep::py::shape_str(a));
}

// Validate the element-wise arrays (all of shape S) and params (shape S + (P,)).
// `elems` are (array, name) pairs; the first one is the reference for dtype and shape.
Checked check_arrays(const char* func, const std::vector<std::pair<pyb::array, const char*>>& elems,
                     const pyb::array& params, bool rqs) {
  Checked c;
  const pyb::array& ref = elems.front().first;
  const char* ref_name = elems.front().second;
  c.f32 = nfhep::py::is_float32(ref, func, ref_name);
  if (ref.ndim() == 0)
    throw pyb::value_error(std::string(func) + ": argument '" + ref_name +
                           "' must have at least one dimension (shape S), got a 0-d array");
  for (const auto& [a, name] : elems) {
    nfhep::py::require_same_dtype(a, c.f32, func, name, ref_name);
    nfhep::py::require_contiguous(a, func, name);
  }
  nfhep::py::require_same_dtype(params, c.f32, func, "params", ref_name);
  nfhep::py::require_contiguous(params, func, "params");
  c.shape.assign(ref.shape(), ref.shape() + ref.ndim());
  for (const auto& [a, name] : elems) require_same_shape(a, ref, func, name, ref_name);
  const std::string expected_p = rqs ? "(P = 3K - 1 spline parameters, K >= 2)" : "(P = 2: s, t)";
  if (params.ndim() != ref.ndim() + 1 || !std::equal(c.shape.begin(), c.shape.end(), params.shape()))
    throw pyb::value_error(std::string(func) + ": argument 'params' must have shape " +
                           nfhep::py::shape_str(ref).substr(0, nfhep::py::shape_str(ref).size() - 1) +
                           (ref.ndim() == 1 ? " " : ", ") + "P) " + expected_p + ", got shape " +
                           nfhep::py::shape_str(params));
  c.P = static_cast<int>(params.shape(params.ndim() - 1));
  if (rqs) {
    if ((c.P + 1) % 3 != 0 || (c.P + 1) / 3 < 2)
      throw pyb::value_error(std::string(func) + ": argument 'params' must have a last axis of P = 3K - 1 with an "
                             "integer number of bins K >= 2 (P = 5, 8, 11, ...), got P = " + std::to_string(c.P));
  } else if (c.P != 2) {
    throw pyb::value_error(std::string(func) + ": argument 'params' must have a last axis of size 2 (s, t), got " +
                           std::to_string(c.P));
  }
  c.n = 1;
  for (auto s : c.shape) c.n *= static_cast<std::size_t>(s);
  c.pshape = c.shape;
  c.pshape.push_back(c.P);
  return c;
}

nfhep::RqsOptions rqs_options(const char* func, int K, double bound, double mbw, double mbh, double md) {
  nfhep::RqsOptions o;
  o.bound = bound;
  o.min_bin_width = mbw;
  o.min_bin_height = mbh;
  o.min_derivative = md;
  try {
    nfhep::validate_rqs(K, o);
  } catch (const std::invalid_argument& e) {
    throw pyb::value_error(std::string(func) + ": " + e.what());
  }
  return o;
}

template <class T>
const T* ptr(const pyb::array& a) {
  return static_cast<const T*>(a.data());
}
template <class T>
T* mptr(pyb::array& a) {
  return static_cast<T*>(a.mutable_data());
}

// An upstream gradient argument of the backward functions: None (zeros), or an array of the inputs' shape
// S and dtype that is C-contiguous, or C-contiguous over leading axes and broadcast (stride 0) along the
// trailing ones -- the layout of a sum's gradient (numpy.broadcast_to, torch's expand). `repeat` is the
// number of elements that share one stored value (1 for a plain array).
struct GradIn {
  pyb::object keep;  // holds the array alive
  const void* data = nullptr;
  std::size_t repeat = 1;
};

GradIn grad_in(const pyb::handle& obj, const char* func, const char* name, const pyb::array& ref,
               const char* ref_name, bool f32) {
  GradIn g;
  if (obj.is_none()) return g;
  pyb::array a = as_array(obj, func, name);
  nfhep::py::require_same_dtype(a, f32, func, name, ref_name);
  require_same_shape(a, ref, func, name, ref_name);
  if (!(a.flags() & pyb::detail::npy_api::NPY_ARRAY_ALIGNED_))
    throw pyb::value_error(std::string(func) + ": argument '" + name + "' must be aligned in memory");
  // Trailing axes that are broadcast (stride 0) or of length 1 share one value ...
  pyb::ssize_t k = a.ndim();
  std::size_t repeat = 1;
  while (k > 0 && (a.shape(k - 1) == 1 || a.strides(k - 1) == 0)) {
    repeat *= static_cast<std::size_t>(a.shape(k - 1));
    --k;
  }
  // ... and the leading axes must be C-contiguous.
  bool ok = true;
  pyb::ssize_t expected = a.itemsize();
  for (pyb::ssize_t j = k - 1; j >= 0; --j) {
    if (a.shape(j) != 1 && a.strides(j) != expected) ok = false;
    expected *= a.shape(j);
  }
  if (!ok)
    throw pyb::value_error(std::string(func) + ": argument '" + name +
                           "' must be C-contiguous (row-major), or C-contiguous with broadcast (stride-0) trailing "
                           "axes; pass numpy.ascontiguousarray(" + name + ")");
  g.keep = a;
  g.data = a.data();
  g.repeat = repeat == 0 ? 1 : repeat;  // an empty array: nothing is read
  return g;
}

pyb::tuple rqs_apply(const char* func, bool inverse, const pyb::handle& in_obj, const pyb::handle& params_obj,
                     double bound, double mbw, double mbh, double md) {
  const char* in_name = inverse ? "y" : "x";
  pyb::array in = as_array(in_obj, func, in_name);
  pyb::array params = as_array(params_obj, func, "params");
  const Checked c = check_arrays(func, {{in, in_name}}, params, true);
  const int K = (c.P + 1) / 3;
  const nfhep::RqsOptions o = rqs_options(func, K, bound, mbw, mbh, md);
  pyb::array out = nfhep::py::new_array(c.f32, c.shape);
  pyb::array lad = nfhep::py::new_array(c.f32, c.shape);
  {
    pyb::gil_scoped_release release;
    if (c.f32) {
      if (inverse)
        nfhep::rqs_inverse<float>(ptr<float>(in), ptr<float>(params), c.n, K, o, mptr<float>(out), mptr<float>(lad));
      else
        nfhep::rqs_forward<float>(ptr<float>(in), ptr<float>(params), c.n, K, o, mptr<float>(out), mptr<float>(lad));
    } else {
      if (inverse)
        nfhep::rqs_inverse<double>(ptr<double>(in), ptr<double>(params), c.n, K, o, mptr<double>(out),
                                   mptr<double>(lad));
      else
        nfhep::rqs_forward<double>(ptr<double>(in), ptr<double>(params), c.n, K, o, mptr<double>(out),
                                   mptr<double>(lad));
    }
  }
  return pyb::make_tuple(out, lad);
}

pyb::tuple rqs_backward_py(const pyb::handle& in_obj, const pyb::handle& params_obj, const pyb::handle& go_obj,
                           const pyb::handle& gl_obj, bool inverse, double bound, double mbw, double mbh,
                           double md) {
  const char* func = "rqs_backward";
  pyb::array in = as_array(in_obj, func, "inputs");
  pyb::array params = as_array(params_obj, func, "params");
  const Checked c = check_arrays(func, {{in, "inputs"}}, params, true);
  const GradIn go = grad_in(go_obj, func, "grad_output", in, "inputs", c.f32);
  const GradIn gl = grad_in(gl_obj, func, "grad_logabsdet", in, "inputs", c.f32);
  const int K = (c.P + 1) / 3;
  const nfhep::RqsOptions o = rqs_options(func, K, bound, mbw, mbh, md);
  pyb::array gin = nfhep::py::new_array(c.f32, c.shape);
  pyb::array gp = nfhep::py::new_array(c.f32, c.pshape);
  {
    pyb::gil_scoped_release release;
    if (c.f32)
      nfhep::rqs_backward<float>(ptr<float>(in), ptr<float>(params), static_cast<const float*>(go.data), go.repeat,
                                 static_cast<const float*>(gl.data), gl.repeat, c.n, K, o, inverse,
                                 mptr<float>(gin), mptr<float>(gp));
    else
      nfhep::rqs_backward<double>(ptr<double>(in), ptr<double>(params), static_cast<const double*>(go.data),
                                  go.repeat, static_cast<const double*>(gl.data), gl.repeat, c.n, K, o, inverse,
                                  mptr<double>(gin), mptr<double>(gp));
  }
  return pyb::make_tuple(gin, gp);
}

pyb::tuple affine_apply(const char* func, bool inverse, const pyb::handle& in_obj, const pyb::handle& params_obj) {
  const char* in_name = inverse ? "y" : "x";
  pyb::array in = as_array(in_obj, func, in_name);
  pyb::array params = as_array(params_obj, func, "params");
  const Checked c = check_arrays(func, {{in, in_name}}, params, false);
  pyb::array out = nfhep::py::new_array(c.f32, c.shape);
  pyb::array lad = nfhep::py::new_array(c.f32, c.shape);
  {
    pyb::gil_scoped_release release;
    if (c.f32) {
      if (inverse)
        nfhep::affine_inverse<float>(ptr<float>(in), ptr<float>(params), c.n, mptr<float>(out), mptr<float>(lad));
      else
        nfhep::affine_forward<float>(ptr<float>(in), ptr<float>(params), c.n, mptr<float>(out), mptr<float>(lad));
    } else {
      if (inverse)
        nfhep::affine_inverse<double>(ptr<double>(in), ptr<double>(params), c.n, mptr<double>(out),
                                      mptr<double>(lad));
      else
        nfhep::affine_forward<double>(ptr<double>(in), ptr<double>(params), c.n, mptr<double>(out),
                                      mptr<double>(lad));
    }
  }
  return pyb::make_tuple(out, lad);
}

pyb::tuple affine_backward_py(const pyb::handle& in_obj, const pyb::handle& params_obj, const pyb::handle& go_obj,
                              const pyb::handle& gl_obj, bool inverse) {
  const char* func = "affine_backward";
  pyb::array in = as_array(in_obj, func, "inputs");
  pyb::array params = as_array(params_obj, func, "params");
  const Checked c = check_arrays(func, {{in, "inputs"}}, params, false);
  const GradIn go = grad_in(go_obj, func, "grad_output", in, "inputs", c.f32);
  const GradIn gl = grad_in(gl_obj, func, "grad_logabsdet", in, "inputs", c.f32);
  pyb::array gin = nfhep::py::new_array(c.f32, c.shape);
  pyb::array gp = nfhep::py::new_array(c.f32, c.pshape);
  {
    pyb::gil_scoped_release release;
    if (c.f32)
      nfhep::affine_backward<float>(ptr<float>(in), ptr<float>(params), static_cast<const float*>(go.data),
                                    go.repeat, static_cast<const float*>(gl.data), gl.repeat, c.n, inverse,
                                    mptr<float>(gin), mptr<float>(gp));
    else
      nfhep::affine_backward<double>(ptr<double>(in), ptr<double>(params), static_cast<const double*>(go.data),
                                     go.repeat, static_cast<const double*>(gl.data), gl.repeat, c.n, inverse,
                                     mptr<double>(gin), mptr<double>(gp));
  }
  return pyb::make_tuple(gin, gp);
}

const char* kRqsDocCommon = R"(
    Rational-quadratic spline of Durkan et al. (arXiv:1906.04032) on [-bound, bound] with K bins and
    identity tails, in nflows' parameterisation (``unconstrained_rational_quadratic_spline``,
    tails='linear'): params[..., :K] are width logits, params[..., K:2K] height logits, params[..., 2K:]
    the K-1 interior derivative logits; widths = min_bin_width + (1 - min_bin_width K) softmax(w),
    heights likewise, derivatives = min_derivative + softplus(u), boundary derivatives exactly 1.
    Inputs outside [-bound, bound] pass through with logabsdet 0; NaN -> NaN, +-inf -> +-inf.
    Arrays: float32 or float64 (all the same dtype), C-contiguous; params has shape S + (3K-1,).
    Multi-threaded (nfhep.set_num_threads) and vectorised; the GIL is released during the compute.)";

bool cuda_f32(const std::string& dtype, const char* func) {
  if (dtype == "float32") return true;
  if (dtype == "float64") return false;
  throw pyb::type_error(std::string(func) + ": argument 'dtype' must be 'float32' or 'float64', got '" + dtype + "'");
}

// Run a CUDA launcher with the GIL released; argument errors -> ValueError, CUDA errors -> RuntimeError.
template <class F>
void cuda_call(F&& f) {
  pyb::gil_scoped_release release;
  f();
}

const char* kCudaDoc = R"(
    CUDA launcher (only in builds with NFHEP_CUDA=ON). Arguments are DEVICE pointers given as integers
    (e.g. torch's ``tensor.data_ptr()``) of contiguous arrays holding n elements (params: n*P values),
    all of ``dtype`` ('float32' or 'float64'); ``stream`` is a cudaStream_t as an integer (0 = default
    stream, e.g. ``torch.cuda.current_stream().cuda_stream``). The launch is asynchronous on that stream.
    Same maths as the CPU function of the same name (one definition in nfhep/math/). Raises ValueError for
    bad options (num_bins <= 64 here), RuntimeError naming the CUDA error if the launch fails (e.g. no
    device or driver). Pointers are not checked: they must be valid device memory.)";

void bind_cuda(pyb::module_& m) {
  const std::string doc = kCudaDoc;
  m.def(
      "cuda_rqs_forward",
      [](std::uintptr_t x, std::uintptr_t params, std::size_t n, int num_bins, std::uintptr_t y, std::uintptr_t lad,
         const std::string& dtype, double bound, double mbw, double mbh, double md, std::uintptr_t stream) {
        const bool f32 = cuda_f32(dtype, "cuda_rqs_forward");
        const auto o = rqs_options("cuda_rqs_forward", num_bins, bound, mbw, mbh, md);
        cuda_call([&] {
          if (f32) nfhep::cuda::rqs_forward<float>(x, params, n, num_bins, o, y, lad, stream);
          else nfhep::cuda::rqs_forward<double>(x, params, n, num_bins, o, y, lad, stream);
        });
      },
      "x"_a, "params"_a, "n"_a, "num_bins"_a, "y"_a, "logabsdet"_a, pyb::kw_only(), "dtype"_a, "bound"_a = 5.0,
      "min_bin_width"_a = 1e-3, "min_bin_height"_a = 1e-3, "min_derivative"_a = 1e-3, "stream"_a = 0,
      ("cuda_rqs_forward(x, params, n, num_bins, y, logabsdet, *, dtype, bound=5.0, ..., stream=0)\n" + doc).c_str());
  m.def(
      "cuda_rqs_inverse",
      [](std::uintptr_t y, std::uintptr_t params, std::size_t n, int num_bins, std::uintptr_t x, std::uintptr_t lad,
         const std::string& dtype, double bound, double mbw, double mbh, double md, std::uintptr_t stream) {
        const bool f32 = cuda_f32(dtype, "cuda_rqs_inverse");
        const auto o = rqs_options("cuda_rqs_inverse", num_bins, bound, mbw, mbh, md);
        cuda_call([&] {
          if (f32) nfhep::cuda::rqs_inverse<float>(y, params, n, num_bins, o, x, lad, stream);
          else nfhep::cuda::rqs_inverse<double>(y, params, n, num_bins, o, x, lad, stream);
        });
      },
      "y"_a, "params"_a, "n"_a, "num_bins"_a, "x"_a, "logabsdet"_a, pyb::kw_only(), "dtype"_a, "bound"_a = 5.0,
      "min_bin_width"_a = 1e-3, "min_bin_height"_a = 1e-3, "min_derivative"_a = 1e-3, "stream"_a = 0,
      ("cuda_rqs_inverse(y, params, n, num_bins, x, logabsdet, *, dtype, bound=5.0, ..., stream=0)\n" + doc).c_str());
  m.def(
      "cuda_rqs_backward",
      [](std::uintptr_t in, std::uintptr_t params, std::uintptr_t go, std::uintptr_t gl, std::size_t n, int num_bins,
         std::uintptr_t gin, std::uintptr_t gp, const std::string& dtype, bool inverse, double bound, double mbw,
         double mbh, double md, std::uintptr_t stream) {
        const bool f32 = cuda_f32(dtype, "cuda_rqs_backward");
        const auto o = rqs_options("cuda_rqs_backward", num_bins, bound, mbw, mbh, md);
        cuda_call([&] {
          if (f32) nfhep::cuda::rqs_backward<float>(in, params, go, gl, n, num_bins, o, inverse, gin, gp, stream);
          else nfhep::cuda::rqs_backward<double>(in, params, go, gl, n, num_bins, o, inverse, gin, gp, stream);
        });
      },
      "inputs"_a, "params"_a, "grad_output"_a, "grad_logabsdet"_a, "n"_a, "num_bins"_a, "grad_inputs"_a,
      "grad_params"_a, pyb::kw_only(), "dtype"_a, "inverse"_a = false, "bound"_a = 5.0, "min_bin_width"_a = 1e-3,
      "min_bin_height"_a = 1e-3, "min_derivative"_a = 1e-3, "stream"_a = 0,
      ("cuda_rqs_backward(inputs, params, grad_output, grad_logabsdet, n, num_bins, grad_inputs, grad_params, *,"
       " dtype, inverse=False, bound=5.0, ..., stream=0)\n    grad_output/grad_logabsdet may be 0 (zeros).\n" + doc)
          .c_str());
  m.def(
      "cuda_affine_forward",
      [](std::uintptr_t x, std::uintptr_t params, std::size_t n, std::uintptr_t y, std::uintptr_t lad,
         const std::string& dtype, std::uintptr_t stream) {
        const bool f32 = cuda_f32(dtype, "cuda_affine_forward");
        cuda_call([&] {
          if (f32) nfhep::cuda::affine_forward<float>(x, params, n, y, lad, stream);
          else nfhep::cuda::affine_forward<double>(x, params, n, y, lad, stream);
        });
      },
      "x"_a, "params"_a, "n"_a, "y"_a, "logabsdet"_a, pyb::kw_only(), "dtype"_a, "stream"_a = 0,
      ("cuda_affine_forward(x, params, n, y, logabsdet, *, dtype, stream=0)\n" + doc).c_str());
  m.def(
      "cuda_affine_inverse",
      [](std::uintptr_t y, std::uintptr_t params, std::size_t n, std::uintptr_t x, std::uintptr_t lad,
         const std::string& dtype, std::uintptr_t stream) {
        const bool f32 = cuda_f32(dtype, "cuda_affine_inverse");
        cuda_call([&] {
          if (f32) nfhep::cuda::affine_inverse<float>(y, params, n, x, lad, stream);
          else nfhep::cuda::affine_inverse<double>(y, params, n, x, lad, stream);
        });
      },
      "y"_a, "params"_a, "n"_a, "x"_a, "logabsdet"_a, pyb::kw_only(), "dtype"_a, "stream"_a = 0,
      ("cuda_affine_inverse(y, params, n, x, logabsdet, *, dtype, stream=0)\n" + doc).c_str());
  m.def(
      "cuda_affine_backward",
      [](std::uintptr_t in, std::uintptr_t params, std::uintptr_t go, std::uintptr_t gl, std::size_t n,
         std::uintptr_t gin, std::uintptr_t gp, const std::string& dtype, bool inverse, std::uintptr_t stream) {
        const bool f32 = cuda_f32(dtype, "cuda_affine_backward");
        cuda_call([&] {
          if (f32) nfhep::cuda::affine_backward<float>(in, params, go, gl, n, inverse, gin, gp, stream);
          else nfhep::cuda::affine_backward<double>(in, params, go, gl, n, inverse, gin, gp, stream);
        });
      },
      "inputs"_a, "params"_a, "grad_output"_a, "grad_logabsdet"_a, "n"_a, "grad_inputs"_a, "grad_params"_a,
      pyb::kw_only(), "dtype"_a, "inverse"_a = false, "stream"_a = 0,
      ("cuda_affine_backward(inputs, params, grad_output, grad_logabsdet, n, grad_inputs, grad_params, *, dtype,"
       " inverse=False, stream=0)\n" + doc).c_str());
}

}  // namespace

void bind_bijectors(pyb::module_& m) {
  const std::string common = kRqsDocCommon;
  m.def(
      "rqs_forward",
      [](const pyb::handle& x, const pyb::handle& params, double bound, double mbw, double mbh, double md) {
        return rqs_apply("rqs_forward", false, x, params, bound, mbw, mbh, md);
      },
      "x"_a, "params"_a, pyb::kw_only(), "bound"_a = 5.0, "min_bin_width"_a = 1e-3, "min_bin_height"_a = 1e-3,
      "min_derivative"_a = 1e-3,
      ("rqs_forward(x, params, *, bound=5.0, min_bin_width=1e-3, min_bin_height=1e-3, min_derivative=1e-3)"
       " -> (y, logabsdet)\n\n    y = RQS(x) and logabsdet = log|dy/dx|, both of the shape of x.\n" + common)
          .c_str());
  m.def(
      "rqs_inverse",
      [](const pyb::handle& y, const pyb::handle& params, double bound, double mbw, double mbh, double md) {
        return rqs_apply("rqs_inverse", true, y, params, bound, mbw, mbh, md);
      },
      "y"_a, "params"_a, pyb::kw_only(), "bound"_a = 5.0, "min_bin_width"_a = 1e-3, "min_bin_height"_a = 1e-3,
      "min_derivative"_a = 1e-3,
      ("rqs_inverse(y, params, *, bound=5.0, min_bin_width=1e-3, min_bin_height=1e-3, min_derivative=1e-3)"
       " -> (x, logabsdet)\n\n    x = RQS^-1(y) and logabsdet = log|dx/dy| = -log|dy/dx| at x (stable root of\n"
       "    the quadratic, discriminant clamped at 0, bin coordinate clamped to [0, 1]).\n" + common)
          .c_str());
  m.def("rqs_backward", &rqs_backward_py, "inputs"_a, "params"_a, "grad_output"_a, "grad_logabsdet"_a,
        pyb::kw_only(), "inverse"_a = false, "bound"_a = 5.0, "min_bin_width"_a = 1e-3, "min_bin_height"_a = 1e-3,
        "min_derivative"_a = 1e-3,
        ("rqs_backward(inputs, params, grad_output, grad_logabsdet, *, inverse=False, bound=5.0, ...)"
         " -> (grad_inputs, grad_params)\n\n"
         "    Analytic vector-Jacobian product of (output, logabsdet) of rqs_forward (inverse=False) or\n"
         "    rqs_inverse (inverse=True) evaluated at `inputs`: grad_inputs = g_out d out/d in + g_lad d lad/d in,\n"
         "    grad_params (shape S + (3K-1,)) likewise through softmax, cumsum and softplus. The inverse uses\n"
         "    the implicit-function derivative dx/dy = 1/f'(x), dx/dp = -(df/dp)/f'(x). Tails:\n"
         "    grad_inputs = grad_output, grad_params = 0.\n"
         "\n    grad_output / grad_logabsdet: arrays of the shape of `inputs` (C-contiguous, or broadcast with\n"
         "    stride 0 along trailing axes, e.g. numpy.broadcast_to(g[:, None], x.shape): read without a copy),\n"
         "    or None for zeros.\n" + common)
            .c_str());
  m.def(
      "affine_forward",
      [](const pyb::handle& x, const pyb::handle& params) { return affine_apply("affine_forward", false, x, params); },
      "x"_a, "params"_a,
      "affine_forward(x, params) -> (y, logabsdet)\n\n"
      "    Affine bijector of MAF/RealNVP (arXiv:1705.07057, arXiv:1605.08803): y = x exp(s) + t,\n"
      "    logabsdet = s, with params[..., 0] = s and params[..., 1] = t (params shape S + (2,)).\n"
      "    float32 or float64, C-contiguous; NaN/inf propagate by IEEE arithmetic.");
  m.def(
      "affine_inverse",
      [](const pyb::handle& y, const pyb::handle& params) { return affine_apply("affine_inverse", true, y, params); },
      "y"_a, "params"_a,
      "affine_inverse(y, params) -> (x, logabsdet)\n\n"
      "    x = (y - t) exp(-s), logabsdet = log|dx/dy| = -s (see affine_forward).");
  m.def("affine_backward", &affine_backward_py, "inputs"_a, "params"_a, "grad_output"_a, "grad_logabsdet"_a,
        pyb::kw_only(), "inverse"_a = false,
        "affine_backward(inputs, params, grad_output, grad_logabsdet, *, inverse=False)"
        " -> (grad_inputs, grad_params)\n\n"
        "    Vector-Jacobian product of (output, logabsdet) of affine_forward (or affine_inverse when\n"
        "    inverse=True) at `inputs`: forward dL/dx = g exp(s), dL/ds = g x exp(s) + g_lad, dL/dt = g;\n"
        "    inverse dL/dy = g exp(-s), dL/ds = -g (y - t) exp(-s) - g_lad, dL/dt = -g exp(-s).\n"
        "\n    grad_output / grad_logabsdet: arrays of the shape of `inputs` (C-contiguous, or broadcast with\n"
        "    stride 0 along trailing axes, e.g. numpy.broadcast_to(g[:, None], x.shape): read without a copy),\n"
        "    or None for zeros.\n");
  m.def(
      "_special",
      [](const std::string& name, const pyb::handle& x_obj) {
        pyb::array x = as_array(x_obj, "_special", "x");
        const bool f32 = nfhep::py::is_float32(x, "_special", "x");
        nfhep::py::require_contiguous(x, "_special", "x");
        std::vector<pyb::ssize_t> shape(x.shape(), x.shape() + x.ndim());
        pyb::array out = nfhep::py::new_array(f32, shape);
        const std::size_t n = static_cast<std::size_t>(x.size());
        try {
          if (f32)
            nfhep::detail::special_function<float>(name.c_str(), ptr<float>(x), n, mptr<float>(out));
          else
            nfhep::detail::special_function<double>(name.c_str(), ptr<double>(x), n, mptr<double>(out));
        } catch (const std::invalid_argument& e) {
          throw pyb::value_error(e.what());
        }
        return out;
      },
      "name"_a, "x"_a,
      "_special(name, x) -> array\n\n    Test hook: nfhep's vectorisable exp/log/log1p/softplus/sigmoid/exp_nonpos/log1p_unit (math/special.hpp)\n"
      "    evaluated element-wise on a float32/float64 array with the active SIMD level.");
  m.def("cuda_available", &nfhep::cuda::compiled,
        "True if this build of nfhep contains the CUDA kernels (the cuda_* functions exist only then). It\n"
        "does not probe for a device: calling a cuda_* function without one raises RuntimeError naming the\n"
        "CUDA error.");
  if (nfhep::cuda::compiled()) bind_cuda(m);
}
