// safetensors tests: write -> open round trips for every dtype, exact
// half-precision conversion, zero-copy mapping, and for each class of
// malformed file an invalid_argument error whose reason names the file and
// the field, without a crash (run these under ASan/UBSan too).
#include "gpu/model/safetensors.hpp"

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <unistd.h>

#include "net/wire/error.hpp"

using namespace shoal;

namespace {

class safetensors_test : public ::testing::Test {
protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "shoal_st_XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    ASSERT_NE(::mkdtemp(buf.data()), nullptr);
    dir_ = buf.data();
  }

  void TearDown() override {
    std::string cmd = "rm -rf '" + dir_ + "'";
    [[maybe_unused]] int rc = std::system(cmd.c_str());
  }

  std::string file(const std::string& name) const { return dir_ + "/" + name; }

  static void write_bytes(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    ASSERT_TRUE(out.good());
  }

  static std::string le64(uint64_t n) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) {
      s[i] = static_cast<char>(n >> (8 * i));
    }
    return s;
  }

  // A file with the given header text and `data_bytes` zero bytes of data.
  std::string raw(const std::string& name, const std::string& header,
                  size_t data_bytes) {
    auto path = file(name);
    write_bytes(path,
                le64(header.size()) + header + std::string(data_bytes, '\0'));
    return path;
  }

  // Opens `path` expecting an invalid_argument error whose reason starts
  // with the path and contains every needle.
  static void expect_invalid(const std::string& path,
                             std::vector<std::string> needles,
                             const safetensors_limits& limits = {}) {
    auto f = safetensors_file::open(path, limits);
    ASSERT_FALSE(f) << "opened " << path;
    auto reason = reason_of(f.error());
    EXPECT_EQ(to_status(f.error()), status::invalid_argument) << reason;
    EXPECT_EQ(reason.rfind(path + ": ", 0), 0u) << reason;
    for (const auto& n : needles) {
      EXPECT_NE(reason.find(n), std::string::npos)
          << "'" << n << "' not in: " << reason;
    }
  }

  // The reason of a failed open of a header, for ad-hoc checks.
  std::string header_error(const std::string& header, size_t data_bytes,
                           const safetensors_limits& limits = {}) {
    auto path = raw("h.safetensors", header, data_bytes);
    auto f = safetensors_file::open(path, limits);
    if (f) {
      return "<opened>";
    }
    return reason_of(f.error());
  }

  static tensor make(dtype t, std::vector<uint64_t> shape, uint8_t seed) {
    tensor x;
    x.type = t;
    x.shape = std::move(shape);
    auto n = *x.element_count() * dtype_size(t);
    x.data.resize(n);
    for (size_t i = 0; i < n; ++i) {
      x.data[i] = static_cast<uint8_t>(seed + i * 7);
    }
    return x;
  }

  template <class T>
  static tensor of(dtype t, std::vector<uint64_t> shape,
                   const std::vector<T>& values) {
    tensor x;
    x.type = t;
    x.shape = std::move(shape);
    x.data.resize(values.size() * sizeof(T));
    std::memcpy(x.data.data(), values.data(), x.data.size());
    return x;
  }

  // A small valid file: two tensors and metadata.
  std::string small_valid(const std::string& name) {
    auto path = file(name);
    std::vector<std::pair<std::string, tensor>> ts;
    ts.emplace_back("w", make(dtype::f32, {2, 2}, 1));
    ts.emplace_back("b", make(dtype::f16, {3}, 2));
    EXPECT_FALSE(write_safetensors(path, ts, {{"format", "pt"}}));
    return path;
  }

  static void expect_consistent(const safetensors_file& f) {
    const uint8_t* lo = f.mapping();
    const uint8_t* hi = lo + f.file_bytes();
    for (const auto& t : f.tensors()) {
      EXPECT_GE(t.data, lo);
      EXPECT_LE(t.data + t.bytes, hi);
    }
  }

  std::string dir_;
};

const std::vector<dtype> all_dtypes = {
    dtype::f32, dtype::f16, dtype::bf16, dtype::f64, dtype::i8,
    dtype::i16, dtype::i32, dtype::i64,  dtype::u8,  dtype::boolean,
};

} // namespace

// -- round trips --------------------------------------------------------------

TEST_F(safetensors_test, round_trip_every_dtype_and_metadata) {
  std::vector<std::pair<std::string, tensor>> ts;
  uint8_t seed = 0;
  for (auto t : all_dtypes) {
    ts.emplace_back(std::string{"t_"} + std::string{to_string(t)},
                    make(t, {2, 3}, seed++));
  }
  ts.emplace_back("scalar", make(dtype::f32, {}, 9));
  ts.emplace_back("empty", make(dtype::i64, {0, 4}, 0));
  std::map<std::string, std::string> meta{
      {"format", "pt"}, {"quote\"back\\slash", "line\nbreak\t\x01"}};
  auto path = file("all.safetensors");
  ASSERT_FALSE(write_safetensors(path, ts, meta));

  auto f = safetensors_file::open(path);
  ASSERT_TRUE(f) << reason_of(f.error());
  EXPECT_EQ(f->path(), path);
  EXPECT_EQ(f->metadata(), meta);
  ASSERT_EQ(f->tensors().size(), ts.size());
  for (const auto& [name, x] : ts) {
    auto* v = f->find(name);
    ASSERT_NE(v, nullptr) << name;
    EXPECT_EQ(v->name, name);
    EXPECT_EQ(v->type, x.type) << name;
    EXPECT_EQ(v->shape, x.shape) << name;
    ASSERT_EQ(v->bytes, x.data.size()) << name;
    if (v->bytes > 0) {
      EXPECT_EQ(std::memcmp(v->data, x.data.data(), v->bytes), 0) << name;
    }
  }
  // File order is ascending offset, which the writer makes name order.
  for (size_t i = 1; i < f->tensors().size(); ++i) {
    EXPECT_LE(f->tensors()[i - 1].data, f->tensors()[i].data);
  }
  expect_consistent(*f);
}

TEST_F(safetensors_test, writer_pads_header_to_eight_bytes) {
  auto path = small_valid("pad.safetensors");
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)),
                    std::istreambuf_iterator<char>());
  ASSERT_GE(bytes.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) {
    n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  }
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes[8], '{');
  auto f = safetensors_file::open(path);
  ASSERT_TRUE(f) << reason_of(f.error());
  for (const auto& t : f->tensors()) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(f->tensors().front().data) % 8, 0u)
        << t.name;
  }
}

TEST_F(safetensors_test, writer_rejects_bad_input) {
  std::vector<std::pair<std::string, tensor>> ts;
  auto bad = make(dtype::f32, {2}, 0);
  bad.data.pop_back();
  ts.emplace_back("x", bad);
  auto err = write_safetensors(file("bad.safetensors"), ts);
  ASSERT_TRUE(err);
  EXPECT_NE(reason_of(err).find("tensor 'x': data"), std::string::npos);
  ts.clear();
  ts.emplace_back("x", make(dtype::f32, {2}, 0));
  ts.emplace_back("x", make(dtype::f32, {2}, 0));
  err = write_safetensors(file("dup.safetensors"), ts);
  ASSERT_TRUE(err);
  EXPECT_NE(reason_of(err).find("duplicate"), std::string::npos);
}

TEST_F(safetensors_test, find) {
  auto f = safetensors_file::open(small_valid("find.safetensors"));
  ASSERT_TRUE(f) << reason_of(f.error());
  ASSERT_NE(f->find("w"), nullptr);
  EXPECT_EQ(f->find("w")->shape, (std::vector<uint64_t>{2, 2}));
  ASSERT_NE(f->find("b"), nullptr);
  EXPECT_EQ(f->find("b")->type, dtype::f16);
  EXPECT_EQ(f->find("a"), nullptr);
  EXPECT_EQ(f->find(""), nullptr);
  EXPECT_EQ(f->find("ww"), nullptr);
  EXPECT_EQ(f->find("__metadata__"), nullptr);
}

TEST_F(safetensors_test, data_points_into_the_mapping) {
  auto path = small_valid("map.safetensors");
  auto f = safetensors_file::open(path);
  ASSERT_TRUE(f) << reason_of(f.error());
  const uint8_t* base = f->mapping();
  ASSERT_NE(base, nullptr);
  for (const auto& t : f->tensors()) {
    EXPECT_GE(t.data, base);
    EXPECT_LE(t.data + t.bytes, base + f->file_bytes());
  }
  // The tensors live in a file-backed mapping of this very file, not in a
  // heap copy.
  auto addr = reinterpret_cast<uintptr_t>(f->find("w")->data);
  std::ifstream maps("/proc/self/maps");
  std::string line;
  bool found = false;
  while (std::getline(maps, line)) {
    uintptr_t lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi) != 2) {
      continue;
    }
    if (addr >= lo && addr < hi) {
      found = true;
      EXPECT_NE(line.find(path), std::string::npos) << line;
      break;
    }
  }
  EXPECT_TRUE(found);
  // Moving the file keeps the views valid: the mapping does not move.
  const uint8_t* before = f->find("w")->data;
  safetensors_file moved = std::move(*f);
  EXPECT_EQ(moved.find("w")->data, before);
  EXPECT_EQ(moved.mapping(), base);
  EXPECT_EQ(f->mapping(), nullptr);
  EXPECT_TRUE(f->tensors().empty());
}

// -- conversion ---------------------------------------------------------------

TEST_F(safetensors_test, f16_to_f32_exact) {
  std::vector<uint16_t> bits = {
      0x3C00, // 1
      0xC000, // -2
      0x0001, // 2^-24, smallest subnormal
      0x03FF, // largest subnormal
      0x0400, // 2^-14, smallest normal
      0x7BFF, // 65504, largest finite
      0x3555, // 0.333251953125
      0x7C00, // +inf
      0xFC00, // -inf
      0x8000, // -0
      0x0000, // +0
      0x7E00, // nan
  };
  std::vector<float> want = {
      1.0f,
      -2.0f,
      0x1p-24f,
      1023 * 0x1p-24f,
      0x1p-14f,
      65504.0f,
      0.333251953125f,
      INFINITY,
      -INFINITY,
      -0.0f,
      0.0f,
      NAN,
  };
  std::vector<std::pair<std::string, tensor>> ts;
  ts.emplace_back("h", of(dtype::f16, {bits.size()}, bits));
  auto path = file("f16.safetensors");
  ASSERT_FALSE(write_safetensors(path, ts));
  auto f = safetensors_file::open(path);
  ASSERT_TRUE(f) << reason_of(f.error());
  auto got = to_f32(*f->find("h"));
  ASSERT_TRUE(got) << reason_of(got.error());
  ASSERT_EQ(got->size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(want[i])) {
      EXPECT_TRUE(std::isnan((*got)[i])) << i;
    } else {
      EXPECT_EQ((*got)[i], want[i]) << i;
      EXPECT_EQ(std::signbit((*got)[i]), std::signbit(want[i])) << i;
    }
  }
}

TEST_F(safetensors_test, bf16_f32_f64_to_f32) {
  std::vector<uint16_t> bf = {0x3F80, 0xC040, 0x7F80, 0xFF80,
                              0x0001, 0x4049, 0x7FC0};
  std::vector<float> bf_want = {1.0f,      -3.0f,     INFINITY, -INFINITY,
                                0x1p-133f, 3.140625f, NAN};
  std::vector<float> f32 = {1.5f, -0.0f, 0x1p-149f, 3.4e38f};
  std::vector<double> f64 = {0.1, -2.5, 1e300, 0x1p-30};
  std::vector<std::pair<std::string, tensor>> ts;
  ts.emplace_back("bf", of(dtype::bf16, {bf.size()}, bf));
  ts.emplace_back("f", of(dtype::f32, {2, 2}, f32));
  ts.emplace_back("d", of(dtype::f64, {4}, f64));
  ts.emplace_back("i", of(dtype::i32, {1}, std::vector<int32_t>{7}));
  auto path = file("bf.safetensors");
  ASSERT_FALSE(write_safetensors(path, ts));
  auto f = safetensors_file::open(path);
  ASSERT_TRUE(f) << reason_of(f.error());

  auto got = to_f32(*f->find("bf"));
  ASSERT_TRUE(got);
  for (size_t i = 0; i < bf_want.size(); ++i) {
    if (std::isnan(bf_want[i])) {
      EXPECT_TRUE(std::isnan((*got)[i]));
    } else {
      EXPECT_EQ((*got)[i], bf_want[i]) << i;
    }
  }
  got = to_f32(*f->find("f"));
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, f32);
  got = to_f32(*f->find("d"));
  ASSERT_TRUE(got);
  for (size_t i = 0; i < f64.size(); ++i) {
    EXPECT_EQ((*got)[i], static_cast<float>(f64[i])) << i;
  }
  got = to_f32(*f->find("i"));
  ASSERT_FALSE(got);
  EXPECT_NE(reason_of(got.error()).find("tensor 'i': dtype"),
            std::string::npos);
}

// -- malformed files ----------------------------------------------------------

TEST_F(safetensors_test, missing_and_non_regular_files) {
  auto f = safetensors_file::open(file("nope.safetensors"));
  ASSERT_FALSE(f);
  EXPECT_EQ(to_status(f.error()), status::not_found);
  EXPECT_NE(reason_of(f.error()).find("nope.safetensors"), std::string::npos);
  expect_invalid(dir_, {"not a regular file"});
}

TEST_F(safetensors_test, empty_and_short_files) {
  auto path = file("empty.safetensors");
  write_bytes(path, "");
  expect_invalid(path, {"header", "truncated"});
  write_bytes(path, "\x02\0\0\0\0");
  expect_invalid(path, {"header", "truncated"});
}

TEST_F(safetensors_test, header_length_beyond_file) {
  auto path = file("lie.safetensors");
  write_bytes(path, le64(0xFFFFFFFFFFFFFFFFull) + "{}");
  expect_invalid(path, {"header", "18446744073709551615", "exceeds"});
  write_bytes(path, le64(3) + "{}");
  expect_invalid(path, {"header", "truncated"});
}

TEST_F(safetensors_test, header_over_the_limit) {
  auto path = small_valid("limit.safetensors");
  safetensors_limits lim;
  lim.max_header_bytes = 16;
  expect_invalid(path, {"header", "limit of 16"}, lim);
  EXPECT_TRUE(safetensors_file::open(path));
}

TEST_F(safetensors_test, not_json_or_not_an_object) {
  expect_invalid(raw("a", "hello   ", 0), {"header", "not a JSON object"});
  expect_invalid(raw("b", "[1,2]", 0), {"header", "not a JSON object"});
  expect_invalid(raw("c", " {}", 0), {"header", "not a JSON object"});
  expect_invalid(raw("d", "", 0), {"header", "not a JSON object"});
  expect_invalid(raw("e", "{", 0), {"header", "unexpected end"});
  expect_invalid(raw("f", "{\"a\" 1}", 0), {"header", "expected ':'"});
  expect_invalid(raw("g", "{\"a\":1}", 0),
                 {"tensor 'a'", "expected an object"});
  expect_invalid(raw("h", "{} x", 0), {"header", "trailing"});
  expect_invalid(raw("i", "{,}", 0), {"header", "expected a string"});
  expect_invalid(raw("j", "{\"__metadata__\":{}}x", 0), {"header", "trailing"});
  expect_invalid(raw("k", "{\"a\\q\":{}}", 0), {"header", "bad escape"});
  expect_invalid(raw("l", "{\"\\ud800\":{}}", 0), {"surrogate"});
  expect_invalid(raw("m", "{\"\xff\":{}}", 0), {"header", "UTF-8"});
  expect_invalid(raw("n", "{\"\xc0\xaf\":{}}", 0), {"header", "UTF-8"});
  expect_invalid(raw("o", "{\"a\nb\":{}}", 0), {"control character"});
  expect_invalid(raw("p",
                     "{\"a\":{\"dtype\":\"F32\",\"shape\":[],"
                     "\"data_offsets\":[0,4]}",
                     4),
                 {"header", "unexpected end"});
  // An empty object with space padding is a valid, empty file.
  auto f = safetensors_file::open(raw("q", "{}      ", 0));
  ASSERT_TRUE(f) << reason_of(f.error());
  EXPECT_TRUE(f->tensors().empty());
}

TEST_F(safetensors_test, missing_fields) {
  expect_invalid(raw("a", R"({"x":{"shape":[1],"data_offsets":[0,4]}})", 4),
                 {"tensor 'x': dtype: missing"});
  expect_invalid(raw("b", R"({"x":{"dtype":"F32","data_offsets":[0,4]}})", 4),
                 {"tensor 'x': shape: missing"});
  expect_invalid(raw("c", R"({"x":{"dtype":"F32","shape":[1]}})", 4),
                 {"tensor 'x': data_offsets: missing"});
  expect_invalid(
      raw("d", R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4),
      {"tensor 'x': data_offsets", "expected [begin, end]"});
  expect_invalid(
      raw("e", R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})",
          4),
      {"tensor 'x': data_offsets", "more than 2"});
}

TEST_F(safetensors_test, offsets_beyond_the_file) {
  expect_invalid(
      raw("a", R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8),
      {"tensor 'x': data_offsets", "beyond the data region of 8 bytes"});
  expect_invalid(raw("b",
                     R"({"x":{"dtype":"U8","shape":[1],)"
                     R"("data_offsets":[18446744073709551615,)"
                     R"(18446744073709551615]}})",
                     1),
                 {"tensor 'x': data_offsets"});
  expect_invalid(raw("c",
                     R"({"x":{"dtype":"U8","shape":[1],)"
                     R"("data_offsets":[0,18446744073709551616]}})",
                     1),
                 {"tensor 'x': data_offsets[1]", "64 bits"});
}

TEST_F(safetensors_test, end_before_begin) {
  expect_invalid(
      raw("a", R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", 8),
      {"tensor 'x': data_offsets", "end 4 < begin 8"});
}

TEST_F(safetensors_test, byte_count_differs_from_shape) {
  expect_invalid(
      raw("a", R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
      {"tensor 'x': data_offsets", "holds 8 bytes", "need 12"});
  expect_invalid(
      raw("b", R"({"x":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,4]}})",
          4),
      {"tensor 'x': data_offsets", "need 8"});
}

TEST_F(safetensors_test, overlap_gap_and_uncovered_tail) {
  expect_invalid(
      raw("overlap",
          R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
          R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
          12),
      {"tensor 'b': data_offsets", "overlaps tensor 'a'"});
  expect_invalid(raw("same",
                     R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                     R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                     4),
                 {"data_offsets", "overlaps"});
  expect_invalid(
      raw("gap",
          R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
          R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
          12),
      {"tensor 'b': data_offsets", "gap of 4 bytes"});
  expect_invalid(
      raw("lead", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
          8),
      {"tensor 'a': data_offsets", "gap of 4 bytes"});
  expect_invalid(
      raw("tail", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
          8),
      {"header: data region", "4 bytes after the last tensor"});
  // Zero-size tensors may sit anywhere in the tiling.
  auto f = safetensors_file::open(
      raw("zero",
          R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
          R"("z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
          R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
          8));
  ASSERT_TRUE(f) << reason_of(f.error());
  EXPECT_EQ(f->tensors().size(), 3u);
}

TEST_F(safetensors_test, unknown_dtype) {
  for (std::string d : {"F8_E4M3", "Q4", "U16", "f32", ""}) {
    expect_invalid(raw("d",
                       R"({"x":{"dtype":")" + d +
                           R"(","shape":[1],"data_offsets":[0,1]}})",
                       1),
                   {"tensor 'x': dtype", "unsupported dtype '" + d + "'"});
  }
  expect_invalid(
      raw("n", R"({"x":{"dtype":4,"shape":[1],"data_offsets":[0,1]}})", 1),
      {"tensor 'x': dtype", "expected a string"});
}

TEST_F(safetensors_test, bad_shape_values) {
  auto hdr = [](const std::string& shape) {
    return R"({"x":{"dtype":"U8","shape":)" + shape +
           R"(,"data_offsets":[0,1]}})";
  };
  expect_invalid(raw("neg", hdr("[-1]"), 1),
                 {"tensor 'x': shape[0]", "negative"});
  expect_invalid(raw("flt", hdr("[1, 2.5]"), 1),
                 {"tensor 'x': shape[1]", "not an integer"});
  expect_invalid(raw("exp", hdr("[1e3]"), 1),
                 {"tensor 'x': shape[0]", "not an integer"});
  expect_invalid(raw("str", hdr("[\"1\"]"), 1),
                 {"tensor 'x': shape[0]", "expected a non-negative integer"});
  expect_invalid(raw("lead", hdr("[01]"), 1),
                 {"tensor 'x': shape[0]", "leading zero"});
  expect_invalid(raw("obj", hdr("{}"), 1),
                 {"tensor 'x': shape", "expected an array"});
  expect_invalid(raw("rank", hdr("[1,1,1,1,1,1,1,1,1]"), 1),
                 {"tensor 'x': shape", "more than 8 elements"});
  safetensors_limits lim;
  lim.max_rank = 2;
  expect_invalid(raw("rank2", hdr("[1,1,1]"), 1),
                 {"tensor 'x': shape", "more than 2 elements"}, lim);
}

TEST_F(safetensors_test, shape_product_overflow) {
  // 2^32 * 2^32 wraps to 0, which would match [0,0] without checked math.
  expect_invalid(raw("a",
                     R"({"x":{"dtype":"U8","shape":[4294967296,)"
                     R"(4294967296],"data_offsets":[0,0]}})",
                     0),
                 {"tensor 'x': shape", "overflows"});
  // 2^62 elements of 4 bytes wraps to 0 as well.
  expect_invalid(raw("b",
                     R"({"x":{"dtype":"F32","shape":[4611686018427387904],)"
                     R"("data_offsets":[0,0]}})",
                     0),
                 {"tensor 'x': shape", "overflows"});
}

TEST_F(safetensors_test, duplicate_keys) {
  expect_invalid(raw("name",
                     R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                     R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                     2),
                 {"header", "duplicate tensor name 'a'"});
  expect_invalid(raw("field",
                     R"({"a":{"dtype":"U8","dtype":"U8","shape":[1],)"
                     R"("data_offsets":[0,1]}})",
                     1),
                 {"tensor 'a': dtype", "duplicate key"});
  expect_invalid(raw("unknown",
                     R"({"a":{"x":1,"x":2,"dtype":"U8",)"
                     R"("shape":[1],"data_offsets":[0,1]}})",
                     1),
                 {"tensor 'a': x", "duplicate key"});
  expect_invalid(raw("meta", R"({"__metadata__":{"k":"1","k":"2"}})", 0),
                 {"header: __metadata__: 'k'", "duplicate key"});
  expect_invalid(raw("meta2", R"({"__metadata__":{},"__metadata__":{}})", 0),
                 {"header", "duplicate key '__metadata__'"});
}

TEST_F(safetensors_test, metadata_must_map_strings_to_strings) {
  expect_invalid(raw("a", R"({"__metadata__":{"k":1}})", 0),
                 {"header: __metadata__: 'k'", "expected a string"});
  expect_invalid(raw("b", R"({"__metadata__":[]})", 0),
                 {"header: __metadata__", "expected an object"});
}

TEST_F(safetensors_test, depth_bomb) {
  std::string deep(100000, '[');
  expect_invalid(raw("top", "{\"a\":{\"x\":" + deep, 0),
                 {"tensor 'a': x", "nested deeper than 8"});
  expect_invalid(raw("arr", deep, 0), {"header", "not a JSON object"});
  expect_invalid(raw("dtype", "{\"a\":{\"dtype\":" + deep, 0),
                 {"tensor 'a': dtype", "expected a string"});
  expect_invalid(raw("shape", "{\"a\":{\"shape\":" + deep, 0),
                 {"tensor 'a': shape[0]"});
  std::string objs;
  for (int i = 0; i < 100000; ++i) {
    objs += "{\"k\":";
  }
  expect_invalid(raw("obj", "{\"a\":{\"x\":" + objs, 0),
                 {"tensor 'a': x", "nested deeper than 8"});
}

TEST_F(safetensors_test, unknown_fields_are_skipped_like_hugging_face) {
  auto f = safetensors_file::open(
      raw("a",
          R"({"x":{"note":{"a":[1,-2.5e3,true,null,"s"]},"dtype":"U8",)"
          R"("shape":[1],"data_offsets":[0,1]}})",
          1));
  ASSERT_TRUE(f) << reason_of(f.error());
  EXPECT_NE(f->find("x"), nullptr);
  expect_invalid(raw("b",
                     R"({"x":{"note":01,"dtype":"U8",)"
                     R"("shape":[1],"data_offsets":[0,1]}})",
                     1),
                 {"tensor 'x': note", "leading zero"});
  expect_invalid(raw("c",
                     R"({"x":{"note":tru,"dtype":"U8",)"
                     R"("shape":[1],"data_offsets":[0,1]}})",
                     1),
                 {"tensor 'x': note", "expected a JSON value"});
}

TEST_F(safetensors_test, escaped_names_decode) {
  auto f = safetensors_file::open(
      raw("a",
          R"({"\u00e9\ud83d\ude00\n\"\/":{"dtype":"U8","shape":[1],)"
          R"("data_offsets":[0,1]}})",
          1));
  ASSERT_TRUE(f) << reason_of(f.error());
  EXPECT_NE(f->find("\xc3\xa9\xf0\x9f\x98\x80\n\"/"), nullptr);
}

TEST_F(safetensors_test, too_many_tensors) {
  std::vector<std::pair<std::string, tensor>> ts;
  for (int i = 0; i < 3; ++i) {
    ts.emplace_back("t" + std::to_string(i), make(dtype::u8, {1}, 0));
  }
  auto path = file("many.safetensors");
  ASSERT_FALSE(write_safetensors(path, ts));
  safetensors_limits lim;
  lim.max_tensors = 2;
  expect_invalid(path, {"header", "more than 2 tensors"}, lim);
}

TEST_F(safetensors_test, hostile_names_are_quoted_and_cut_in_errors) {
  std::string name(5000, 'n');
  name[0] = '\x1b';
  auto reason =
      header_error("{\"\\u001b" + name.substr(1) + "\":{\"dtype\":\"Q4\"}}", 0);
  EXPECT_NE(reason.find("\\x1b"), std::string::npos) << reason;
  EXPECT_LT(reason.size(), 400u) << reason;
}

TEST_F(safetensors_test, every_prefix_fails_cleanly) {
  auto path = small_valid("full.safetensors");
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)),
                    std::istreambuf_iterator<char>());
  auto cut = file("cut.safetensors");
  for (size_t n = 0; n < bytes.size(); ++n) {
    write_bytes(cut, bytes.substr(0, n));
    auto f = safetensors_file::open(cut);
    if (f) {
      expect_consistent(*f);
    } else {
      EXPECT_EQ(to_status(f.error()), status::invalid_argument) << n;
      EXPECT_NE(reason_of(f.error()).find(cut), std::string::npos) << n;
    }
  }
  write_bytes(cut, bytes);
  EXPECT_TRUE(safetensors_file::open(cut));
}

TEST_F(safetensors_test, random_mutations_never_crash) {
  auto path = small_valid("seed.safetensors");
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)),
                    std::istreambuf_iterator<char>());
  std::mt19937 rng(42);
  auto mut = file("mut.safetensors");
  const char alphabet[] = "{}[]\":,-.e0123456789 \\uFBIT\x00\xff";
  size_t opened = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string b = bytes;
    int edits = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < edits; ++k) {
      size_t at = rng() % b.size();
      switch (rng() % 3) {
      case 0:
        b[at] = alphabet[rng() % (sizeof(alphabet) - 1)];
        break;
      case 1:
        b[at] = static_cast<char>(rng());
        break;
      default:
        b.erase(at, 1);
        break;
      }
    }
    write_bytes(mut, b);
    auto f = safetensors_file::open(mut);
    if (f) {
      ++opened;
      expect_consistent(*f);
      for (const auto& t : f->tensors()) {
        (void)to_f32(t);
      }
    } else {
      EXPECT_FALSE(reason_of(f.error()).empty());
    }
  }
  // Mutating data bytes (or whitespace) leaves a valid file.
  EXPECT_GT(opened, 0u);
}
