// Reads one typed value from a TOML node, for the node config and the model
// manifests alike. Returns what was wrong ("expected an integer", ...) or
// nullptr when `out` was set.
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>

#include <toml++/toml.h>

namespace shoal {

template <class T>
const char* read_toml_value(const toml::node& n, T& out) {
  if constexpr (std::is_same_v<T, std::string>) {
    auto v = n.value_exact<std::string>();
    if (!v)
      return "expected a string";
    out = *v;
  } else if constexpr (std::is_same_v<T, bool>) {
    auto v = n.value_exact<bool>();
    if (!v)
      return "expected true or false";
    out = *v;
  } else if constexpr (std::is_floating_point_v<T>) {
    auto v = n.value<double>();
    if (!v)
      return "expected a number";
    out = static_cast<T>(*v);
  } else {
    auto v = n.value_exact<int64_t>();
    if (!v)
      return "expected an integer";
    if (*v < 0 && std::is_unsigned_v<T>)
      return "must not be negative";
    out = static_cast<T>(*v);
  }
  return nullptr;
}

} // namespace shoal
