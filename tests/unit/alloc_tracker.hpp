// Counts the largest single allocation a piece of code makes, for tests
// that decode hostile bytes and must not let a header claim gigabytes.
// Replaces malloc (or hooks the sanitizer's) and, with
// SHOAL_TRACK_OPERATOR_NEW defined, operator new: include it in exactly one
// translation unit of a test executable.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

// msgpack's zone allocates with ::malloc, not operator new, so counting only
// operator new would miss exactly the allocations a hostile header inflates.
// We count malloc (and operator new below, when asked), either through ASan's
// hooks (sanitizer builds) or by replacing malloc with glibc's own entry
// points.

namespace {

std::atomic<bool> track_allocs{false};
std::atomic<size_t> peak_alloc{0};

void note_alloc(size_t n) noexcept {
  if (!track_allocs.load(std::memory_order_relaxed)) {
    return;
  }
  auto cur = peak_alloc.load(std::memory_order_relaxed);
  while (n > cur && !peak_alloc.compare_exchange_weak(cur, n))
    ;
}

// Runs f and returns the largest single allocation it made.
template <class F>
size_t largest_alloc_during(F&& f) {
  peak_alloc = 0;
  track_allocs = true;
  f();
  track_allocs = false;
  return peak_alloc.load();
}

} // namespace

// Sanitizer runtimes own malloc; there we observe it through their hooks.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SHOAL_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||     \
    __has_feature(memory_sanitizer)
#define SHOAL_TEST_SANITIZED 1
#endif
#endif

#ifdef SHOAL_TEST_SANITIZED
extern "C" int __sanitizer_install_malloc_and_free_hooks(
    void (*)(const volatile void*, size_t), void (*)(const volatile void*));
namespace {
void sanitizer_malloc_hook(const volatile void*, size_t n) {
  note_alloc(n);
}
void sanitizer_free_hook(const volatile void*) {}
[[maybe_unused]] const int hooks_installed =
    __sanitizer_install_malloc_and_free_hooks(sanitizer_malloc_hook,
                                              sanitizer_free_hook);
} // namespace
#else
extern "C" {
void* __libc_malloc(size_t);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void __libc_free(void*);

void* malloc(size_t n) {
  note_alloc(n);
  return __libc_malloc(n);
}
void* calloc(size_t n, size_t m) {
  note_alloc(n * m);
  return __libc_calloc(n, m);
}
void* realloc(void* p, size_t n) {
  note_alloc(n);
  return __libc_realloc(p, n);
}
void free(void* p) {
  __libc_free(p);
}
}
#endif

// operator new too, when the test asks for it: it replaces only the plain
// forms, so a test that links libraries using the nothrow ones (libzmq)
// must leave it off, or the sanitizers see mismatched new and free.
#ifdef SHOAL_TRACK_OPERATOR_NEW
void* operator new(size_t n) {
  note_alloc(n);
  if (auto p = std::malloc(n == 0 ? 1 : n)) {
    return p;
  }
  throw std::bad_alloc{};
}
void* operator new[](size_t n) {
  return operator new(n);
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, size_t) noexcept {
  std::free(p);
}
#endif
