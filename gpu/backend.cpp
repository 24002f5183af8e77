// The backend base class's own code, apart from load_backend, so that the
// CUDA plugin links it too (its backends derive from it).
#include "gpu/backend.hpp"

#include "net/wire/error.hpp"

namespace shoal {

caf::error backend::start(const std::vector<tensor>& inputs, uint64_t rows) {
  done_.push_back(run(inputs, rows));
  return {};
}

caf::expected<std::vector<tensor>> backend::finish() {
  if (done_.empty()) {
    return make_error(errc::internal, "finish() without start()");
  }
  auto out = std::move(done_.front());
  done_.pop_front();
  return out;
}

} // namespace shoal
