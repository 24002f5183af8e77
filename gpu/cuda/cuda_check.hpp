// CUDA, cuBLAS and cuDNN status codes become caf::errors here, once, at the
// edge. Out-of-memory of any of the three is errc::resource_exhausted (a
// load may retire an idle replica and try again); everything else is
// errc::unavailable at load and errc::internal while running.
#pragma once

#include <string>

#include <caf/error.hpp>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include "net/wire/error.hpp"

namespace shoal::cuda {

// `what` names the call and its purpose ("cudaMalloc of the weights");
// `device` prefixes the reason ("gpu:0: ..."). Clears the runtime's last
// error, so that a failed allocation does not poison later calls.
caf::error check(cudaError_t rc, const std::string& device, const char* what,
                 errc otherwise = errc::unavailable);
caf::error check(cublasStatus_t rc, const std::string& device, const char* what,
                 errc otherwise = errc::unavailable);
caf::error check(cudnnStatus_t rc, const std::string& device, const char* what,
                 errc otherwise = errc::unavailable);

} // namespace shoal::cuda

// Returns the error from the enclosing function when the call fails.
#define SHOAL_CUDA_TRY(call, ...)                                              \
  do {                                                                         \
    if (auto shoal_cuda_err_ = ::shoal::cuda::check((call), __VA_ARGS__))      \
      return shoal_cuda_err_;                                                  \
  } while (false)
