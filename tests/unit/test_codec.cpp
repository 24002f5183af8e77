// Codec tests: round trips of every field, and for each class of malformed
// frame an invalid_argument error whose reason names the key, without any
// large allocation on the way.
#include "net/wire/codec.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <msgpack.hpp>

#include "net/wire/error.hpp"

// Allocation tracking: msgpack's zone allocates with ::malloc, not operator
// new, so both are counted (tests/unit/alloc_tracker.hpp).
#define SHOAL_TRACK_OPERATOR_NEW 1
#include "tests/unit/alloc_tracker.hpp"

namespace {
constexpr size_t one_mib = 1u << 20;
} // namespace

using namespace shoal;

namespace {

// -- helpers -----------------------------------------------------------------

// Builds arbitrary (also malformed) msgpack for the hostile cases.
struct mp {
  std::string buf;
  struct writer {
    std::string& s;
    void write(const char* p, size_t n) { s.append(p, n); }
  };
  writer w{buf};
  msgpack::packer<writer> pk{w};

  mp() = default;
  mp(const mp&) = delete;

  mp& map(uint32_t n) {
    pk.pack_map(n);
    return *this;
  }
  mp& arr(uint32_t n) {
    pk.pack_array(n);
    return *this;
  }
  mp& str(std::string_view s) {
    pk.pack_str(static_cast<uint32_t>(s.size()));
    pk.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
    return *this;
  }
  mp& u(uint64_t x) {
    pk.pack_uint64(x);
    return *this;
  }
  mp& i(int64_t x) {
    pk.pack_int64(x);
    return *this;
  }
  mp& nil() {
    pk.pack_nil();
    return *this;
  }
  mp& f64(double x) {
    pk.pack_double(x);
    return *this;
  }
  mp& bin(size_t n, char fill = 0) {
    std::string b(n, fill);
    pk.pack_bin(static_cast<uint32_t>(n));
    pk.pack_bin_body(b.data(), static_cast<uint32_t>(n));
    return *this;
  }
  mp& raw(std::initializer_list<uint8_t> bytes) {
    for (auto b : bytes) {
      buf += static_cast<char>(b);
    }
    return *this;
  }
  mp& raw(const std::string& bytes) {
    buf += bytes;
    return *this;
  }
  // A valid f32 tensor map with `n` elements.
  mp& tensor(std::string_view name, uint64_t n) {
    map(4).str("name").str(name).str("dtype").str("f32");
    str("shape").arr(1).u(n).str("data").bin(n * 4);
    return *this;
  }
};

struct decoded_request {
  caf::error err;
  request req;
  std::string reason;
  size_t peak = 0;
};

decoded_request decode_req(const std::string& frame,
                           const codec_limits& lim = {}) {
  decoded_request d;
  d.peak = largest_alloc_during([&] {
    d.err = decode_request(reinterpret_cast<const uint8_t*>(frame.data()),
                           frame.size(), lim, d.req);
  });
  d.reason = reason_of(d.err);
  return d;
}

struct decoded_reply {
  caf::error err;
  reply rep;
  std::string reason;
  size_t peak = 0;
};

decoded_reply decode_rep(const std::string& frame,
                         const codec_limits& lim = {}) {
  decoded_reply d;
  d.peak = largest_alloc_during([&] {
    d.err = decode_reply(reinterpret_cast<const uint8_t*>(frame.data()),
                         frame.size(), lim, d.rep);
  });
  d.reason = reason_of(d.err);
  return d;
}

bool is_invalid(const caf::error& err) {
  return err && err.category() == caf::atom("shoal") &&
         err.code() == static_cast<uint8_t>(errc::invalid_argument);
}

// Asserts the frame is rejected as invalid_argument, with a reason holding
// every given fragment, and without any allocation of 1 MiB or more.
#define EXPECT_REJECTED(d, ...)                                                \
  do {                                                                         \
    EXPECT_TRUE(is_invalid((d).err)) << "reason: " << (d).reason;              \
    for (std::string_view frag : {__VA_ARGS__})                                \
      EXPECT_NE((d).reason.find(frag), std::string::npos)                      \
          << "reason '" << (d).reason << "' lacks '" << frag << "'";           \
    EXPECT_LT((d).peak, one_mib) << "reason: " << (d).reason;                  \
  } while (false)

std::vector<uint8_t> bytes_of(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) {
    v[i] = static_cast<uint8_t>(seed + i * 7);
  }
  return v;
}

tensor make_tensor(std::string name, dtype t, std::vector<uint64_t> shape,
                   uint8_t seed = 1) {
  tensor x;
  x.name = std::move(name);
  x.type = t;
  x.shape = std::move(shape);
  x.data = bytes_of(*x.element_count() * dtype_size(t), seed);
  return x;
}

std::vector<tensor> all_dtype_tensors() {
  const dtype all[] = {dtype::f32, dtype::f16,    dtype::bf16, dtype::f64,
                       dtype::i8,  dtype::i16,    dtype::i32,  dtype::i64,
                       dtype::u8,  dtype::boolean};
  std::vector<tensor> ts;
  uint8_t seed = 3;
  for (auto t : all) {
    ts.push_back(
        make_tensor("in_" + std::string{to_string(t)}, t, {2, 3}, seed++));
  }
  ts.push_back(make_tensor("scalar", dtype::f32, {}));
  ts.push_back(make_tensor("empty", dtype::i64, {0, 4}));
  return ts;
}

void expect_same(const request& a, const request& b) {
  EXPECT_EQ(a.v, b.v);
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.op, b.op);
  EXPECT_EQ(a.model, b.model);
  EXPECT_EQ(a.version, b.version);
  EXPECT_EQ(a.inputs, b.inputs);
  EXPECT_EQ(a.priority, b.priority);
  EXPECT_EQ(a.timeout_ms, b.timeout_ms);
  EXPECT_EQ(a.cache, b.cache);
  EXPECT_EQ(a.tenant, b.tenant);
  EXPECT_EQ(a.node, b.node);
}

request full_request(request_id id) {
  request r;
  r.id = std::move(id);
  r.op = op_kind::infer;
  r.model = "resnet-tiny";
  r.version = 3;
  r.inputs = all_dtype_tensors();
  r.priority = 0;
  r.timeout_ms = 2500;
  r.cache = cache_mode::refresh;
  r.tenant = "team-a";
  return r;
}

std::string encoded(const request& r) {
  std::string s;
  encode_request(r, s);
  return s;
}

std::string encoded(const reply& r) {
  std::string s;
  encode_reply(r, s);
  return s;
}

// A minimal valid infer request frame with one tensor of `n` f32 values.
std::string infer_frame(uint64_t id = 42, uint64_t n = 4) {
  request r;
  r.id = request_id::of(id);
  r.model = "echo";
  r.inputs.push_back(make_tensor("x", dtype::f32, {n}));
  return encoded(r);
}

} // namespace

// -- the allocation tracker itself -------------------------------------------

TEST(codec_alloc_tracker, sees_malloc_new_and_the_msgpack_zone) {
  auto big = largest_alloc_during([] {
    void* p = std::malloc(3 * one_mib);
    asm volatile("" : : "r"(p) : "memory"); // keep the pair from being elided
    std::free(p);
  });
  EXPECT_GE(big, 3 * one_mib);
  big = largest_alloc_during([] {
    auto p = new char[2 * one_mib];
    asm volatile("" : : "r"(p) : "memory");
    delete[] p;
  });
  EXPECT_GE(big, 2 * one_mib);
  // 4096 nils under an unknown key: the zone takes 4096 msgpack::objects
  // (~96 KiB) in one malloc, which the tracker must see.
  mp m;
  m.map(3).str("id").u(1).str("model").str("echo").str("pad").arr(4096);
  for (int i = 0; i < 4096; ++i) {
    m.nil();
  }
  auto d = decode_req(m.buf);
  ASSERT_FALSE(d.err) << d.reason;
  EXPECT_GE(d.peak, 4096 * sizeof(msgpack::object));
  EXPECT_LT(d.peak, one_mib);
}

// -- request round trips -----------------------------------------------------

TEST(codec_request, round_trip_all_fields_numeric_id) {
  auto in = full_request(request_id::of(UINT64_MAX));
  auto d = decode_req(encoded(in));
  ASSERT_FALSE(d.err) << d.reason;
  expect_same(in, d.req);
  EXPECT_EQ(d.req.inputs.size(), 12u);
}

TEST(codec_request, round_trip_all_fields_string_id) {
  auto in = full_request(request_id::of(std::string(128, 'k')));
  in.cache = cache_mode::bypass;
  in.priority = 9;
  auto d = decode_req(encoded(in));
  ASSERT_FALSE(d.err) << d.reason;
  expect_same(in, d.req);
}

TEST(codec_request, round_trip_every_op) {
  for (auto op :
       {op_kind::infer, op_kind::ping, op_kind::models, op_kind::status,
        op_kind::load, op_kind::unload, op_kind::drain, op_kind::reload}) {
    bool needs_model =
        op == op_kind::infer || op == op_kind::load || op == op_kind::unload;
    request in;
    in.id = request_id::of(std::string{to_string(op)});
    in.op = op;
    in.model = needs_model ? "model-a" : "";
    in.node = op == op_kind::drain ? "node-7" : "";
    auto d = decode_req(encoded(in));
    ASSERT_FALSE(d.err) << to_string(op) << ": " << d.reason;
    expect_same(in, d.req);
  }
}

TEST(codec_request, defaults_are_omitted_and_restored) {
  request in;
  in.id = request_id::of(1);
  in.op = op_kind::ping;
  auto frame = encoded(in);
  // {v:1, id:1, op:"ping"}: nothing else is written.
  const std::string expected = "\x83\xa1v\x01\xa2id\x01\xa2op\xa4ping";
  EXPECT_EQ(frame, expected);
  auto d = decode_req(frame);
  ASSERT_FALSE(d.err) << d.reason;
  expect_same(in, d.req);
  EXPECT_EQ(d.req.priority, 5);
  EXPECT_EQ(d.req.cache, cache_mode::use);
  EXPECT_FALSE(d.req.version);
  EXPECT_FALSE(d.req.timeout_ms);
}

TEST(codec_request, op_defaults_to_infer_and_unknown_keys_are_ignored) {
  mp m;
  m.map(5).str("id").u(9).str("model").str("echo");
  m.str("future_key").arr(2).u(1).str("x");
  m.str("version").nil(); // nil reads as absent
  m.raw({0x07}).str("non-string key ignored");
  auto d = decode_req(m.buf);
  ASSERT_FALSE(d.err) << d.reason;
  EXPECT_EQ(d.req.op, op_kind::infer);
  EXPECT_EQ(d.req.id, request_id::of(9));
  EXPECT_EQ(d.req.model, "echo");
  EXPECT_FALSE(d.req.version);
}

TEST(codec_request, missing_id_is_nil) {
  mp m;
  m.map(2).str("op").str("ping").str("v").u(1);
  auto d = decode_req(m.buf);
  ASSERT_FALSE(d.err) << d.reason;
  EXPECT_EQ(d.req.id.k, request_id::kind::nil);
}

// -- reply round trips -------------------------------------------------------

namespace {

void expect_same(const reply& a, const reply& b) {
  EXPECT_EQ(a.v, b.v);
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.code, b.code);
  EXPECT_EQ(a.error, b.error);
  EXPECT_EQ(a.outputs, b.outputs);
  EXPECT_EQ(a.source, b.source);
  EXPECT_EQ(a.model, b.model);
  EXPECT_EQ(a.version, b.version);
  ASSERT_EQ(a.timing_us.has_value(), b.timing_us.has_value());
  if (a.timing_us) {
    EXPECT_EQ(a.timing_us->queue_us, b.timing_us->queue_us);
    EXPECT_EQ(a.timing_us->compute_us, b.timing_us->compute_us);
    EXPECT_EQ(a.timing_us->total_us, b.timing_us->total_us);
  }
  EXPECT_EQ(a.node, b.node);
  EXPECT_EQ(a.has_models, b.has_models);
  ASSERT_EQ(a.models.size(), b.models.size());
  for (size_t i = 0; i < a.models.size(); ++i) {
    const auto& x = a.models[i];
    const auto& y = b.models[i];
    EXPECT_EQ(x.name, y.name);
    EXPECT_EQ(x.versions, y.versions);
    EXPECT_EQ(x.state, y.state);
    auto same_specs = [](const std::vector<io_spec>& p,
                         const std::vector<io_spec>& q) {
      ASSERT_EQ(p.size(), q.size());
      for (size_t j = 0; j < p.size(); ++j) {
        EXPECT_EQ(p[j].name, q[j].name);
        EXPECT_EQ(p[j].type, q[j].type);
        EXPECT_EQ(p[j].shape, q[j].shape);
      }
    };
    same_specs(x.inputs, y.inputs);
    same_specs(x.outputs, y.outputs);
  }
  EXPECT_EQ(a.has_nodes, b.has_nodes);
  ASSERT_EQ(a.nodes.size(), b.nodes.size());
  for (size_t i = 0; i < a.nodes.size(); ++i) {
    EXPECT_EQ(a.nodes[i].name, b.nodes[i].name);
    EXPECT_EQ(a.nodes[i].role, b.nodes[i].role);
    EXPECT_EQ(a.nodes[i].state, b.nodes[i].state);
    EXPECT_EQ(a.nodes[i].labels, b.nodes[i].labels);
    EXPECT_EQ(a.nodes[i].replicas, b.nodes[i].replicas);
    EXPECT_EQ(a.nodes[i].devices, b.nodes[i].devices);
  }
}

reply infer_reply() {
  reply r;
  r.id = request_id::of(7);
  r.code = status::ok;
  r.outputs = all_dtype_tensors();
  r.source = reply_source::executor;
  r.model = "echo";
  r.version = 1;
  r.timing_us = timing{12, 345, 400};
  r.node = "node-1";
  return r;
}

} // namespace

TEST(codec_reply, round_trip_infer) {
  for (auto src :
       {reply_source::cache, reply_source::executor, reply_source::coalesced}) {
    auto in = infer_reply();
    in.source = src;
    auto d = decode_rep(encoded(in));
    ASSERT_FALSE(d.err) << d.reason;
    expect_same(in, d.rep);
  }
}

TEST(codec_reply, outputs_encoded_is_written_verbatim) {
  auto in = infer_reply();
  auto plain = encoded(in);
  reply cached = in;
  encode_tensors(in.outputs, cached.outputs_encoded);
  cached.outputs.clear();
  auto verbatim = encoded(cached);
  EXPECT_EQ(plain, verbatim);
  auto d = decode_rep(verbatim);
  ASSERT_FALSE(d.err) << d.reason;
  expect_same(in, d.rep);
  EXPECT_TRUE(d.rep.outputs_encoded.empty());
}

TEST(codec_reply, round_trip_error_reply_with_nil_id) {
  reply in;
  in.code = status::invalid_argument;
  in.error = "inputs[0].shape: expected array of uint, got str";
  auto frame = encoded(in);
  auto d = decode_rep(frame);
  ASSERT_FALSE(d.err) << d.reason;
  expect_same(in, d.rep);
  EXPECT_EQ(d.rep.id.k, request_id::kind::nil);
  // Exactly v, id, status, error.
  EXPECT_EQ(static_cast<uint8_t>(frame[0]), 0x84);
}

TEST(codec_reply, every_status_round_trips) {
  for (int s = 0; s <= static_cast<int>(status::cancelled); ++s) {
    reply in;
    in.id = request_id::of(std::to_string(s * 1000));
    in.code = static_cast<status>(s);
    if (in.code != status::ok) {
      in.error = "because";
    }
    auto d = decode_rep(encoded(in));
    ASSERT_FALSE(d.err) << d.reason;
    expect_same(in, d.rep);
  }
}

TEST(codec_reply, round_trip_models_list) {
  reply in;
  in.id = request_id::of(11);
  in.has_models = true;
  model_info a;
  a.name = "resnet";
  a.versions = {1, 2, 30};
  a.state = "loaded";
  a.inputs = {{"image", dtype::f32, {-1, 3, 224, 224}}};
  a.outputs = {{"logits", dtype::f16, {-1, 1000}},
               {"argmax", dtype::i64, {-1}}};
  model_info b;
  b.name = "tiny";
  b.state = "available";
  in.models = {a, b};
  auto d = decode_rep(encoded(in));
  ASSERT_FALSE(d.err) << d.reason;
  expect_same(in, d.rep);

  reply empty;
  empty.has_models = true;
  auto e = decode_rep(encoded(empty));
  ASSERT_FALSE(e.err) << e.reason;
  EXPECT_TRUE(e.rep.has_models);
  EXPECT_TRUE(e.rep.models.empty());
}

TEST(codec_reply, round_trip_nodes_list) {
  reply in;
  in.id = request_id::of("status-1");
  in.has_nodes = true;
  node_info h;
  h.name = "head-0";
  h.role = "head";
  h.state = "up";
  h.labels = {{"zone", "eu-1a"}, {"capacity", "on-demand"}};
  h.replicas = {{"resnet", 2}, {"echo", 1}};
  node_info w;
  w.name = "worker-3";
  w.role = "worker";
  w.state = "draining";
  node_device g;
  g.name = "gpu:0";
  g.product = "NVIDIA H100 80GB HBM3";
  g.total_bytes = uint64_t{80} << 30;
  g.used_bytes = uint64_t{3} << 30;
  g.replicas = {{"resnet", 1}};
  node_device idle = g;
  idle.name = "gpu:1";
  idle.used_bytes = 0;
  idle.replicas.clear();
  w.devices = {g, idle};
  in.nodes = {h, w};
  auto d = decode_rep(encoded(in));
  ASSERT_FALSE(d.err) << d.reason;
  expect_same(in, d.rep);
}

TEST(codec_reply, round_trip_reload_changes) {
  reply in;
  in.id = request_id::of(9);
  in.has_changes = true;
  in.added = {{"mlp", 2, {}}, {"new", 1, {}}};
  in.removed = {{"old", 3, {}}};
  in.refused = {{"mlp", 1, "/repo/mlp/1/model.toml changed"}};
  auto d = decode_rep(encoded(in));
  ASSERT_FALSE(d.err) << d.reason;
  EXPECT_TRUE(d.rep.has_changes);
  EXPECT_EQ(d.rep.added, in.added);
  EXPECT_EQ(d.rep.removed, in.removed);
  EXPECT_EQ(d.rep.refused, in.refused);
  // Nothing changed: the three keys are there, empty.
  reply none;
  none.has_changes = true;
  auto e = decode_rep(encoded(none));
  ASSERT_FALSE(e.err) << e.reason;
  EXPECT_TRUE(e.rep.has_changes);
  EXPECT_TRUE(e.rep.added.empty());
}

TEST(codec_reply, nodes_without_devices_key_decode) {
  // A node from before the `devices` key, and one whose device omits the
  // optional keys.
  mp m;
  m.map(3).str("id").u(1).str("status").str("OK").str("nodes").arr(2);
  m.map(2).str("name").str("old").str("role").str("worker");
  m.map(2).str("name").str("new").str("devices").arr(1);
  m.map(1).str("name").str("gpu:0");
  auto d = decode_rep(m.buf);
  ASSERT_FALSE(d.err) << d.reason;
  ASSERT_EQ(d.rep.nodes.size(), 2u);
  EXPECT_TRUE(d.rep.nodes[0].devices.empty());
  ASSERT_EQ(d.rep.nodes[1].devices.size(), 1u);
  EXPECT_EQ(d.rep.nodes[1].devices[0].name, "gpu:0");
  EXPECT_EQ(d.rep.nodes[1].devices[0].total_bytes, 0u);
}

TEST(codec_reply, encoder_appends) {
  std::string buf = "prefix";
  auto in = infer_reply();
  encode_reply(in, buf);
  EXPECT_EQ(buf.substr(0, 6), "prefix");
  EXPECT_EQ(buf.substr(6), encoded(in));
}

// -- malformed: truncation ---------------------------------------------------

TEST(codec_malformed, every_prefix_of_a_request_fails_cleanly) {
  auto frame = encoded(full_request(request_id::of("abc")));
  ASSERT_FALSE(decode_req(frame).err);
  for (size_t n = 0; n < frame.size(); ++n) {
    auto d = decode_req(frame.substr(0, n));
    EXPECT_REJECTED(d, "truncated frame");
    if (HasFailure()) {
      ADD_FAILURE() << "prefix length " << n;
      break;
    }
  }
}

TEST(codec_malformed, every_prefix_of_a_reply_fails_cleanly) {
  auto in = infer_reply();
  in.has_models = true;
  in.models = {{"m", {1}, "loaded", {{"x", dtype::f32, {-1, 2}}}, {}}};
  in.has_nodes = true;
  in.nodes = {{"n", "all", "up", {{"k", "v"}}, {{"m", 1}}}};
  in.nodes[0].devices = {{"gpu:0", "H100", 80, 8, {{"m", 1}}}};
  auto frame = encoded(in);
  ASSERT_FALSE(decode_rep(frame).err);
  for (size_t n = 0; n < frame.size(); ++n) {
    auto d = decode_rep(frame.substr(0, n));
    EXPECT_REJECTED(d, "truncated frame");
    if (HasFailure()) {
      ADD_FAILURE() << "prefix length " << n;
      break;
    }
  }
}

TEST(codec_malformed, truncated_tensor_data_names_the_key_and_keeps_the_id) {
  auto frame = infer_frame(42, 256);
  auto d = decode_req(frame.substr(0, frame.size() - 10));
  EXPECT_REJECTED(d, "truncated frame", "inputs[0].data");
  EXPECT_EQ(d.req.id, request_id::of(42));
}

TEST(codec_malformed, trailing_bytes) {
  auto d = decode_req(infer_frame() + '\xc0');
  EXPECT_REJECTED(d, "trailing bytes after request");
  EXPECT_EQ(d.req.id, request_id::of(42));
  reply r;
  auto e = decode_rep(encoded(r) + "\x01\x02");
  EXPECT_REJECTED(e, "trailing bytes after reply");
}

// -- malformed: types and values ---------------------------------------------

TEST(codec_malformed, wrong_key_types) {
  struct cse {
    const char* what;
    std::string frame;
    std::vector<std::string_view> frags;
  };
  std::vector<cse> cases;
  auto add = [&](const char* what, auto build,
                 std::vector<std::string_view> frags) {
    mp m;
    build(m);
    cases.push_back({what, m.buf, std::move(frags)});
  };
  add("model as int", [](mp& m) { m.map(2).str("id").u(1).str("model").u(17); },
      {"model", "expected str", "uint"});
  add("model as nested map",
      [](mp& m) { m.map(2).str("id").u(1).str("model").map(0); },
      {"model", "expected str", "map"});
  add("shape as str",
      [](mp& m) {
        m.map(3).str("id").u(1).str("model").str("echo").str("inputs").arr(1);
        m.map(4).str("name").str("x").str("dtype").str("f32");
        m.str("shape").str("2x2").str("data").bin(16);
      },
      {"inputs[0].shape", "expected array of uint"});
  add("negative dimension",
      [](mp& m) {
        m.map(3).str("id").u(1).str("model").str("echo").str("inputs").arr(1);
        m.map(4).str("name").str("x").str("dtype").str("f32");
        m.str("shape").arr(2).u(2).i(-2).str("data").bin(16);
      },
      {"inputs[0].shape", "expected array of uint"});
  add("data as str",
      [](mp& m) {
        m.map(3).str("id").u(1).str("model").str("echo").str("inputs").arr(1);
        m.map(4).str("name").str("x").str("dtype").str("u8");
        m.str("shape").arr(1).u(2).str("data").str("ab");
      },
      {"inputs[0].data", "expected bin", "str"});
  add("dtype as int",
      [](mp& m) {
        m.map(3).str("id").u(1).str("model").str("echo").str("inputs").arr(1);
        m.map(4).str("name").str("x").str("dtype").u(0);
        m.str("shape").arr(0).str("data").bin(4);
      },
      {"inputs[0].dtype", "expected str"});
  add("tensor not a map",
      [](mp& m) {
        m.map(3).str("id").u(1).str("model").str("echo").str("inputs").arr(2);
        m.tensor("a", 1).u(5);
      },
      {"inputs[1]", "expected map"});
  add("tensor without data",
      [](mp& m) {
        m.map(3).str("id").u(1).str("model").str("echo").str("inputs").arr(1);
        m.map(3).str("name").str("x").str("dtype").str("u8");
        m.str("shape").arr(1).u(2);
      },
      {"inputs[0].data", "required"});
  add("inputs as map",
      [](mp& m) {
        m.map(3).str("id").u(1).str("model").str("echo").str("inputs").map(0);
      },
      {"inputs", "expected array"});
  add("priority 12",
      [](mp& m) {
        m.map(3).str("id").u(1).str("model").str("echo").str("priority").u(12);
      },
      {"priority", "12", "0..9"});
  add("priority negative",
      [](mp& m) {
        m.map(3).str("id").u(1).str("model").str("echo").str("priority").i(-1);
      },
      {"priority", "expected uint"});
  add("priority float",
      [](mp& m) {
        m.map(3)
            .str("id")
            .u(1)
            .str("model")
            .str("echo")
            .str("priority")
            .f64(1.5);
      },
      {"priority", "expected uint", "float"});
  add("id as array",
      [](mp& m) { m.map(2).str("id").arr(1).u(1).str("model").str("echo"); },
      {"id", "expected uint64 or str", "array"});
  add("id negative",
      [](mp& m) { m.map(2).str("id").i(-5).str("model").str("echo"); },
      {"id", "expected uint64 or str"});
  add("version as str",
      [](mp& m) {
        m.map(3).str("id").u(1).str("model").str("echo").str("version").str(
            "2");
      },
      {"version", "expected uint"});
  add("timeout_ms as str",
      [](mp& m) {
        m.map(3).str("id").u(1).str("model").str("echo");
        m.str("timeout_ms").str("5s");
      },
      {"timeout_ms", "expected uint"});
  add("cache unknown",
      [](mp& m) {
        m.map(3).str("id").u(1).str("model").str("echo");
        m.str("cache").str("sometimes");
      },
      {"cache", "'sometimes'"});
  add("tenant as bin",
      [](mp& m) {
        m.map(3).str("id").u(1).str("model").str("echo").str("tenant").bin(3);
      },
      {"tenant", "expected str", "bin"});
  add("op unknown",
      [](mp& m) { m.map(2).str("id").u(1).str("op").str("explode"); },
      {"op", "'explode'"});
  add("op as int", [](mp& m) { m.map(2).str("id").u(1).str("op").u(1); },
      {"op", "expected str"});
  add("node as array",
      [](mp& m) {
        m.map(3).str("id").u(1).str("op").str("drain").str("node").arr(0);
      },
      {"node", "expected str"});
  add("v as str", [](mp& m) { m.map(2).str("v").str("1").str("id").u(1); },
      {"v", "expected uint"});
  add("duplicate tenant",
      [](mp& m) {
        m.map(4).str("id").u(1).str("model").str("e");
        m.str("tenant").str("a").str("tenant").str("b");
      },
      {"duplicate key", "tenant"});
  add("not a map", [](mp& m) { m.arr(2).u(1).u(2); },
      {"not a msgpack map", "array"});
  add("bare int", [](mp& m) { m.u(7); }, {"not a msgpack map"});
  add("reserved byte 0xc1",
      [](mp& m) { m.map(2).str("id").u(1).str("model").raw({0xc1}); },
      {"malformed msgpack", "model"});
  for (auto& c : cases) {
    SCOPED_TRACE(c.what);
    auto d = decode_req(c.frame);
    EXPECT_TRUE(is_invalid(d.err)) << d.reason;
    for (auto frag : c.frags) {
      EXPECT_NE(d.reason.find(frag), std::string::npos)
          << "reason '" << d.reason << "' lacks '" << frag << "'";
    }
    EXPECT_LT(d.peak, one_mib);
  }
}

TEST(codec_malformed, model_required) {
  mp m;
  m.map(1).str("id").u(3);
  auto d = decode_req(m.buf);
  EXPECT_REJECTED(d, "model: required for op infer");
  EXPECT_EQ(d.req.id, request_id::of(3));
  mp l;
  l.map(3).str("id").u(4).str("op").str("unload").str("model").str("");
  EXPECT_REJECTED(decode_req(l.buf), "model: required for op unload");
  mp p;
  p.map(2).str("id").u(5).str("op").str("load");
  EXPECT_REJECTED(decode_req(p.buf), "model: required for op load");
}

TEST(codec_malformed, unsupported_version_keeps_id) {
  mp m;
  m.map(3).str("v").u(2).str("id").str("req-9").str("model").str("echo");
  auto d = decode_req(m.buf);
  EXPECT_REJECTED(d, "unsupported protocol version 2");
  EXPECT_EQ(d.req.id, request_id::of(std::string{"req-9"}));
  mp z;
  z.map(2).str("v").u(0).str("model").str("echo");
  EXPECT_REJECTED(decode_req(z.buf), "unsupported protocol version 0");
}

TEST(codec_malformed, id_is_filled_when_a_later_field_is_invalid) {
  {
    mp m; // id after the bad key: decoding order is not wire order
    m.map(3).str("model").str("echo").str("priority").u(12).str("id").u(77);
    auto d = decode_req(m.buf);
    EXPECT_REJECTED(d, "priority");
    EXPECT_EQ(d.req.id, request_id::of(77));
  }
  {
    mp m;
    m.map(3).str("id").str("client-1/seq-5").str("model").str("echo");
    m.str("inputs").arr(1);
    m.map(4).str("name").str("x").str("dtype").str("f33");
    m.str("shape").arr(1).u(1).str("data").bin(4);
    auto d = decode_req(m.buf);
    EXPECT_REJECTED(d, "unknown dtype 'f33' in inputs[0].dtype");
    EXPECT_EQ(d.req.id, request_id::of(std::string{"client-1/seq-5"}));
  }
  {
    mp m; // an unparseable tail: the scanner still finds the id
    m.map(3).str("id").u(5).str("model").str("echo").str("inputs");
    m.raw({0xdd, 0xff, 0xff, 0xff, 0xff});
    auto d = decode_req(m.buf);
    EXPECT_REJECTED(d, "inputs");
    EXPECT_EQ(d.req.id, request_id::of(5));
  }
}

TEST(codec_malformed, long_string_id) {
  mp ok;
  ok.map(2).str("id").str(std::string(128, 'a')).str("model").str("echo");
  auto good = decode_req(ok.buf);
  ASSERT_FALSE(good.err) << good.reason;
  EXPECT_EQ(good.req.id.str.size(), 128u);
  mp m;
  m.map(2).str("id").str(std::string(129, 'a')).str("model").str("echo");
  auto d = decode_req(m.buf);
  EXPECT_REJECTED(d, "id longer than 128 bytes");
  EXPECT_EQ(d.req.id.k, request_id::kind::nil);
}

TEST(codec_malformed, long_strings_and_binary_names) {
  mp m;
  m.map(2).str("id").u(1).str("model").str(std::string(5000, 'm'));
  EXPECT_REJECTED(decode_req(m.buf), "model", "string of 5000 bytes",
                  "limit 4096");
  // Reasons quote client bytes, but never raw control bytes.
  mp b;
  b.map(3).str("id").u(1).str("model").str("echo").str("cache");
  b.str(std::string("\x01\x02\n", 3) + std::string(100, 'z'));
  auto d = decode_req(b.buf);
  EXPECT_REJECTED(d, "cache");
  EXPECT_EQ(d.reason.find('\n'), std::string::npos);
  EXPECT_LT(d.reason.size(), 200u);
}

// -- malformed: hostile sizes ------------------------------------------------

TEST(codec_malformed, nesting_bomb) {
  std::string bomb(100000, '\x91'); // [[[[...]]]]
  bomb += '\xc0';
  auto start = std::chrono::steady_clock::now();
  auto d = decode_req(bomb);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::steady_clock::now() - start)
                .count();
  EXPECT_REJECTED(d, "nesting deeper than 8", "request");
  EXPECT_LT(ms, 500);
  // The same inside a tensor's shape.
  mp m;
  m.map(3).str("id").u(8).str("model").str("echo").str("inputs").arr(1);
  m.map(1).str("shape").raw(std::string(100000, '\x91'));
  auto e = decode_req(m.buf);
  EXPECT_REJECTED(e, "nesting deeper than 8", "inputs[0].shape");
  EXPECT_EQ(e.req.id, request_id::of(8));
  // Maps nest too: {"a":{"a":{...}}}
  std::string maps;
  for (int i = 0; i < 50000; ++i) {
    maps += "\x81\xa1"
            "a";
  }
  auto f = decode_rep(maps);
  EXPECT_REJECTED(f, "nesting deeper than 8", "a.a.a");
}

TEST(codec_malformed, header_claiming_four_billion_items) {
  const std::string array32{"\xdd\xff\xff\xff\xff", 5};
  const std::string map32{"\xdf\xff\xff\xff\xff", 5};
  EXPECT_REJECTED(decode_req(array32), "request", "array of 4294967295 items",
                  "limit 4096");
  EXPECT_REJECTED(decode_req(map32), "request", "map of 4294967295 entries");
  EXPECT_REJECTED(decode_rep(array32), "reply", "array of 4294967295 items");
  EXPECT_REJECTED(decode_rep(map32), "reply", "map of 4294967295 entries");
  {
    mp m;
    m.map(2).str("id").u(1).str("inputs").raw(array32);
    EXPECT_REJECTED(decode_req(m.buf), "inputs", "array of 4294967295 items");
  }
  {
    mp m;
    m.map(2).str("id").u(1).str("inputs").arr(1).raw(map32);
    EXPECT_REJECTED(decode_req(m.buf), "inputs[0]", "map of 4294967295");
  }
  {
    mp m;
    m.map(2).str("id").u(1).str("inputs").arr(1).map(1).str("shape");
    m.raw(array32);
    EXPECT_REJECTED(decode_req(m.buf), "inputs[0].shape",
                    "array of 4294967295");
  }
  {
    // Within the per-container limit but far past the frame: costs one
    // bounded allocation, then fails as truncated.
    mp m;
    m.map(2).str("id").u(1).str("inputs").raw({0xdd, 0x00, 0x00, 0x10, 0x00});
    EXPECT_REJECTED(decode_req(m.buf), "truncated frame", "inputs");
  }
  {
    mp m; // bin32 / str32 claiming 4 GiB of data that is not there
    m.map(2).str("id").u(1).str("model").raw({0xdb, 0xff, 0xff, 0xff, 0xff});
    EXPECT_REJECTED(decode_req(m.buf), "truncated frame", "model");
    mp b;
    b.map(3).str("id").u(1).str("model").str("echo").str("inputs").arr(1);
    b.map(1).str("data").raw({0xc6, 0xff, 0xff, 0xff, 0xff});
    EXPECT_REJECTED(decode_req(b.buf), "truncated frame", "inputs[0].data");
  }
  {
    mp m; // ext32 with the 0xffffffff length
    m.map(1).str("x").raw({0xc9, 0xff, 0xff, 0xff, 0xff, 0x01});
    EXPECT_REJECTED(decode_req(m.buf), "x");
  }
  {
    mp m; // in a reply
    m.map(3).str("id").u(1).str("status").str("OK").str("models");
    m.arr(1).map(1).str("inputs").raw(array32);
    EXPECT_REJECTED(decode_rep(m.buf), "models[0].inputs",
                    "array of 4294967295");
  }
}

TEST(codec_malformed, many_small_values_hit_the_total_budget) {
  codec_limits lim;
  lim.max_items = 64; // budget: 64 * 64 value slots
  mp m;
  m.map(2).str("id").u(12).str("junk").arr(64);
  for (int i = 0; i < 64; ++i) {
    m.arr(64);
    for (int j = 0; j < 64; ++j) {
      m.nil();
    }
  }
  auto d = decode_req(m.buf, lim);
  EXPECT_REJECTED(d, "junk", "frame holds more than 4096 values");
  EXPECT_EQ(d.req.id, request_id::of(12));
}

TEST(codec_malformed, shape_and_data_length_mismatch) {
  mp m;
  m.map(3).str("id").u(1).str("model").str("echo").str("inputs").arr(2);
  m.tensor("ok", 3);
  m.map(4).str("name").str("y").str("dtype").str("f32");
  m.str("shape").arr(2).u(10).u(10).str("data").bin(4000);
  EXPECT_REJECTED(decode_req(m.buf),
                  "inputs[1].data: 4000 bytes but shape [10,10] of f32 needs "
                  "400");
  // Short by one byte.
  mp s;
  s.map(3).str("id").u(1).str("model").str("echo").str("inputs").arr(1);
  s.map(4).str("name").str("h").str("dtype").str("f16");
  s.str("shape").arr(1).u(3).str("data").bin(5);
  EXPECT_REJECTED(decode_req(s.buf), "inputs[0].data: 5 bytes", "needs 6");
}

TEST(codec_malformed, shape_product_overflows_uint64) {
  {
    mp m;
    m.map(3).str("id").u(1).str("model").str("echo").str("inputs").arr(1);
    m.map(4).str("name").str("x").str("dtype").str("u8");
    m.str("shape").arr(3).u(1ull << 32).u(1ull << 32).u(2);
    m.str("data").bin(0);
    EXPECT_REJECTED(decode_req(m.buf), "inputs[0].shape", "overflows");
  }
  {
    // Elements fit in uint64 but bytes do not.
    mp m;
    m.map(3).str("id").u(1).str("model").str("echo").str("inputs").arr(1);
    m.map(4).str("name").str("x").str("dtype").str("f64");
    m.str("shape").arr(1).u(1ull << 62).str("data").bin(0);
    EXPECT_REJECTED(decode_req(m.buf), "inputs[0].shape", "overflows");
  }
  {
    // A product that wraps to exactly the bin size must not be accepted.
    mp m;
    m.map(3).str("id").u(1).str("model").str("echo").str("inputs").arr(1);
    m.map(4).str("name").str("x").str("dtype").str("u8");
    m.str("shape").arr(2).u(1ull << 63).u(2).str("data").bin(0);
    EXPECT_REJECTED(decode_req(m.buf), "inputs[0].shape", "overflows");
  }
}

TEST(codec_malformed, rank_and_tensor_count_limits) {
  mp m;
  m.map(3).str("id").u(1).str("model").str("echo").str("inputs").arr(1);
  m.map(4).str("name").str("x").str("dtype").str("u8");
  m.str("shape").arr(9);
  for (int i = 0; i < 9; ++i) {
    m.u(1);
  }
  m.str("data").bin(1);
  EXPECT_REJECTED(decode_req(m.buf), "inputs[0].shape", "rank 9", "limit 8");
  mp t;
  t.map(3).str("id").u(1).str("model").str("echo").str("inputs").arr(65);
  for (int i = 0; i < 65; ++i) {
    t.tensor(std::to_string(i), 1);
  }
  EXPECT_REJECTED(decode_req(t.buf), "inputs", "65 tensors", "limit 64");
}

TEST(codec_malformed, unknown_dtype) {
  mp m;
  m.map(3).str("id").u(1).str("model").str("echo").str("inputs").arr(1);
  m.map(4).str("name").str("x").str("dtype").str("f33");
  m.str("shape").arr(1).u(1).str("data").bin(4);
  EXPECT_REJECTED(decode_req(m.buf), "unknown dtype 'f33' in inputs[0].dtype");
}

TEST(codec_malformed, oversized_frame) {
  std::string big(70000000, '\0');
  auto d = decode_req(big);
  EXPECT_REJECTED(d, "frame of 70000000 bytes exceeds limit 67108864");
  codec_limits lim;
  lim.max_frame_bytes = 1024;
  auto frame = infer_frame(1, 512);
  auto over = decode_req(frame, lim);
  EXPECT_REJECTED(over, "frame of", "exceeds limit 1024");
  // Its reply still carries its id, so the client can match it.
  EXPECT_EQ(over.req.id, request_id::of(uint64_t{1}));
  EXPECT_REJECTED(decode_rep(frame, lim), "frame of", "exceeds limit 1024");
  // A bin over max_bin_bytes is refused by size, not by allocation.
  codec_limits small_bin;
  small_bin.max_bin_bytes = 100;
  EXPECT_REJECTED(decode_req(infer_frame(1, 64), small_bin), "inputs[0].data",
                  "bin of 256 bytes exceeds limit 100");
}

TEST(codec_malformed, large_valid_frame_passes_the_prescan) {
  // Over the pre-scan threshold, but legitimate.
  auto frame = infer_frame(99, 1u << 18);
  ASSERT_GT(frame.size(), 1u << 20);
  auto d = decode_req(frame);
  ASSERT_FALSE(d.err) << d.reason;
  EXPECT_EQ(d.req.inputs.at(0).data.size(), 1u << 20);
}

// -- malformed replies -------------------------------------------------------

TEST(codec_malformed_reply, bad_fields_name_their_key) {
  {
    mp m;
    m.map(3).str("id").u(1).str("status").str("OK").str("added").arr(1);
    m.map(1).str("model").str("m");
    EXPECT_REJECTED(decode_rep(m.buf), "added[0]", "version are required");
  }
  {
    mp m;
    m.map(2).str("id").u(1).str("status").str("FINE");
    EXPECT_REJECTED(decode_rep(m.buf), "status", "'FINE'");
  }
  {
    mp m;
    m.map(1).str("id").u(1);
    EXPECT_REJECTED(decode_rep(m.buf), "status: required");
  }
  {
    mp m;
    m.map(3).str("id").u(1).str("status").str("OK").str("outputs").arr(1);
    m.map(4).str("name").str("y").str("dtype").str("i32");
    m.str("shape").arr(1).u(3).str("data").bin(8);
    EXPECT_REJECTED(decode_rep(m.buf), "outputs[0].data: 8 bytes", "needs 12");
  }
  {
    mp m;
    m.map(3).str("id").u(1).str("status").str("OK").str("timing_us");
    m.map(1).str("total").str("slow");
    EXPECT_REJECTED(decode_rep(m.buf), "timing_us.total", "expected uint");
  }
  {
    mp m;
    m.map(3).str("id").u(1).str("status").str("OK").str("models").arr(1);
    m.map(2).str("name").str("m").str("inputs").arr(1);
    m.map(3).str("name").str("x").str("dtype").str("f32");
    m.str("shape").arr(2).i(-2).u(3);
    EXPECT_REJECTED(decode_rep(m.buf), "models[0].inputs[0].shape");
  }
  {
    mp m;
    m.map(3).str("id").u(1).str("status").str("OK").str("nodes").arr(1);
    m.map(2).str("name").str("n").str("replicas").map(1).str("m").i(-1);
    EXPECT_REJECTED(decode_rep(m.buf), "nodes[0].replicas");
  }
  {
    mp m;
    m.map(3).str("id").u(1).str("status").str("OK").str("nodes").arr(1);
    m.map(2).str("name").str("n").str("devices").map(0);
    EXPECT_REJECTED(decode_rep(m.buf), "nodes[0].devices", "array of maps");
  }
  {
    mp m;
    m.map(3).str("id").u(1).str("status").str("OK").str("nodes").arr(1);
    m.map(2).str("name").str("n").str("devices").arr(1);
    m.map(2).str("name").str("gpu:0").str("used_bytes").str("lots");
    EXPECT_REJECTED(decode_rep(m.buf), "nodes[0].devices[0].used_bytes");
  }
  {
    mp m;
    m.map(3).str("id").u(1).str("status").str("OK").str("nodes").arr(1);
    m.map(2).str("name").str("n").str("devices").arr(1);
    m.map(2).str("name").str("gpu:0").str("replicas").map(1).str("m").str("1");
    EXPECT_REJECTED(decode_rep(m.buf), "nodes[0].devices[0].replicas");
  }
  {
    mp m;
    m.map(3).str("id").u(1).str("status").str("OK").str("source").str("x");
    EXPECT_REJECTED(decode_rep(m.buf), "source", "'x'");
  }
}

// -- throughput smoke test ---------------------------------------------------

TEST(codec_perf, one_kib_tensor_round_trip) {
  request r;
  r.id = request_id::of(123456);
  r.model = "echo";
  r.inputs.push_back(make_tensor("x", dtype::f32, {1, 256}));
  reply rep = infer_reply();
  rep.outputs = r.inputs;
#if defined(NDEBUG) && !defined(SHOAL_TEST_SANITIZED)
  constexpr int n = 20000;
  constexpr bool assert_speed = true;
#else
  constexpr int n = 2000;
  constexpr bool assert_speed = false;
#endif
  std::string frame;
  request out;
  reply rout;
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) {
    frame.clear();
    encode_request(r, frame);
    auto err = decode_request(reinterpret_cast<const uint8_t*>(frame.data()),
                              frame.size(), {}, out);
    ASSERT_FALSE(err);
    frame.clear();
    encode_reply(rep, frame);
    err = decode_reply(reinterpret_cast<const uint8_t*>(frame.data()),
                       frame.size(), {}, rout);
    ASSERT_FALSE(err);
  }
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                std::chrono::steady_clock::now() - start)
                .count();
  auto per = ns / n;
  std::printf("[ perf     ] request+reply encode/decode, 1 KiB tensor: "
              "%lld ns\n",
              static_cast<long long>(per));
  // Generous (it is ~1-3 us in release builds on a loaded machine); only
  // optimized builds are timed at all.
  if (assert_speed) {
    EXPECT_LT(per, 100000);
  }
}
