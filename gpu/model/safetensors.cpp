#include "gpu/model/safetensors.hpp"

#include "net/wire/half.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <set>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net/wire/error.hpp"

namespace shoal {

namespace {

// Nesting of the header JSON. Well-formed headers need 3 (top object, tensor
// object, shape array); the slack admits unknown fields with small nested
// values, and the cap keeps skipping them from recursing without bound.
constexpr int max_json_depth = 8;

// Longest tensor name or key quoted back in an error message: names are
// attacker-controlled and may be megabytes long.
constexpr size_t max_quoted = 96;

// Renders untrusted bytes for an error message: printable ASCII as is,
// everything else escaped, long inputs cut.
std::string quote(std::string_view s) {
  std::string out;
  size_t n = std::min(s.size(), max_quoted);
  for (size_t i = 0; i < n; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    }
  }
  if (s.size() > n) {
    out += "...";
  }
  return out;
}

std::optional<dtype> from_safetensors_name(std::string_view s) noexcept {
  if (s == "F32") {
    return dtype::f32;
  }
  if (s == "F16") {
    return dtype::f16;
  }
  if (s == "BF16") {
    return dtype::bf16;
  }
  if (s == "F64") {
    return dtype::f64;
  }
  if (s == "I8") {
    return dtype::i8;
  }
  if (s == "I16") {
    return dtype::i16;
  }
  if (s == "I32") {
    return dtype::i32;
  }
  if (s == "I64") {
    return dtype::i64;
  }
  if (s == "U8") {
    return dtype::u8;
  }
  if (s == "BOOL") {
    return dtype::boolean;
  }
  return std::nullopt;
}

bool checked_mul(uint64_t a, uint64_t b, uint64_t& out) noexcept {
  return !__builtin_mul_overflow(a, b, &out);
}

// A tensor entry as it comes out of the parser, before offsets become
// pointers.
struct entry {
  std::string name;
  dtype type = dtype::f32;
  std::vector<uint64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

// Strict recursive-descent parser for exactly the JSON a safetensors header
// holds. It walks the header in place (no copy of the text) and builds the
// entries directly rather than a generic JSON tree, so memory stays
// proportional to what the file really describes and every error can name
// the field it is about.
class header_parser {
public:
  header_parser(std::string_view text, const safetensors_limits& limits,
                uint64_t data_bytes)
      : in_(text), limits_(limits), data_bytes_(data_bytes) {
    // Empty.
  }

  // On failure returns false and leaves the message (without the file path)
  // in error().
  bool run(std::vector<entry>& entries,
           std::map<std::string, std::string>& metadata) {
    if (in_.empty() || in_[0] != '{') {
      return fail_ctx("header", "not a JSON object (does not start with '{')");
    }
    ++pos_;
    bool seen_metadata = false;
    skip_ws();
    if (peek() == '}') {
      ++pos_;
    } else {
      for (;;) {
        skip_ws();
        std::string key;
        if (!parse_string("header", &key)) {
          return false;
        }
        skip_ws();
        if (!expect(':', "header")) {
          return false;
        }
        skip_ws();
        if (key == "__metadata__") {
          if (seen_metadata) {
            return fail_ctx("header", "duplicate key '__metadata__'");
          }
          seen_metadata = true;
          if (!parse_metadata(metadata)) {
            return false;
          }
        } else {
          if (entries.size() >= limits_.max_tensors) {
            return fail_ctx("header", "more than " +
                                          std::to_string(limits_.max_tensors) +
                                          " tensors");
          }
          entries.emplace_back();
          entries.back().name = std::move(key);
          if (!parse_tensor(entries.back())) {
            return false;
          }
        }
        skip_ws();
        if (peek() == ',') {
          ++pos_;
          continue;
        }
        if (!expect('}', "header")) {
          return false;
        }
        break;
      }
    }
    skip_ws();
    if (pos_ != in_.size()) {
      return fail_ctx("header", "trailing characters after the JSON object");
    }
    return true;
  }

  const std::string& error() const noexcept { return error_; }

private:
  // -- error reporting -------------------------------------------------------

  bool fail_ctx(const std::string& ctx, const std::string& what) {
    error_ = ctx + ": " + what + " (header byte " + std::to_string(pos_) + ")";
    return false;
  }

  static std::string tensor_ctx(const entry& e, std::string_view field) {
    std::string ctx = "tensor '" + quote(e.name) + "'";
    if (!field.empty()) {
      ctx += ": ";
      ctx += field;
    }
    return ctx;
  }

  // -- lexing ----------------------------------------------------------------

  int peek() const noexcept {
    return pos_ < in_.size() ? static_cast<unsigned char>(in_[pos_]) : -1;
  }

  void skip_ws() noexcept {
    while (pos_ < in_.size()) {
      char c = in_[pos_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
        return;
      }
      ++pos_;
    }
  }

  bool expect(char c, const std::string& ctx) {
    if (peek() == static_cast<unsigned char>(c)) {
      ++pos_;
      return true;
    }
    if (peek() < 0) {
      return fail_ctx(ctx, std::string{"unexpected end, expected '"} + c + "'");
    }
    return fail_ctx(ctx, std::string{"expected '"} + c + "'");
  }

  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  bool parse_hex4(uint32_t& out) {
    if (in_.size() - pos_ < 4) {
      return false;
    }
    out = 0;
    for (int i = 0; i < 4; ++i) {
      char c = in_[pos_++];
      out <<= 4;
      if (c >= '0' && c <= '9') {
        out |= static_cast<uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        out |= static_cast<uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        out |= static_cast<uint32_t>(c - 'A' + 10);
      } else {
        return false;
      }
    }
    return true;
  }

  // Length of the well-formed UTF-8 sequence at pos_, or 0 (overlong forms,
  // encoded surrogates and code points past U+10FFFF are ill-formed).
  size_t utf8_len() const noexcept {
    auto at = [&](size_t i) -> unsigned {
      return pos_ + i < in_.size() ? static_cast<unsigned char>(in_[pos_ + i])
                                   : 0u;
    };
    unsigned b0 = at(0);
    auto cont = [](unsigned b) { return b >= 0x80 && b <= 0xBF; };
    if (b0 >= 0xC2 && b0 <= 0xDF) {
      return cont(at(1)) ? 2 : 0;
    }
    if (b0 >= 0xE0 && b0 <= 0xEF) {
      unsigned lo = b0 == 0xE0 ? 0xA0 : 0x80;
      unsigned hi = b0 == 0xED ? 0x9F : 0xBF;
      return at(1) >= lo && at(1) <= hi && cont(at(2)) ? 3 : 0;
    }
    if (b0 >= 0xF0 && b0 <= 0xF4) {
      unsigned lo = b0 == 0xF0 ? 0x90 : 0x80;
      unsigned hi = b0 == 0xF4 ? 0x8F : 0xBF;
      return at(1) >= lo && at(1) <= hi && cont(at(2)) && cont(at(3)) ? 4 : 0;
    }
    return 0;
  }

  // Parses a string at pos_; decodes it into *out unless out is null (for
  // skipped values, which still must be valid JSON).
  bool parse_string(const std::string& ctx, std::string* out) {
    if (peek() != '"') {
      return fail_ctx(ctx, peek() < 0 ? "unexpected end, expected a string"
                                      : "expected a string");
    }
    ++pos_;
    for (;;) {
      if (pos_ >= in_.size()) {
        return fail_ctx(ctx, "unterminated string");
      }
      auto c = static_cast<unsigned char>(in_[pos_]);
      if (c == '"') {
        ++pos_;
        return true;
      }
      if (c < 0x20) {
        return fail_ctx(ctx, "control character in string");
      }
      bool ok = c == '\\' ? parse_escape(ctx, out) : parse_char(ctx, c, out);
      if (!ok) {
        return false;
      }
    }
  }

  // One character of a string at pos_: an ASCII byte or a whole UTF-8
  // sequence.
  bool parse_char(const std::string& ctx, unsigned char c, std::string* out) {
    if (c < 0x80) {
      if (out) {
        *out += static_cast<char>(c);
      }
      ++pos_;
      return true;
    }
    size_t n = utf8_len();
    if (n == 0) {
      return fail_ctx(ctx, "invalid UTF-8 in string");
    }
    if (out) {
      out->append(in_.data() + pos_, n);
    }
    pos_ += n;
    return true;
  }

  // What a one-character escape stands for; 0 for one JSON does not have.
  static char unescape(char esc) noexcept {
    switch (esc) {
    case '"':
      return '"';
    case '\\':
      return '\\';
    case '/':
      return '/';
    case 'b':
      return '\b';
    case 'f':
      return '\f';
    case 'n':
      return '\n';
    case 'r':
      return '\r';
    case 't':
      return '\t';
    default:
      return 0;
    }
  }

  // The escape whose backslash is at pos_.
  bool parse_escape(const std::string& ctx, std::string* out) {
    ++pos_;
    if (pos_ >= in_.size()) {
      return fail_ctx(ctx, "unterminated string");
    }
    char esc = in_[pos_++];
    if (esc == 'u') {
      return parse_unicode_escape(ctx, out);
    }
    char plain = unescape(esc);
    if (plain == 0) {
      return fail_ctx(ctx, "bad escape in string");
    }
    if (out) {
      *out += plain;
    }
    return true;
  }

  // The XXXX of \uXXXX at pos_, and the second half of a surrogate pair.
  bool parse_unicode_escape(const std::string& ctx, std::string* out) {
    uint32_t cp = 0;
    if (!parse_hex4(cp)) {
      return fail_ctx(ctx, "bad \\u escape");
    }
    if (cp >= 0xDC00 && cp <= 0xDFFF) {
      return fail_ctx(ctx, "lone low surrogate in \\u escape");
    }
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      uint32_t lo = 0;
      if (in_.substr(pos_, 2) != "\\u") {
        return fail_ctx(ctx, "lone high surrogate in \\u escape");
      }
      pos_ += 2;
      if (!parse_hex4(lo) || lo < 0xDC00 || lo > 0xDFFF) {
        return fail_ctx(ctx, "bad surrogate pair in \\u escape");
      }
      cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    if (out) {
      append_utf8(*out, cp);
    }
    return true;
  }

  // A non-negative integer that fits in 64 bits; anything else JSON calls a
  // number (negative, fraction, exponent) is rejected with a reason.
  bool parse_uint(const std::string& ctx, uint64_t& out) {
    int c = peek();
    if (c == '-') {
      return fail_ctx(ctx, "negative number, expected a non-negative integer");
    }
    if (c < '0' || c > '9') {
      return fail_ctx(ctx, c < 0 ? "unexpected end, expected an integer"
                                 : "expected a non-negative integer");
    }
    if (c == '0' && pos_ + 1 < in_.size() && in_[pos_ + 1] >= '0' &&
        in_[pos_ + 1] <= '9') {
      return fail_ctx(ctx, "leading zero in integer");
    }
    out = 0;
    while (pos_ < in_.size() && in_[pos_] >= '0' && in_[pos_] <= '9') {
      auto d = static_cast<uint64_t>(in_[pos_] - '0');
      if (!checked_mul(out, 10, out) || __builtin_add_overflow(out, d, &out)) {
        return fail_ctx(ctx, "integer does not fit in 64 bits");
      }
      ++pos_;
    }
    c = peek();
    if (c == '.' || c == 'e' || c == 'E') {
      return fail_ctx(ctx, "not an integer (fraction or exponent)");
    }
    return true;
  }

  // An array of at most max_len non-negative integers. The bound is checked
  // per element, so a hostile array costs no more than max_len slots.
  bool parse_uint_array(const std::string& ctx, size_t max_len,
                        std::vector<uint64_t>& out) {
    if (peek() != '[') {
      return fail_ctx(ctx, "expected an array");
    }
    ++pos_;
    skip_ws();
    if (peek() == ']') {
      ++pos_;
      return true;
    }
    for (;;) {
      skip_ws();
      if (out.size() >= max_len) {
        return fail_ctx(ctx,
                        "more than " + std::to_string(max_len) + " elements");
      }
      uint64_t v = 0;
      if (!parse_uint(ctx + "[" + std::to_string(out.size()) + "]", v)) {
        return false;
      }
      out.push_back(v);
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      return expect(']', ctx);
    }
  }

  // Validates and skips any JSON value (for fields we do not know, which
  // Hugging Face's reader ignores too).
  bool skip_value(const std::string& ctx, int depth) {
    int c = peek();
    if (c == '{' || c == '[') {
      return skip_container(ctx, depth, c == '{' ? '}' : ']');
    }
    if (c == '"') {
      return parse_string(ctx, nullptr);
    }
    for (std::string_view lit : {"true", "false", "null"}) {
      if (in_.substr(pos_, lit.size()) == lit) {
        pos_ += lit.size();
        return true;
      }
    }
    return skip_number(ctx);
  }

  // An object or an array, opened at pos_ and ended by `close`.
  bool skip_container(const std::string& ctx, int depth, char close) {
    if (depth > max_json_depth) {
      return fail_ctx(ctx, "JSON nested deeper than " +
                               std::to_string(max_json_depth) + " levels");
    }
    ++pos_;
    skip_ws();
    if (peek() == static_cast<unsigned char>(close)) {
      ++pos_;
      return true;
    }
    for (;;) {
      skip_ws();
      if (close == '}' && !skip_key(ctx)) {
        return false;
      }
      if (!skip_value(ctx, depth + 1)) {
        return false;
      }
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      return expect(close, ctx);
    }
  }

  // An object's key and its colon.
  bool skip_key(const std::string& ctx) {
    if (!parse_string(ctx, nullptr)) {
      return false;
    }
    skip_ws();
    if (!expect(':', ctx)) {
      return false;
    }
    skip_ws();
    return true;
  }

  // A number, by JSON's grammar.
  bool skip_number(const std::string& ctx) {
    size_t start = pos_;
    if (peek() == '-') {
      ++pos_;
    }
    auto digits = [&] {
      size_t n = 0;
      while (pos_ < in_.size() && in_[pos_] >= '0' && in_[pos_] <= '9') {
        ++pos_;
        ++n;
      }
      return n;
    };
    if (peek() == '0') {
      ++pos_;
      if (peek() >= '0' && peek() <= '9') {
        return fail_ctx(ctx, "leading zero in number");
      }
    } else if (digits() == 0) {
      pos_ = start;
      return fail_ctx(ctx, "expected a JSON value");
    }
    if (peek() == '.') {
      ++pos_;
      if (digits() == 0) {
        return fail_ctx(ctx, "malformed number");
      }
    }
    if (peek() == 'e' || peek() == 'E') {
      ++pos_;
      if (peek() == '+' || peek() == '-') {
        ++pos_;
      }
      if (digits() == 0) {
        return fail_ctx(ctx, "malformed number");
      }
    }
    return true;
  }

  // -- header structure ------------------------------------------------------

  bool parse_metadata(std::map<std::string, std::string>& out) {
    const std::string ctx = "header: __metadata__";
    if (peek() != '{') {
      return fail_ctx(ctx, "expected an object");
    }
    ++pos_;
    skip_ws();
    if (peek() == '}') {
      ++pos_;
      return true;
    }
    for (;;) {
      skip_ws();
      std::string key;
      if (!parse_string(ctx, &key)) {
        return false;
      }
      skip_ws();
      if (!expect(':', ctx)) {
        return false;
      }
      skip_ws();
      std::string value;
      auto vctx = ctx + ": '" + quote(key) + "'";
      if (!parse_string(vctx, &value)) {
        return false;
      }
      if (!out.emplace(std::move(key), std::move(value)).second) {
        return fail_ctx(vctx, "duplicate key");
      }
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      return expect('}', ctx);
    }
  }

  // The keys of one tensor entry seen so far.
  struct tensor_keys {
    bool dtype = false;
    bool shape = false;
    bool data_offsets = false;
    std::set<std::string> unknown;
    std::vector<uint64_t> offsets;
  };

  bool parse_tensor(entry& e) {
    if (peek() != '{') {
      return fail_ctx(tensor_ctx(e, ""), "expected an object");
    }
    ++pos_;
    tensor_keys seen;
    skip_ws();
    if (peek() == '}') {
      ++pos_;
    } else if (!parse_tensor_fields(e, seen)) {
      return false;
    }
    // Semantic checks, while the position still points at this entry.
    return check_tensor(e, seen);
  }

  bool parse_tensor_fields(entry& e, tensor_keys& seen) {
    for (;;) {
      skip_ws();
      std::string key;
      if (!parse_string(tensor_ctx(e, ""), &key)) {
        return false;
      }
      skip_ws();
      auto ctx = tensor_ctx(e, quote(key));
      if (!expect(':', ctx)) {
        return false;
      }
      skip_ws();
      if (!parse_tensor_field(e, key, ctx, seen)) {
        return false;
      }
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      return expect('}', tensor_ctx(e, ""));
    }
  }

  bool parse_tensor_field(entry& e, const std::string& key,
                          const std::string& ctx, tensor_keys& seen) {
    auto once = [&](bool& flag) {
      if (flag) {
        return fail_ctx(ctx, "duplicate key");
      }
      flag = true;
      return true;
    };
    if (key == "dtype") {
      std::string name;
      if (!once(seen.dtype) || !parse_string(ctx, &name)) {
        return false;
      }
      auto t = from_safetensors_name(name);
      if (!t) {
        return fail_ctx(ctx, "unsupported dtype '" + quote(name) + "'");
      }
      e.type = *t;
      return true;
    }
    if (key == "shape") {
      return once(seen.shape) &&
             parse_uint_array(ctx, limits_.max_rank, e.shape);
    }
    if (key == "data_offsets") {
      return once(seen.data_offsets) && parse_uint_array(ctx, 2, seen.offsets);
    }
    if (!seen.unknown.insert(key).second) {
      return fail_ctx(ctx, "duplicate key");
    }
    return skip_value(ctx, 3);
  }

  // Every required key present, and offsets that hold the shape and dtype
  // inside the data region.
  bool check_tensor(entry& e, const tensor_keys& seen) {
    if (!seen.dtype) {
      return fail_ctx(tensor_ctx(e, "dtype"), "missing");
    }
    if (!seen.shape) {
      return fail_ctx(tensor_ctx(e, "shape"), "missing");
    }
    if (!seen.data_offsets) {
      return fail_ctx(tensor_ctx(e, "data_offsets"), "missing");
    }
    auto octx = tensor_ctx(e, "data_offsets");
    if (seen.offsets.size() != 2) {
      return fail_ctx(octx, "expected [begin, end], got " +
                                std::to_string(seen.offsets.size()) +
                                " elements");
    }
    e.begin = seen.offsets[0];
    e.end = seen.offsets[1];
    if (e.end < e.begin) {
      return fail_ctx(octx, "end " + std::to_string(e.end) + " < begin " +
                                std::to_string(e.begin));
    }
    if (e.end > data_bytes_) {
      return fail_ctx(octx, "end " + std::to_string(e.end) +
                                " lies beyond the data region of " +
                                std::to_string(data_bytes_) + " bytes");
    }
    uint64_t want = dtype_size(e.type);
    for (auto dim : e.shape) {
      if (!checked_mul(want, dim, want)) {
        return fail_ctx(tensor_ctx(e, "shape"),
                        "element count times dtype size overflows 64 bits");
      }
    }
    if (want != e.end - e.begin) {
      return fail_ctx(
          octx, "[" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                    "] holds " + std::to_string(e.end - e.begin) +
                    " bytes, shape and dtype need " + std::to_string(want));
    }
    return true;
  }

  std::string_view in_;
  size_t pos_ = 0;
  const safetensors_limits& limits_;
  uint64_t data_bytes_;
  std::string error_;
};

caf::error invalid(const std::string& path, const std::string& what) {
  return make_error(errc::invalid_argument, path + ": " + what);
}

caf::error from_errno(const std::string& path, const char* call, int err) {
  auto code = err == ENOENT ? errc::not_found : errc::io_error;
  return make_error(code, path + ": " + call + ": " + std::strerror(err));
}

uint64_t load_le64(const uint8_t* p) noexcept {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) {
    v = (v << 8) | p[i];
  }
  return v;
}

struct mapping {
  const uint8_t* base = nullptr;
  uint64_t size = 0;
};

// Maps a regular file read-only. A file too short for the length prefix is
// refused before it is mapped.
caf::expected<mapping> map_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return from_errno(path, "open", errno);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return from_errno(path, "fstat", err);
  }
  // Devices and FIFOs have no meaningful size to validate against.
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return invalid(path, "header: not a regular file");
  }
  auto size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return invalid(path, "header: truncated: file has " + std::to_string(size) +
                             " bytes, the length prefix alone needs 8");
  }
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int err = errno;
  // The mapping keeps the file referenced; the descriptor is not needed.
  ::close(fd);
  if (p == MAP_FAILED) {
    return from_errno(path, "mmap", err);
  }
  return mapping{static_cast<const uint8_t*>(p), size};
}

// The header's length from the prefix, within the file and the limit.
caf::expected<uint64_t> header_length(const std::string& path, const mapping& m,
                                      const safetensors_limits& limits) {
  uint64_t header_len = load_le64(m.base);
  if (header_len > m.size - 8) {
    return invalid(path, "header: truncated: length " +
                             std::to_string(header_len) + " exceeds the " +
                             std::to_string(m.size - 8) +
                             " bytes after the length prefix");
  }
  if (header_len > limits.max_header_bytes) {
    return invalid(path, "header: length " + std::to_string(header_len) +
                             " exceeds the limit of " +
                             std::to_string(limits.max_header_bytes) +
                             " bytes");
  }
  return header_len;
}

// The weights are about to be read in full: map them all now, so that a
// replica reported ready serves its first request without page faults (or
// disk reads, when the file was not cached). MADV_POPULATE_READ needs Linux
// 5.14; older kernels get readahead only.
void prefault(const mapping& m) {
  ::madvise(const_cast<uint8_t*>(m.base), m.size, MADV_WILLNEED);
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
  ::madvise(const_cast<uint8_t*>(m.base), m.size, MADV_POPULATE_READ);
}

// Indices of `entries` sorted by name; an error when two share one.
caf::expected<std::vector<uint32_t>>
name_order(const std::string& path, const std::vector<entry>& entries) {
  std::vector<uint32_t> order(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    order[i] = static_cast<uint32_t>(i);
  }
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    return entries[a].name < entries[b].name;
  });
  for (size_t i = 1; i < order.size(); ++i) {
    if (entries[order[i]].name == entries[order[i - 1]].name) {
      return invalid(path, "header: duplicate tensor name '" +
                               quote(entries[order[i]].name) + "'");
    }
  }
  return order;
}

std::string range_of(const entry& x) {
  return "[" + std::to_string(x.begin) + ", " + std::to_string(x.end) + "]";
}

// Hugging Face's rule: tensors, in offset order, tile the data region
// exactly, with no gap and no overlap; anything else is a header that lies.
caf::error check_tiling(const std::string& path,
                        const std::vector<entry>& entries,
                        uint64_t data_bytes) {
  uint64_t covered = 0;
  const entry* prev = nullptr;
  for (const auto& e : entries) {
    if (e.begin < covered) {
      return invalid(path, "tensor '" + quote(e.name) + "': data_offsets: " +
                               range_of(e) + " overlaps tensor '" +
                               quote(prev->name) + "' " + range_of(*prev));
    }
    if (e.begin > covered) {
      return invalid(path,
                     "tensor '" + quote(e.name) + "': data_offsets: gap of " +
                         std::to_string(e.begin - covered) +
                         " bytes before begin " + std::to_string(e.begin) +
                         " (data not covered by any tensor)");
    }
    covered = e.end;
    prev = &e;
  }
  if (covered != data_bytes) {
    return invalid(
        path, "header: data region: " + std::to_string(data_bytes - covered) +
                  " bytes after the last tensor are not covered "
                  "by any tensor");
  }
  return {};
}

} // namespace

// -- safetensors_file ---------------------------------------------------------

safetensors_file::safetensors_file(safetensors_file&& other) noexcept
    : path_(std::move(other.path_)), base_(std::exchange(other.base_, nullptr)),
      size_(std::exchange(other.size_, 0)), tensors_(std::move(other.tensors_)),
      by_name_(std::move(other.by_name_)),
      metadata_(std::move(other.metadata_)) {
  // Empty.
}

safetensors_file&
safetensors_file::operator=(safetensors_file&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    base_ = std::exchange(other.base_, nullptr);
    size_ = std::exchange(other.size_, 0);
    tensors_ = std::move(other.tensors_);
    by_name_ = std::move(other.by_name_);
    metadata_ = std::move(other.metadata_);
  }
  return *this;
}

safetensors_file::~safetensors_file() {
  release();
}

void safetensors_file::release() noexcept {
  if (base_ != nullptr) {
    ::munmap(const_cast<uint8_t*>(base_), size_);
  }
  base_ = nullptr;
  size_ = 0;
  tensors_.clear();
  by_name_.clear();
}

const tensor_view*
safetensors_file::find(std::string_view name) const noexcept {
  auto it = std::lower_bound(
      by_name_.begin(), by_name_.end(), name,
      [this](uint32_t i, std::string_view n) { return tensors_[i].name < n; });
  if (it == by_name_.end() || tensors_[*it].name != name) {
    return nullptr;
  }
  return &tensors_[*it];
}

caf::expected<safetensors_file>
safetensors_file::open(const std::string& path,
                       const safetensors_limits& limits) {
  safetensors_file result;
  result.path_ = path;
  auto m = map_file(path);
  if (!m) {
    return m.error();
  }
  result.base_ = m->base;
  result.size_ = m->size;
  auto header_len = header_length(path, *m, limits);
  if (!header_len) {
    return header_len.error();
  }
  uint64_t data_bytes = m->size - 8 - *header_len;
  const uint8_t* data = m->base + 8 + *header_len;
  if (data_bytes > 0) {
    prefault(*m);
  }
  std::vector<entry> entries;
  header_parser parser{
      std::string_view{reinterpret_cast<const char*>(m->base + 8), *header_len},
      limits, data_bytes};
  if (!parser.run(entries, result.metadata_)) {
    return invalid(path, parser.error());
  }
  std::sort(entries.begin(), entries.end(), [](const entry& a, const entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  auto by_name = name_order(path, entries);
  if (!by_name) {
    return by_name.error();
  }
  result.by_name_ = std::move(*by_name);
  if (auto err = check_tiling(path, entries, data_bytes)) {
    return err;
  }
  result.tensors_.reserve(entries.size());
  for (auto& e : entries) {
    result.tensors_.push_back(tensor_view{std::move(e.name), e.type,
                                          std::move(e.shape), data + e.begin,
                                          e.end - e.begin});
  }
  return result;
}

// -- conversion ---------------------------------------------------------------

caf::expected<std::vector<float>> to_f32(const tensor_view& t) {
  switch (t.type) {
  case dtype::f32:
  case dtype::f16:
  case dtype::bf16:
  case dtype::f64:
    break;
  default:
    return make_error(errc::invalid_argument,
                      "tensor '" + quote(t.name) +
                          "': dtype: " + std::string{to_string(t.type)} +
                          " is not a float type");
  }
  size_t width = dtype_size(t.type);
  if (t.bytes % width != 0 || (t.bytes > 0 && t.data == nullptr)) {
    return make_error(errc::invalid_argument,
                      "tensor '" + quote(t.name) +
                          "': " + std::to_string(t.bytes) +
                          " bytes is not a whole number of elements");
  }
  size_t n = t.bytes / width;
  std::vector<float> out(n);
  const uint8_t* p = t.data;
  // memcpy loads: the data has no alignment guarantee.
  switch (t.type) {
  case dtype::f32:
    if (n > 0) {
      std::memcpy(out.data(), p, n * sizeof(float));
    }
    break;
  case dtype::f16:
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      out[i] = f16_to_f32(h);
    }
    break;
  case dtype::bf16:
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      out[i] = bf16_to_f32(h);
    }
    break;
  case dtype::f64:
    for (size_t i = 0; i < n; ++i) {
      double d;
      std::memcpy(&d, p + 8 * i, 8);
      out[i] = static_cast<float>(d);
    }
    break;
  default:
    break;
  }
  return out;
}

// -- writer -------------------------------------------------------------------

std::string_view safetensors_dtype_name(dtype t) noexcept {
  switch (t) {
  case dtype::f32:
    return "F32";
  case dtype::f16:
    return "F16";
  case dtype::bf16:
    return "BF16";
  case dtype::f64:
    return "F64";
  case dtype::i8:
    return "I8";
  case dtype::i16:
    return "I16";
  case dtype::i32:
    return "I32";
  case dtype::i64:
    return "I64";
  case dtype::u8:
    return "U8";
  case dtype::boolean:
    return "BOOL";
  }
  return "?";
}

namespace {

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  out += '"';
}

bool write_all(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    ssize_t k = ::write(fd, p, n);
    if (k < 0) {
      if (errno == EINTR) {
        continue;
      }
      return false;
    }
    p += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

using named_tensor = std::pair<std::string, tensor>;

// The tensors in name order, each with the bytes its shape and dtype need,
// no name twice and none reserved.
caf::expected<std::vector<const named_tensor*>>
writing_order(const std::string& path,
              const std::vector<named_tensor>& tensors) {
  std::vector<const named_tensor*> order;
  order.reserve(tensors.size());
  for (const auto& t : tensors) {
    const auto& [name, x] = t;
    if (name == "__metadata__") {
      return invalid(path, "tensor '__metadata__': name is reserved");
    }
    auto count = x.element_count();
    uint64_t want = 0;
    if (!count || !checked_mul(*count, dtype_size(x.type), want)) {
      return invalid(path, "tensor '" + quote(name) + "': shape: overflows");
    }
    if (want != x.data.size()) {
      return invalid(path, "tensor '" + quote(name) +
                               "': data: " + std::to_string(x.data.size()) +
                               " bytes, shape and dtype need " +
                               std::to_string(want));
    }
    order.push_back(&t);
  }
  std::sort(order.begin(), order.end(),
            [](auto* a, auto* b) { return a->first < b->first; });
  for (size_t i = 1; i < order.size(); ++i) {
    if (order[i]->first == order[i - 1]->first) {
      return invalid(path,
                     "tensor '" + quote(order[i]->first) + "': duplicate name");
    }
  }
  return order;
}

void append_metadata(std::string& header,
                     const std::map<std::string, std::string>& metadata) {
  header += "\"__metadata__\":{";
  bool first = true;
  for (const auto& [k, v] : metadata) {
    if (!first) {
      header += ',';
    }
    first = false;
    append_json_string(header, k);
    header += ':';
    append_json_string(header, v);
  }
  header += '}';
}

// `name:{"dtype":...,"shape":[...],"data_offsets":[offset, offset+bytes]}`
void append_entry(std::string& header, const named_tensor& t,
                  uint64_t& offset) {
  const auto& [name, x] = t;
  append_json_string(header, name);
  header += ":{\"dtype\":\"";
  header += safetensors_dtype_name(x.type);
  header += "\",\"shape\":[";
  for (size_t i = 0; i < x.shape.size(); ++i) {
    if (i > 0) {
      header += ',';
    }
    header += std::to_string(x.shape[i]);
  }
  header += "],\"data_offsets\":[";
  header += std::to_string(offset);
  header += ',';
  offset += x.data.size();
  header += std::to_string(offset);
  header += "]}";
}

// The JSON header, padded with spaces to keep the data region 8-byte
// aligned relative to the file start.
std::string header_json(const std::vector<const named_tensor*>& order,
                        const std::map<std::string, std::string>& metadata) {
  std::string header = "{";
  if (!metadata.empty()) {
    append_metadata(header, metadata);
  }
  uint64_t offset = 0;
  for (auto* t : order) {
    if (header.size() > 1) {
      header += ',';
    }
    append_entry(header, *t, offset);
  }
  header += '}';
  while (header.size() % 8 != 0) {
    header += ' ';
  }
  return header;
}

caf::error write_file(const std::string& path, const std::string& header,
                      const std::vector<const named_tensor*>& order) {
  uint8_t prefix[8];
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) {
    prefix[i] = static_cast<uint8_t>(n >> (8 * i));
  }
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return from_errno(path, "open", errno);
  }
  bool ok = write_all(fd, prefix, 8) &&
            write_all(fd, reinterpret_cast<const uint8_t*>(header.data()),
                      header.size());
  for (auto* t : order) {
    ok = ok && write_all(fd, t->second.data.data(), t->second.data.size());
  }
  int err = errno;
  if (::close(fd) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    return from_errno(path, "write", err);
  }
  return caf::none;
}

} // namespace

caf::error
write_safetensors(const std::string& path,
                  const std::vector<std::pair<std::string, tensor>>& tensors,
                  const std::map<std::string, std::string>& metadata) {
  auto order = writing_order(path, tensors);
  if (!order) {
    return order.error();
  }
  return write_file(path, header_json(*order, metadata), *order);
}

} // namespace shoal
