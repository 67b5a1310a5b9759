// The engine's dense layers through OpenBLAS (the scipy-openblas32 build: every symbol prefixed scipy_).
//
// OpenBLAS is told once to run single-threaded: the engine already runs one chunk of events per nfhep
// thread, and a threaded BLAS under that would oversubscribe the cores (and, called from several threads
// at once, serialise on its own locks).
#include <cblas.h>

#include <mutex>
#include <string>

#include "flow_model.hpp"

namespace nfhep::detail {
namespace {
void single_threaded_blas() {
  static std::once_flag once;
  std::call_once(once, [] { scipy_openblas_set_num_threads(1); });
}
}  // namespace

// beta = 1 (C += A B^T): the engine fills C with the bias first, which spares OpenBLAS its separate pass
// that zeroes C for beta = 0 (measured: 6% of a MAF log_prob).
void gemm_abt(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C, int ldc) {
  single_threaded_blas();
  scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, lda, B, ldb, 1.0f, C, ldc);
}

void gemm_abt(int M, int N, int K, const double* A, int lda, const double* B, int ldb, double* C, int ldc) {
  single_threaded_blas();
  scipy_cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0, A, lda, B, ldb, 1.0, C, ldc);
}

void gemv_ab(int N, int K, const float* B, int ldb, const float* x, float* y) {
  single_threaded_blas();
  scipy_cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, 1.0f, B, ldb, x, 1, 1.0f, y, 1);
}

void gemv_ab(int N, int K, const double* B, int ldb, const double* x, double* y) {
  single_threaded_blas();
  scipy_cblas_dgemv(CblasRowMajor, CblasNoTrans, N, K, 1.0, B, ldb, x, 1, 1.0, y, 1);
}

const char* blas_name() {
  static const std::string name = std::string("OpenBLAS (scipy-openblas32): ") + scipy_openblas_get_config() + \
                                 " (" + scipy_openblas_get_corename() + ")";
  return name.c_str();
}

}  // namespace nfhep::detail
