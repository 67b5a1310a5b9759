// Shared helpers of the bindings: the only place (with the other bind_*.cpp) where pybind11 appears.
//
// Validation happens with the GIL held and every error names the function and the argument; compute then
// runs with the GIL released (py::gil_scoped_release). float32 and float64 only; never a silent cast.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

namespace nfhep::py {
namespace pyb = pybind11;

inline std::string shape_str(const pyb::array& a) {
  std::string s = "(";
  for (pyb::ssize_t i = 0; i < a.ndim(); ++i) {
    if (i) s += ", ";
    s += std::to_string(a.shape(i));
  }
  if (a.ndim() == 1) s += ",";
  return s + ")";
}

inline std::string dtype_str(const pyb::array& a) { return pyb::str(a.dtype()).cast<std::string>(); }

/// Raise TypeError unless `a` is a numpy array (not a list, not a torch tensor).
inline pyb::array as_array(const pyb::handle& obj, const char* func, const char* arg) {
  if (!pyb::isinstance<pyb::array>(obj))
    throw pyb::type_error(std::string(func) + ": argument '" + arg + "' must be a numpy.ndarray, got " +
                          pyb::str(pyb::type::of(obj).attr("__name__")).cast<std::string>());
  return pyb::reinterpret_borrow<pyb::array>(obj);
}

/// True if `a` holds float32 values, false if float64; TypeError otherwise.
inline bool is_float32(const pyb::array& a, const char* func, const char* arg) {
  if (a.dtype().is(pyb::dtype::of<float>()) || a.dtype().equal(pyb::dtype::of<float>())) return true;
  if (a.dtype().is(pyb::dtype::of<double>()) || a.dtype().equal(pyb::dtype::of<double>())) return false;
  throw pyb::type_error(std::string(func) + ": argument '" + arg + "' must have dtype float32 or float64, got " +
                        dtype_str(a));
}

/// TypeError unless `a` has the same dtype as the reference argument.
inline void require_same_dtype(const pyb::array& a, bool f32, const char* func, const char* arg,
                               const char* ref_arg) {
  if (is_float32(a, func, arg) != f32)
    throw pyb::type_error(std::string(func) + ": argument '" + arg + "' must have the same dtype as '" + ref_arg +
                          "' (" + (f32 ? "float32" : "float64") + "), got " + dtype_str(a) +
                          "; nfhep never casts silently");
}

/// ValueError unless `a` is C-contiguous (row-major) and aligned.
inline void require_contiguous(const pyb::array& a, const char* func, const char* arg) {
  if (!(a.flags() & pyb::array::c_style))
    throw pyb::value_error(std::string(func) + ": argument '" + arg +
                           "' must be C-contiguous (row-major); pass numpy.ascontiguousarray(" + arg + ")");
  if (!(a.flags() & pyb::detail::npy_api::NPY_ARRAY_ALIGNED_))
    throw pyb::value_error(std::string(func) + ": argument '" + arg + "' must be aligned in memory");
}

/// ValueError unless `a` has `ndim` dimensions; `expected` describes the shape for the message.
inline void require_ndim(const pyb::array& a, pyb::ssize_t ndim, const char* func, const char* arg,
                         const char* expected) {
  if (a.ndim() != ndim)
    throw pyb::value_error(std::string(func) + ": argument '" + arg + "' must have shape " + expected + " (" +
                           std::to_string(ndim) + " dimensions), got shape " + shape_str(a));
}

/// ValueError unless a.shape(axis) == n.
inline void require_dim(const pyb::array& a, pyb::ssize_t axis, pyb::ssize_t n, const char* func, const char* arg,
                        const char* expected) {
  if (a.shape(axis) != n)
    throw pyb::value_error(std::string(func) + ": argument '" + arg + "' must have shape " + expected +
                           ", got shape " + shape_str(a) + " (axis " + std::to_string(axis) + " is " +
                           std::to_string(a.shape(axis)) + ", expected " + std::to_string(n) + ")");
}

/// A new C-contiguous array of the given dtype and shape (uninitialised, as numpy.empty). Large ones
/// (>= 4 MiB) come from the bounded cache of freed output buffers (bind_buffers.cpp).
pyb::array new_array(bool f32, const std::vector<pyb::ssize_t>& shape);

}  // namespace nfhep::py
