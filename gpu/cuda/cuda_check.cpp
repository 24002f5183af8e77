#include "gpu/cuda/cuda_check.hpp"

namespace shoal::cuda {

caf::error check(cudaError_t rc, const std::string& device, const char* what,
                 errc otherwise) {
  if (rc == cudaSuccess) {
    return {};
  }
  // Reset the (non-sticky) last error; a sticky one stays and every later
  // call reports it, which kills the replica as it should.
  (void)cudaGetLastError();
  auto code =
      rc == cudaErrorMemoryAllocation ? errc::resource_exhausted : otherwise;
  return make_error(code, device + ": " + what + ": " + cudaGetErrorString(rc) +
                              " (" + cudaGetErrorName(rc) + ")");
}

caf::error check(cublasStatus_t rc, const std::string& device, const char* what,
                 errc otherwise) {
  if (rc == CUBLAS_STATUS_SUCCESS) {
    return {};
  }
  auto code =
      rc == CUBLAS_STATUS_ALLOC_FAILED ? errc::resource_exhausted : otherwise;
  return make_error(code,
                    device + ": " + what + ": " + cublasGetStatusString(rc));
}

caf::error check(cudnnStatus_t rc, const std::string& device, const char* what,
                 errc otherwise) {
  if (rc == CUDNN_STATUS_SUCCESS) {
    return {};
  }
  auto code =
      rc == CUDNN_STATUS_ALLOC_FAILED ? errc::resource_exhausted : otherwise;
  return make_error(code,
                    device + ": " + what + ": " + cudnnGetErrorString(rc));
}

} // namespace shoal::cuda
