// Bindings of the two-sample metrics (nfhep._core.metrics). Public API: nfhep.metrics.
//
// Validation (dtype, shape, contiguity) happens here with the GIL held and names the argument; value
// checks (NaN/inf, weights, empty samples) happen in the core and arrive as ValueError. The compute runs
// with the GIL released. x and y: float32 or float64, same dtype, never cast; weights: float64.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "bind_common.hpp"
#include "nfhep/kolmogorov.hpp"
#include "nfhep/metrics.hpp"
#include "nfhep/sort.hpp"

namespace pyb = pybind11;
using nfhep::metrics::Sample;

namespace {

struct Checked {
  pyb::array arr;
  pyb::ssize_t n = 0, dim = 0;
};

Checked check_sample(const pyb::handle& obj, const char* func, const char* arg) {
  Checked c;
  c.arr = nfhep::py::as_array(obj, func, arg);
  nfhep::py::is_float32(c.arr, func, arg);
  nfhep::py::require_ndim(c.arr, 2, func, arg, "(n, D)");
  nfhep::py::require_contiguous(c.arr, func, arg);
  c.n = c.arr.shape(0);
  c.dim = c.arr.shape(1);
  return c;
}

const double* check_weights(const pyb::handle& obj, pyb::ssize_t n, const char* func, const char* arg,
                            pyb::array& keep) {
  if (obj.is_none()) return nullptr;
  keep = nfhep::py::as_array(obj, func, arg);
  if (!keep.dtype().equal(pyb::dtype::of<double>()))
    throw pyb::type_error(std::string(func) + ": argument '" + arg + "' must have dtype float64, got " +
                          nfhep::py::dtype_str(keep) + " (nfhep.metrics converts weights explicitly)");
  nfhep::py::require_ndim(keep, 1, func, arg, "(n,)");
  nfhep::py::require_contiguous(keep, func, arg);
  if (keep.shape(0) != n)
    throw pyb::value_error(std::string(func) + ": argument '" + arg + "' must have one weight per event (" +
                           std::to_string(n) + "), got " + std::to_string(keep.shape(0)));
  return static_cast<const double*>(keep.data());
}

template <class T>
Sample<T> make(const Checked& c, const double* w) {
  return Sample<T>{static_cast<const T*>(c.arr.data()), static_cast<std::size_t>(c.n),
                   static_cast<std::size_t>(c.dim), w};
}

struct Pair {
  Checked x, y;
  pyb::array kwx, kwy;
  const double* wx = nullptr;
  const double* wy = nullptr;
  bool f32 = false;
};

Pair check_pair(const pyb::handle& x, const pyb::handle& y, const pyb::handle& wx, const pyb::handle& wy,
                const char* func) {
  Pair p;
  p.x = check_sample(x, func, "x");
  p.f32 = nfhep::py::is_float32(p.x.arr, func, "x");
  p.y = check_sample(y, func, "y");
  nfhep::py::require_same_dtype(p.y.arr, p.f32, func, "y", "x");
  if (p.x.dim != p.y.dim)
    throw pyb::value_error(std::string(func) + ": argument 'y' must have the same number of dimensions as 'x' (" +
                           std::to_string(p.x.dim) + "), got shape " + nfhep::py::shape_str(p.y.arr));
  p.wx = check_weights(wx, p.x.n, func, "weights_x", p.kwx);
  p.wy = check_weights(wy, p.y.n, func, "weights_y", p.kwy);
  return p;
}

template <class F>
auto with_prefix(const char* func, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::invalid_argument& e) {
    throw pyb::value_error(std::string(func) + ": " + e.what());
  }
}

nfhep::metrics::Device parse_device(const std::string& d) {
  if (d == "cpu") return nfhep::metrics::Device::cpu;
  if (d == "cuda") return nfhep::metrics::Device::cuda;
  throw pyb::value_error("argument 'device' must be 'cpu' or 'cuda', got '" + d + "'");
}

// The distribution functions' bindings: validate a 1-D contiguous array of In named `arg`, then
// out = fn(in, k, out) over its k values without the GIL.
template <class In, class Fn>
pyb::array_t<double> map_1d(const pyb::object& obj, const char* func, const char* arg, const char* dtype_name,
                            Fn&& fn) {
  pyb::array arr = nfhep::py::as_array(obj, func, arg);
  if (!arr.dtype().equal(pyb::dtype::of<In>()))
    throw pyb::type_error(std::string(func) + ": argument '" + arg + "' must have dtype " + dtype_name +
                          ", got " + nfhep::py::dtype_str(arr));
  nfhep::py::require_ndim(arr, 1, func, arg, "(k,)");
  nfhep::py::require_contiguous(arr, func, arg);
  const auto k = static_cast<std::size_t>(arr.shape(0));
  pyb::array_t<double> out(arr.shape(0));
  const In* in = static_cast<const In*>(arr.data());
  double* o = out.mutable_data();
  {
    pyb::gil_scoped_release nogil;
    fn(in, k, o);
  }
  return out;
}

}  // namespace

void bind_metrics(pyb::module_& m) {
  m.def(
      "ks_statistics",
      [](const pyb::object& x, const pyb::object& y, const pyb::object& weights_x, const pyb::object& weights_y,
         bool check_finite, const std::string& device) {
        const char* func = "ks_statistics";
        Pair p = check_pair(x, y, weights_x, weights_y, func);
        const nfhep::metrics::Device dev = parse_device(device);
        pyb::array_t<double> dp(p.x.dim), dm(p.x.dim);
        double* a = dp.mutable_data();
        double* b = dm.mutable_data();
        with_prefix(func, [&] {
          pyb::gil_scoped_release nogil;
          if (p.f32)
            nfhep::metrics::ks_statistics(make<float>(p.x, p.wx), make<float>(p.y, p.wy), a, b, check_finite, dev);
          else
            nfhep::metrics::ks_statistics(make<double>(p.x, p.wx), make<double>(p.y, p.wy), a, b, check_finite,
                                          dev);
        });
        return std::make_pair(dp, dm);
      },
      pyb::arg("x"), pyb::arg("y"), pyb::kw_only(), pyb::arg("weights_x") = pyb::none(),
      pyb::arg("weights_y") = pyb::none(), pyb::arg("check_finite") = true, pyb::arg("device") = "cpu",
      "Per-dimension KS statistics (d_plus, d_minus) of (n1, D) and (n2, D) samples.");

  m.def(
      "wasserstein_per_dim",
      [](const pyb::object& x, const pyb::object& y, const pyb::object& weights_x, const pyb::object& weights_y,
         bool check_finite) {
        const char* func = "wasserstein_per_dim";
        Pair p = check_pair(x, y, weights_x, weights_y, func);
        pyb::array_t<double> out(p.x.dim);
        double* o = out.mutable_data();
        with_prefix(func, [&] {
          pyb::gil_scoped_release nogil;
          if (p.f32)
            nfhep::metrics::wasserstein_per_dim(make<float>(p.x, p.wx), make<float>(p.y, p.wy), o, check_finite);
          else
            nfhep::metrics::wasserstein_per_dim(make<double>(p.x, p.wx), make<double>(p.y, p.wy), o, check_finite);
        });
        return out;
      },
      pyb::arg("x"), pyb::arg("y"), pyb::kw_only(), pyb::arg("weights_x") = pyb::none(),
      pyb::arg("weights_y") = pyb::none(), pyb::arg("check_finite") = true,
      "Per-dimension 1-D Wasserstein-1 distances.");

  m.def(
      "sliced_wasserstein",
      [](const pyb::object& x, const pyb::object& y, const pyb::object& directions, const pyb::object& weights_x,
         const pyb::object& weights_y, bool check_finite, const std::string& device, std::size_t block_bytes) {
        const char* func = "sliced_wasserstein";
        Pair p = check_pair(x, y, weights_x, weights_y, func);
        const nfhep::metrics::Device dev = parse_device(device);
        pyb::array dirs = nfhep::py::as_array(directions, func, "directions");
        if (!dirs.dtype().equal(pyb::dtype::of<double>()))
          throw pyb::type_error(std::string(func) + ": argument 'directions' must have dtype float64, got " +
                                nfhep::py::dtype_str(dirs));
        nfhep::py::require_ndim(dirs, 2, func, "directions", "(n_directions, D)");
        nfhep::py::require_contiguous(dirs, func, "directions");
        nfhep::py::require_dim(dirs, 1, p.x.dim, func, "directions", "(n_directions, D)");
        const std::size_t nd = static_cast<std::size_t>(dirs.shape(0));
        pyb::array_t<double> out(static_cast<pyb::ssize_t>(nd));
        double* o = out.mutable_data();
        const double* dp = static_cast<const double*>(dirs.data());
        with_prefix(func, [&] {
          pyb::gil_scoped_release nogil;
          if (p.f32)
            nfhep::metrics::sliced_wasserstein(make<float>(p.x, p.wx), make<float>(p.y, p.wy), dp, nd, o,
                                               check_finite, dev, block_bytes);
          else
            nfhep::metrics::sliced_wasserstein(make<double>(p.x, p.wx), make<double>(p.y, p.wy), dp, nd, o,
                                               check_finite, dev, block_bytes);
        });
        return out;
      },
      pyb::arg("x"), pyb::arg("y"), pyb::arg("directions"), pyb::kw_only(), pyb::arg("weights_x") = pyb::none(),
      pyb::arg("weights_y") = pyb::none(), pyb::arg("check_finite") = true, pyb::arg("device") = "cpu",
      pyb::arg("block_bytes") = 0,
      "W1 between the projections of x and y on each direction (n_directions values).");

  m.def(
      "project",
      [](const pyb::object& x, const pyb::object& directions) {
        const char* func = "project";
        Checked c = check_sample(x, func, "x");
        const bool f32 = nfhep::py::is_float32(c.arr, func, "x");
        pyb::array dirs = nfhep::py::as_array(directions, func, "directions");
        if (!dirs.dtype().equal(pyb::dtype::of<double>()))
          throw pyb::type_error(std::string(func) + ": argument 'directions' must have dtype float64, got " +
                                nfhep::py::dtype_str(dirs));
        nfhep::py::require_ndim(dirs, 2, func, "directions", "(n_directions, D)");
        nfhep::py::require_contiguous(dirs, func, "directions");
        nfhep::py::require_dim(dirs, 1, c.dim, func, "directions", "(n_directions, D)");
        const std::size_t nd = static_cast<std::size_t>(dirs.shape(0));
        pyb::array_t<double> out({static_cast<pyb::ssize_t>(nd), c.n});
        double* o = out.mutable_data();
        const double* dp = static_cast<const double*>(dirs.data());
        with_prefix(func, [&] {
          pyb::gil_scoped_release nogil;
          if (f32)
            nfhep::metrics::project(make<float>(c, nullptr), dp, nd, o);
          else
            nfhep::metrics::project(make<double>(c, nullptr), dp, nd, o);
        });
        return out;
      },
      pyb::arg("x"), pyb::arg("directions"), "Projections (n_directions, n) of x on the directions, in float64.");

  m.def(
      "hpdi",
      [](const pyb::object& x, const pyb::object& probs, const pyb::object& weights, bool check_finite) {
        const char* func = "hpdi";
        Checked c = check_sample(x, func, "x");
        const bool f32 = nfhep::py::is_float32(c.arr, func, "x");
        pyb::array kw;
        const double* w = check_weights(weights, c.n, func, "weights", kw);
        pyb::array pr = nfhep::py::as_array(probs, func, "probs");
        if (!pr.dtype().equal(pyb::dtype::of<double>()))
          throw pyb::type_error(std::string(func) + ": argument 'probs' must have dtype float64, got " +
                                nfhep::py::dtype_str(pr));
        nfhep::py::require_ndim(pr, 1, func, "probs", "(n_probs,)");
        nfhep::py::require_contiguous(pr, func, "probs");
        const std::size_t np = static_cast<std::size_t>(pr.shape(0));
        pyb::array_t<double> lo({static_cast<pyb::ssize_t>(np), c.dim}), hi({static_cast<pyb::ssize_t>(np), c.dim});
        double* l = lo.mutable_data();
        double* h = hi.mutable_data();
        const double* pp = static_cast<const double*>(pr.data());
        with_prefix(func, [&] {
          pyb::gil_scoped_release nogil;
          if (f32)
            nfhep::metrics::hpdi(make<float>(c, w), pp, np, l, h, check_finite);
          else
            nfhep::metrics::hpdi(make<double>(c, w), pp, np, l, h, check_finite);
        });
        return std::make_pair(lo, hi);
      },
      pyb::arg("x"), pyb::arg("probs"), pyb::kw_only(), pyb::arg("weights") = pyb::none(),
      pyb::arg("check_finite") = true, "Shortest intervals (lo, hi), each (n_probs, D).");

  // A sorted copy of a 1-D float array with one of the core's sorts (radix_sort, sort).
  auto sorted_copy = [](const char* func, void (*sort32)(float*, std::size_t), void (*sort64)(double*, std::size_t)) {
    return [func, sort32, sort64](const pyb::object& a) {
      pyb::array arr = nfhep::py::as_array(a, func, "a");
      const bool f32 = nfhep::py::is_float32(arr, func, "a");
      nfhep::py::require_ndim(arr, 1, func, "a", "(n,)");
      nfhep::py::require_contiguous(arr, func, "a");
      const std::size_t n = static_cast<std::size_t>(arr.shape(0));
      pyb::array out = nfhep::py::new_array(f32, {arr.shape(0)});
      std::memcpy(out.mutable_data(), arr.data(), n * (f32 ? 4 : 8));
      void* o = out.mutable_data();
      {
        pyb::gil_scoped_release nogil;
        if (f32)
          sort32(static_cast<float*>(o), n);
        else
          sort64(static_cast<double*>(o), n);
      }
      return out;
    };
  };
  m.def("radix_sort",
        sorted_copy("radix_sort", static_cast<void (*)(float*, std::size_t)>(&nfhep::radix_sort),
                    static_cast<void (*)(double*, std::size_t)>(&nfhep::radix_sort)),
        pyb::arg("a"), "A sorted copy of a 1-D float32/float64 array (MSD radix sort; NaN not allowed).");
  m.def("sort",
        sorted_copy("sort", static_cast<void (*)(float*, std::size_t)>(&nfhep::sort),
                    static_cast<void (*)(double*, std::size_t)>(&nfhep::sort)),
        pyb::arg("a"),
        "A sorted copy of a 1-D float32/float64 array with the metrics' key sort for the active SIMD level "
        "(AVX-512 vectorised quicksort, else the radix sort; -0.0 comes out as +0.0; NaN not allowed).");

  // Null distributions of KS statistics (the asymptotic p-values of nfhep.metrics.ks_2samp).
  m.def(
      "kstwo_sf",
      [](const pyb::object& d, double n) {
        return map_1d<double>(d, "kstwo_sf", "d", "float64", [n](const double* in, std::size_t k, double* o) {
          nfhep::metrics::kstwo_sf(in, k, n, o);
        });
      },
      pyb::arg("d"), pyb::arg("n"),
      "P(D_n >= d) of the two-sided one-sample KS statistic, per element of d (scipy.stats.kstwo.sf).");
  m.def(
      "smirnov_sf",
      [](const pyb::object& d, std::int64_t n) {
        return map_1d<double>(d, "smirnov_sf", "d", "float64", [n](const double* in, std::size_t k, double* o) {
          nfhep::metrics::smirnov_sf(in, k, n, o);
        });
      },
      pyb::arg("d"), pyb::arg("n"),
      "P(D_n^+ >= d) of the one-sided one-sample KS statistic, per element of d (scipy.special.smirnov).");
  m.def(
      "ks_exact_equal_sf",
      [](const pyb::object& h, std::int64_t n) {
        return map_1d<std::int64_t>(h, "ks_exact_equal_sf", "h", "int64",
                                    [n](const std::int64_t* in, std::size_t k, double* o) {
                                      nfhep::metrics::ks_exact_equal_sf(in, k, n, o);
                                    });
      },
      pyb::arg("h"), pyb::arg("n"),
      "Exact two-sided two-sample KS p-values for n1 = n2 = n and D = h/n, per element of h (as scipy).");

  m.def("cuda_compiled", &nfhep::metrics::cuda_compiled, "True if built with the CUDA metrics kernels.");
}
