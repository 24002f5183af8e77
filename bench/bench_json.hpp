// The JSON the benchmarks write with --json: numbers and strings.
#pragma once

#include <cmath>
#include <cstdio>
#include <string>

namespace shoal::bench {

// A number, or null for NaN and infinities (JSON has neither).
inline std::string json_num(double v) {
  if (std::isnan(v) || std::isinf(v))
    return "null";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.6g", v);
  return buf;
}

// The inside of a JSON string: quotes and backslashes escaped, control
// characters (never in our labels) replaced by spaces.
inline std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\')
      out.push_back('\\'), out.push_back(c);
    else if (static_cast<unsigned char>(c) < 0x20)
      out += ' ';
    else
      out.push_back(c);
  }
  return out;
}

} // namespace shoal::bench
