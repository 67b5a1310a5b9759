// Host-side queries of the CUDA runtime; defined in cpp/cuda/runtime.cu (only in NFHEP_CUDA builds).
#pragma once
#include <string>

namespace nfhep::detail {
/// Number of CUDA devices usable now; 0 with the runtime's reason in *status when there are none.
int cuda_device_count(std::string* status);
/// Throws std::runtime_error naming `what` if the last CUDA call or kernel failed.
void cuda_check(const char* what);
}  // namespace nfhep::detail
