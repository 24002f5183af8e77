// A shared library loaded at run time (dlopen with RTLD_NOW | RTLD_LOCAL),
// closed with its owner unless kept: the one place where dlopen's and
// dlsym's failures become errors, with dlerror's text.
#pragma once

#include <string>

#include <caf/expected.hpp>

namespace shoal {

class shared_library {
public:
  // errc::unavailable with dlerror's text when it cannot be loaded.
  static caf::expected<shared_library> open(const std::string& path);

  shared_library(shared_library&& other) noexcept;
  shared_library& operator=(shared_library&& other) noexcept;
  shared_library(const shared_library&) = delete;
  shared_library& operator=(const shared_library&) = delete;
  ~shared_library();

  // The symbol as a function pointer; nullptr when the library lacks it.
  template <class Fn>
  Fn function(const char* name) const {
    return reinterpret_cast<Fn>(lookup(name));
  }

  // Never closed: code or data of it stays in use (vtables, the driver's
  // threads).
  void keep() noexcept { keep_ = true; }

private:
  explicit shared_library(void* handle) noexcept : handle_(handle) {
    // nop
  }

  void* lookup(const char* name) const noexcept;
  void close() noexcept;

  void* handle_ = nullptr;
  bool keep_ = false;
};

} // namespace shoal
