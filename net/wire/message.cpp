#include "net/wire/message.hpp"

#include <array>

namespace shoal {

namespace {

constexpr std::array<std::string_view, 10> dtype_names{
    "f32", "f16", "bf16", "f64", "i8", "i16", "i32", "i64", "u8", "bool"};
constexpr std::array<size_t, 10> dtype_sizes{4, 2, 2, 8, 1, 2, 4, 8, 1, 1};
constexpr std::array<std::string_view, 10> status_names{"OK",
                                                        "INVALID_ARGUMENT",
                                                        "NOT_FOUND",
                                                        "RESOURCE_EXHAUSTED",
                                                        "DEADLINE_EXCEEDED",
                                                        "UNAVAILABLE",
                                                        "UNAUTHENTICATED",
                                                        "PERMISSION_DENIED",
                                                        "INTERNAL",
                                                        "CANCELLED"};
constexpr std::array<std::string_view, 13> op_names{
    "infer",  "ping",   "models", "status", "load",   "unload", "drain",
    "reload", "submit", "job",    "wait",   "cancel", "jobs"};
constexpr std::array<std::string_view, 3> cache_names{"use", "bypass",
                                                      "refresh"};
constexpr std::array<std::string_view, 4> source_names{"", "cache", "executor",
                                                       "coalesced"};

template <class E, size_t N>
std::optional<E> lookup(const std::array<std::string_view, N>& names,
                        std::string_view s) noexcept {
  for (size_t i = 0; i < N; ++i) {
    if (names[i] == s) {
      return static_cast<E>(i);
    }
  }
  return std::nullopt;
}

template <size_t N, class E>
std::string_view name_of(const std::array<std::string_view, N>& names,
                         E e) noexcept {
  auto i = static_cast<size_t>(e);
  return i < N ? names[i] : std::string_view{"?"};
}

} // namespace

size_t dtype_size(dtype t) noexcept {
  auto i = static_cast<size_t>(t);
  return i < dtype_sizes.size() ? dtype_sizes[i] : 0;
}

std::string_view to_string(dtype t) noexcept {
  return name_of(dtype_names, t);
}

std::optional<dtype> parse_dtype(std::string_view s) noexcept {
  return lookup<dtype>(dtype_names, s);
}

std::string_view to_string(status s) noexcept {
  return name_of(status_names, s);
}

std::optional<status> parse_status(std::string_view s) noexcept {
  return lookup<status>(status_names, s);
}

std::string_view to_string(op_kind o) noexcept {
  return name_of(op_names, o);
}

std::optional<op_kind> parse_op(std::string_view s) noexcept {
  return lookup<op_kind>(op_names, s);
}

std::string_view to_string(cache_mode m) noexcept {
  return name_of(cache_names, m);
}

std::optional<cache_mode> parse_cache_mode(std::string_view s) noexcept {
  return lookup<cache_mode>(cache_names, s);
}

std::string_view to_string(reply_source s) noexcept {
  return name_of(source_names, s);
}

std::optional<uint64_t> tensor::element_count() const noexcept {
  uint64_t n = 1;
  for (auto d : shape) {
    if (__builtin_mul_overflow(n, d, &n)) {
      return std::nullopt;
    }
  }
  return n;
}

std::string request_id::to_string() const {
  switch (k) {
  case kind::nil:
    return "nil";
  case kind::num:
    return std::to_string(num);
  case kind::str:
    return '"' + str + '"';
  }
  return "?";
}

} // namespace shoal
