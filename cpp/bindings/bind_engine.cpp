// nfhep._core.Engine: the C++ inference engine (nfhep::Flow) on numpy arrays. Arguments are validated with
// the GIL held (every error names the method and the argument); the computation runs with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <limits>
#include <string>

#include "bind_common.hpp"
#include "nfhep/flow.hpp"

namespace pyb = pybind11;
using nfhep::py::as_array;
using nfhep::py::is_float32;
using nfhep::py::require_contiguous;
using nfhep::py::require_dim;
using nfhep::py::require_ndim;
using nfhep::py::shape_str;

namespace {

std::string shape_text(std::size_t n, std::size_t d) {
  return "(" + std::to_string(n) + ", " + std::to_string(d) + ")";
}

// x: (N, D) float32/float64, C-contiguous.
pyb::array check_events(const nfhep::Flow& f, const pyb::handle& obj, const char* func, const char* arg) {
  pyb::array a = as_array(obj, func, arg);
  is_float32(a, func, arg);
  const std::string expected = "(N, " + std::to_string(f.num_features()) + ")";
  require_ndim(a, 2, func, arg, expected.c_str());
  require_dim(a, 1, static_cast<pyb::ssize_t>(f.num_features()), func, arg, expected.c_str());
  require_contiguous(a, func, arg);
  return a;
}

// context: None (unconditional flows), (C,) (one row for all) or (rows, C), same dtype as `f32`.
pyb::array check_context(const nfhep::Flow& f, const pyb::object& obj, bool f32, std::size_t n, bool allow_single,
                         const char* func, std::size_t& rows) {
  const std::size_t C = f.num_context();
  rows = 0;
  if (C == 0) {
    if (!obj.is_none())
      throw pyb::value_error(std::string(func) + ": argument 'context' given but the model has no context features");
    return pyb::array();
  }
  if (obj.is_none())
    throw pyb::value_error(std::string(func) + ": argument 'context' is required: the model has " +
                           std::to_string(C) + " context features");
  pyb::array a = as_array(obj, func, "context");
  nfhep::py::require_same_dtype(a, f32, func, "context", f32 ? "x (float32)" : "x (float64)");
  require_contiguous(a, func, "context");
  if (a.ndim() == 1 && allow_single && a.shape(0) == static_cast<pyb::ssize_t>(C)) {
    rows = 1;
    return a;
  }
  if (a.ndim() == 2 && a.shape(0) == static_cast<pyb::ssize_t>(n) && a.shape(1) == static_cast<pyb::ssize_t>(C)) {
    rows = n;
    return a;
  }
  throw pyb::value_error(std::string(func) + ": argument 'context' must have shape " +
                         (allow_single ? "(" + std::to_string(C) + ",) or " : std::string()) + shape_text(n, C) +
                         ", got " + shape_str(a));
}

template <class T>
pyb::array log_prob_t(const nfhep::Flow& f, const pyb::array& x, const pyb::array& ctx, std::size_t rows) {
  const std::size_t n = static_cast<std::size_t>(x.shape(0));
  pyb::array out = nfhep::py::new_array(sizeof(T) == 4, {static_cast<pyb::ssize_t>(n)});
  const T* xp = static_cast<const T*>(x.data());
  T* op = static_cast<T*>(out.mutable_data());
  if (rows == 1) {
    // one context row for every event: expand it (the engine takes a row per event)
    const std::size_t C = f.num_context();
    std::vector<T> c(n * C);
    const T* cp = static_cast<const T*>(ctx.data());
    for (std::size_t i = 0; i < n; ++i) std::copy(cp, cp + C, c.data() + i * C);
    pyb::gil_scoped_release nogil;
    f.log_prob(xp, n, op, c.data());
  } else {
    const T* cp = rows ? static_cast<const T*>(ctx.data()) : nullptr;
    pyb::gil_scoped_release nogil;
    f.log_prob(xp, n, op, cp);
  }
  return out;
}

template <class T>
pyb::tuple log_prob_members_t(const nfhep::Flow& f, const pyb::array& x, const pyb::array& ctx, std::size_t rows) {
  const std::size_t n = static_cast<std::size_t>(x.shape(0)), M = f.num_members();
  pyb::array out = nfhep::py::new_array(sizeof(T) == 4, {static_cast<pyb::ssize_t>(n), static_cast<pyb::ssize_t>(M)});
  pyb::array lp = nfhep::py::new_array(sizeof(T) == 4, {static_cast<pyb::ssize_t>(n)});
  T* lpp = static_cast<T*>(lp.mutable_data());
  const T* xp = static_cast<const T*>(x.data());
  T* op = static_cast<T*>(out.mutable_data());
  std::vector<T> c;
  const T* cp = rows ? static_cast<const T*>(ctx.data()) : nullptr;
  if (rows == 1) {  // one context row for every event: expand it
    const std::size_t C = f.num_context();
    c.resize(n * C);
    for (std::size_t i = 0; i < n; ++i) std::copy(cp, cp + C, c.data() + i * C);
    cp = c.data();
  }
  {
    pyb::gil_scoped_release nogil;
    f.log_prob_members(xp, n, op, cp, lpp);
  }
  return pyb::make_tuple(out, lp);
}

template <class T>
pyb::tuple sample_t(const nfhep::Flow& f, std::size_t n, std::uint64_t seed, std::uint64_t first,
                    const pyb::array& ctx, std::size_t rows, bool with_lp) {
  const std::size_t D = f.num_features();
  pyb::array out = nfhep::py::new_array(sizeof(T) == 4, {static_cast<pyb::ssize_t>(n), static_cast<pyb::ssize_t>(D)});
  pyb::array lp = with_lp ? nfhep::py::new_array(sizeof(T) == 4, {static_cast<pyb::ssize_t>(n)}) : pyb::array();
  T* op = static_cast<T*>(out.mutable_data());
  T* lpp = with_lp ? static_cast<T*>(lp.mutable_data()) : nullptr;
  const T* cp = rows ? static_cast<const T*>(ctx.data()) : nullptr;
  {
    pyb::gil_scoped_release nogil;
    f.sample(n, seed, first, op, cp, rows, lpp);
  }
  return pyb::make_tuple(out, with_lp ? pyb::object(lp) : pyb::object(pyb::none()));
}

std::uint64_t to_u64(const pyb::object& v, const char* func, const char* arg) {
  if (!pyb::isinstance<pyb::int_>(v) || pyb::isinstance<pyb::bool_>(v))
    throw pyb::type_error(std::string(func) + ": argument '" + arg + "' must be an int, got " +
                          pyb::str(pyb::type::of(v).attr("__name__")).cast<std::string>());
  const pyb::int_ i = v;
  if (i < pyb::int_(0) || i > pyb::int_(std::numeric_limits<std::uint64_t>::max()))
    throw pyb::value_error(std::string(func) + ": argument '" + arg + "' must be in [0, 2**64), got " +
                           pyb::str(v).cast<std::string>());
  return i.cast<std::uint64_t>();
}

}  // namespace

void bind_engine(pyb::module_& m) {
  // nfhep::FormatError -> nfhep.FormatError (a ValueError), the exception of the Python reader too.
  pyb::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const nfhep::FormatError& e) {
      pyb::object cls = pyb::module_::import("nfhep.modelfile").attr("FormatError");
      PyErr_SetString(cls.ptr(), e.what());
    }
  });

  pyb::class_<nfhep::Flow>(m, "Engine",
                           "A model file loaded by the C++ inference engine (nfhep::Flow); see nfhep.Engine.")
      .def(pyb::init([](const std::string& path) {
             pyb::gil_scoped_release nogil;
             return nfhep::Flow::load(path);
           }),
           pyb::arg("path"))
      .def_property_readonly("features", &nfhep::Flow::features)
      .def_property_readonly("context_features", &nfhep::Flow::context_features)
      .def_property_readonly("dtype", [](const nfhep::Flow& f) { return f.is_float32() ? "float32" : "float64"; })
      .def_property_readonly("family", &nfhep::Flow::family)
      .def_property_readonly("members", &nfhep::Flow::num_members)
      .def_property_readonly("path", &nfhep::Flow::path)
      .def_property_readonly("checksum", &nfhep::Flow::checksum)
      .def_property_readonly("metadata_json", &nfhep::Flow::metadata_json)
      .def_property_readonly("lower_bounds", &nfhep::Flow::lower_bounds)
      .def_property_readonly("upper_bounds", &nfhep::Flow::upper_bounds)
      .def(
          "log_prob",
          [](const nfhep::Flow& f, const pyb::object& x, const pyb::object& context) {
            const char* func = "Engine.log_prob";
            pyb::array xa = check_events(f, x, func, "x");
            const bool f32 = is_float32(xa, func, "x");
            std::size_t rows = 0;
            pyb::array ca = check_context(f, context, f32, static_cast<std::size_t>(xa.shape(0)), true, func, rows);
            return f32 ? log_prob_t<float>(f, xa, ca, rows) : log_prob_t<double>(f, xa, ca, rows);
          },
          pyb::arg("x"), pyb::arg("context") = pyb::none())
      .def(
          "log_prob_members",
          [](const nfhep::Flow& f, const pyb::object& x, const pyb::object& context) {
            const char* func = "Engine.log_prob_members";
            pyb::array xa = check_events(f, x, func, "x");
            const bool f32 = is_float32(xa, func, "x");
            std::size_t rows = 0;
            pyb::array ca = check_context(f, context, f32, static_cast<std::size_t>(xa.shape(0)), true, func, rows);
            return f32 ? log_prob_members_t<float>(f, xa, ca, rows) : log_prob_members_t<double>(f, xa, ca, rows);
          },
          pyb::arg("x"), pyb::arg("context") = pyb::none())
      .def(
          "in_support",
          [](const nfhep::Flow& f, const pyb::object& x) {
            const char* func = "Engine.in_support";
            pyb::array xa = check_events(f, x, func, "x");
            const std::size_t n = static_cast<std::size_t>(xa.shape(0));
            pyb::array_t<bool> out(static_cast<pyb::ssize_t>(n));
            auto* op = reinterpret_cast<std::uint8_t*>(out.mutable_data());
            if (is_float32(xa, func, "x")) {
              const float* xp = static_cast<const float*>(xa.data());
              pyb::gil_scoped_release nogil;
              f.in_support(xp, n, op);
            } else {
              const double* xp = static_cast<const double*>(xa.data());
              pyb::gil_scoped_release nogil;
              f.in_support(xp, n, op);
            }
            return out;
          },
          pyb::arg("x"))
      .def(
          "sample",
          [](const nfhep::Flow& f, const pyb::object& n_obj, const pyb::object& seed_obj, const pyb::object& first_obj,
             const pyb::object& context, const std::string& dtype, bool with_lp) {
            const char* func = "Engine.sample";
            const std::uint64_t n64 = to_u64(n_obj, func, "n");
            if (n64 > (std::uint64_t{1} << 40))
              throw pyb::value_error(std::string(func) + ": argument 'n' = " + std::to_string(n64) + " is too large");
            const std::size_t n = static_cast<std::size_t>(n64);
            const std::uint64_t seed = to_u64(seed_obj, func, "seed");
            const std::uint64_t first = to_u64(first_obj, func, "first_index");
            if (first > std::numeric_limits<std::uint64_t>::max() - n64)
              throw pyb::value_error(std::string(func) + ": first_index + n overflows the event index");
            bool f32;
            if (dtype.empty())
              f32 = f.is_float32();
            else if (dtype == "float32")
              f32 = true;
            else if (dtype == "float64")
              f32 = false;
            else
              throw pyb::value_error(std::string(func) + ": argument 'dtype' must be 'float32' or 'float64', got '" +
                                     dtype + "'");
            std::size_t rows = 0;
            pyb::array ca = check_context(f, context, f32, n, true, func, rows);
            return f32 ? sample_t<float>(f, n, seed, first, ca, rows, with_lp)
                       : sample_t<double>(f, n, seed, first, ca, rows, with_lp);
          },
          pyb::arg("n"), pyb::arg("seed"), pyb::arg("first_index"), pyb::arg("context"), pyb::arg("dtype"),
          pyb::arg("with_log_prob"))
      .def(
          "latent",
          [](const nfhep::Flow& f, const pyb::object& n_obj, const pyb::object& seed_obj, const pyb::object& first_obj) {
            const char* func = "Engine.latent";
            const std::uint64_t n64 = to_u64(n_obj, func, "n");
            if (n64 > (std::uint64_t{1} << 40))
              throw pyb::value_error(std::string(func) + ": argument 'n' = " + std::to_string(n64) + " is too large");
            const std::uint64_t seed = to_u64(seed_obj, func, "seed");
            const std::uint64_t first = to_u64(first_obj, func, "first_index");
            if (first > std::numeric_limits<std::uint64_t>::max() - n64)
              throw pyb::value_error(std::string(func) + ": first_index + n overflows the event index");
            const std::size_t n = static_cast<std::size_t>(n64);
            pyb::array out = nfhep::py::new_array(
                false, {static_cast<pyb::ssize_t>(n), static_cast<pyb::ssize_t>(f.num_features())});
            double* op = static_cast<double*>(out.mutable_data());
            pyb::gil_scoped_release nogil;
            f.latent(n, seed, first, op);
            return out;
          },
          pyb::arg("n"), pyb::arg("seed"), pyb::arg("first_index"));
}
