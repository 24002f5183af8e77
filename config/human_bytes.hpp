// Memory sizes for people ("512 B", "3.0 MiB", "79.6 GiB"), shared by the
// node (/readyz) and shoalctl (status) so that both spell them alike.
#pragma once

#include <cstdint>
#include <cstdio>
#include <iterator>
#include <string>

namespace shoal {

inline std::string human_bytes(uint64_t bytes) {
  static constexpr const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  if (bytes < 1024) {
    return std::to_string(bytes) + " B";
  }
  double v = static_cast<double>(bytes) / 1024;
  size_t u = 0;
  while (v >= 1024 && u + 1 < std::size(units)) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f %s", v, units[u]);
  return buf;
}

} // namespace shoal
