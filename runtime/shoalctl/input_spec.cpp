#include "runtime/shoalctl/input_spec.hpp"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cstring>
#include <vector>

#include "net/wire/half.hpp"

namespace shoal::ctl {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  for (;;) {
    auto pos = s.find(sep);
    out.push_back(trim(s.substr(0, pos)));
    if (pos == std::string_view::npos) {
      return out;
    }
    s.remove_prefix(pos + 1);
  }
}

template <class T>
bool parse_number(std::string_view s, T& out) {
  if (!s.empty() && s.front() == '+') {
    s.remove_prefix(1);
  }
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && ptr == s.data() + s.size() && !s.empty();
}

template <class T>
void store(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof(v));
}

// One value as text, and why it does not fit when it does not.
struct value_text {
  std::string_view s;
  dtype t;
  std::string& err;

  bool not_a(const char* what) {
    err = "value '" + std::string{s} + "' is not " + what;
    return false;
  }
  bool out_of_range() {
    err = "value '" + std::string{s} + "' is out of range for " +
          std::string{to_string(t)};
    return false;
  }
};

bool store_float(value_text v, uint8_t* p) {
  double x;
  if (!parse_number(v.s, x)) {
    return v.not_a("a number");
  }
  auto f = static_cast<float>(x);
  switch (v.t) {
  case dtype::f64:
    store(p, x);
    break;
  case dtype::f32:
    store(p, f);
    break;
  case dtype::f16:
    store(p, f32_to_f16(f));
    break;
  default:
    store(p, f32_to_bf16(f));
    break;
  }
  return true;
}

bool store_bool(value_text v, uint8_t* p) {
  if (v.s == "true" || v.s == "1") {
    *p = 1;
  } else if (v.s == "false" || v.s == "0") {
    *p = 0;
  } else {
    return v.not_a("a bool (true, false, 1 or 0)");
  }
  return true;
}

bool store_u8(value_text v, uint8_t* p) {
  uint64_t x;
  if (!parse_number(v.s, x)) {
    return v.not_a("an unsigned integer");
  }
  if (x > 255) {
    return v.out_of_range();
  }
  *p = static_cast<uint8_t>(x);
  return true;
}

bool store_int(value_text v, uint8_t* p) {
  int64_t x;
  if (!parse_number(v.s, x)) {
    return v.not_a("an integer");
  }
  auto bits = dtype_size(v.t) * 8;
  if (bits < 64) {
    auto hi = (int64_t{1} << (bits - 1)) - 1;
    if (x > hi || x < -hi - 1) {
      return v.out_of_range();
    }
  }
  switch (bits) {
  case 8:
    store(p, static_cast<int8_t>(x));
    break;
  case 16:
    store(p, static_cast<int16_t>(x));
    break;
  case 32:
    store(p, static_cast<int32_t>(x));
    break;
  default:
    store(p, x);
    break;
  }
  return true;
}

// Writes one value of type `t` at `p`; false (with `err`) when `s` is not a
// number of that type or out of its range.
bool store_value(std::string_view s, dtype t, uint8_t* p, std::string& err) {
  value_text v{s, t, err};
  switch (t) {
  case dtype::f32:
  case dtype::f64:
  case dtype::f16:
  case dtype::bf16:
    return store_float(v, p);
  case dtype::boolean:
    return store_bool(v, p);
  case dtype::u8:
    return store_u8(v, p);
  case dtype::i8:
  case dtype::i16:
  case dtype::i32:
  case dtype::i64:
    return store_int(v, p);
  }
  err = "unsupported dtype";
  return false;
}

// SHAPE ("1,4", or empty for a scalar) into out.shape; its element count.
bool parse_shape(std::string_view text, const codec_limits& limits, tensor& out,
                 uint64_t& count, std::string& err) {
  out.shape.clear();
  count = 1;
  if (trim(text).empty()) {
    return true;
  }
  for (auto d : split(text, ',')) {
    uint64_t dim;
    if (!parse_number(d, dim)) {
      err = "bad dimension '" + std::string{d} + "' in shape (use e.g. 1,4)";
      return false;
    }
    if (out.shape.size() == limits.max_rank) {
      err = "shape has more than " + std::to_string(limits.max_rank) +
            " dimensions";
      return false;
    }
    out.shape.push_back(dim);
    if (__builtin_mul_overflow(count, dim, &count)) {
      err = "shape is too large";
      return false;
    }
  }
  return true;
}

// VALUES into out.data: all of them, or one that fills the tensor.
bool parse_values(std::string_view text, uint64_t count, tensor& out,
                  std::string& err) {
  auto size = dtype_size(out.type);
  auto values =
      trim(text).empty() ? std::vector<std::string_view>{} : split(text, ',');
  if (values.size() != 1 && values.size() != count) {
    err = "shape holds " + std::to_string(count) + " values but " +
          std::to_string(values.size()) +
          " were given (give all or a single one)";
    return false;
  }
  out.data.assign(count * size, 0);
  if (values.size() == 1 && count > 0) {
    // Broadcasting: parse once, copy the bytes.
    if (!store_value(values[0], out.type, out.data.data(), err)) {
      return false;
    }
    for (size_t k = 1; k < count; ++k) {
      std::memcpy(out.data.data() + k * size, out.data.data(), size);
    }
    return true;
  }
  for (size_t i = 0; i < count; ++i) {
    if (!store_value(values[i], out.type, out.data.data() + i * size, err)) {
      return false;
    }
  }
  return true;
}

} // namespace

bool parse_input(std::string_view spec, const codec_limits& limits, tensor& out,
                 std::string& err) {
  std::string_view parts[4];
  auto rest = spec;
  for (int i = 3; i > 0; --i) {
    auto pos = rest.rfind(':');
    if (pos == std::string_view::npos) {
      err = "expected NAME:DTYPE:SHAPE:VALUES";
      return false;
    }
    parts[i] = rest.substr(pos + 1);
    rest = rest.substr(0, pos);
  }
  parts[0] = rest;
  if (parts[0].empty()) {
    err = "empty tensor name";
    return false;
  }
  out.name = std::string{parts[0]};
  auto type = parse_dtype(trim(parts[1]));
  if (!type) {
    err = "unknown dtype '" + std::string{parts[1]} +
          "' (f32 f16 bf16 f64 i8 i16 i32 i64 u8 bool)";
    return false;
  }
  out.type = *type;
  uint64_t count = 0;
  if (!parse_shape(parts[2], limits, out, count, err)) {
    return false;
  }
  if (count > limits.max_bin_bytes / dtype_size(out.type)) {
    err = "shape is too large (over " + std::to_string(limits.max_bin_bytes) +
          " bytes)";
    return false;
  }
  if (!parse_values(parts[3], count, out, err)) {
    return false;
  }
  if constexpr (std::endian::native == std::endian::big) {
    auto size = dtype_size(out.type);
    for (size_t i = 0; i < count; ++i) {
      std::reverse(out.data.begin() + i * size,
                   out.data.begin() + (i + 1) * size);
    }
  }
  return true;
}

} // namespace shoal::ctl
