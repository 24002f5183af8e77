// Reads one typed value from a TOML node, for the node config and the model
// manifests alike. Returns what was wrong ("expected an integer", ...) or
// nullptr when `out` was set.
#pragma once

#include <cstdint>
#include <sstream>
#include <string>
#include <type_traits>

#include <caf/expected.hpp>
#include <toml++/toml.h>

#include "net/wire/error.hpp"

namespace shoal {

// Parses a TOML file; a syntax error (toml++ throws) becomes
// errc::config_invalid naming FILE:LINE:COLUMN.
inline caf::expected<toml::table> parse_toml_file(const std::string& path) {
  try {
    return toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    std::ostringstream os;
    os << path << ":" << e.source().begin.line << ":" << e.source().begin.column
       << ": " << e.description();
    return make_error(errc::config_invalid, os.str());
  }
}

template <class T>
const char* read_toml_value(const toml::node& n, T& out) {
  if constexpr (std::is_same_v<T, std::string>) {
    auto v = n.value_exact<std::string>();
    if (!v) {
      return "expected a string";
    }
    out = *v;
  } else if constexpr (std::is_same_v<T, bool>) {
    auto v = n.value_exact<bool>();
    if (!v) {
      return "expected true or false";
    }
    out = *v;
  } else if constexpr (std::is_floating_point_v<T>) {
    auto v = n.value<double>();
    if (!v) {
      return "expected a number";
    }
    out = static_cast<T>(*v);
  } else {
    auto v = n.value_exact<int64_t>();
    if (!v) {
      return "expected an integer";
    }
    if (*v < 0 && std::is_unsigned_v<T>) {
      return "must not be negative";
    }
    out = static_cast<T>(*v);
  }
  return nullptr;
}

} // namespace shoal
