#include "gpu/plugin/shared_library.hpp"

#include <dlfcn.h>

#include <utility>

#include "net/wire/error.hpp"

namespace shoal {

caf::expected<shared_library> shared_library::open(const std::string& path) {
  // RTLD_LOCAL: the library's symbols (a plugin's own copies of shoal code)
  // never bind to anyone else's.
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = ::dlerror();
    return make_error(errc::unavailable,
                      why != nullptr ? std::string{why} : path + ": dlopen");
  }
  return shared_library{handle};
}

shared_library::shared_library(shared_library&& other) noexcept
    : handle_(std::exchange(other.handle_, nullptr)), keep_(other.keep_) {
  // nop
}

shared_library& shared_library::operator=(shared_library&& other) noexcept {
  if (this != &other) {
    close();
    handle_ = std::exchange(other.handle_, nullptr);
    keep_ = other.keep_;
  }
  return *this;
}

shared_library::~shared_library() {
  close();
}

void* shared_library::lookup(const char* name) const noexcept {
  return handle_ != nullptr ? ::dlsym(handle_, name) : nullptr;
}

void shared_library::close() noexcept {
  if (handle_ != nullptr && !keep_) {
    ::dlclose(handle_);
  }
  handle_ = nullptr;
}

} // namespace shoal
