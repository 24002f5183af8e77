// The bodies of node-to-node messages: every message round-trips, and every
// malformed body (truncated, wrong types, lying sizes) is refused with a
// reason naming the message, never a crash or a huge allocation.
#include <gtest/gtest.h>

#include <functional>
#include <random>

#include <msgpack.hpp>

#include "net/link/cluster_codec.hpp"
#include "net/wire/error.hpp"
#include "net/wire/msgpack_util.hpp"

using namespace shoal;

namespace {

tensor make_tensor(std::string name, std::vector<uint64_t> shape) {
  tensor t;
  t.name = std::move(name);
  t.type = dtype::f32;
  t.shape = std::move(shape);
  size_t n = 1;
  for (auto d : t.shape) {
    n *= d;
  }
  t.data.resize(n * 4);
  for (size_t i = 0; i < t.data.size(); ++i) {
    t.data[i] = static_cast<uint8_t>(i * 7);
  }
  return t;
}

template <class T>
void expect_prefixes_fail(const std::string& body) {
  for (size_t n = 0; n < body.size(); ++n) {
    T out;
    auto err = decode(body.substr(0, n), out);
    EXPECT_TRUE(err) << "a " << n << "-byte prefix decoded";
    if (err) {
      EXPECT_NE(reason_of(err).find("cluster message"), std::string::npos);
    }
  }
}

} // namespace

TEST(cluster_codec, hello_round_trip) {
  worker_hello h;
  h.labels = {{"capacity", "spot"}, {"zone", "a"}};
  h.memory_bytes = 1u << 30;
  h.draining = true;
  h.metrics_target = "127.0.0.1:9311";
  h.replicas = {{3, "mlp", 1, "cpu", 1234}, {4, "cnn", 2, "gpu:0", 99}};
  h.cached = {{"mlp", 1}};
  std::string body;
  encode(h, body);
  worker_hello out;
  ASSERT_FALSE(decode(body, out));
  EXPECT_EQ(out.labels, h.labels);
  EXPECT_EQ(out.memory_bytes, h.memory_bytes);
  EXPECT_TRUE(out.draining);
  EXPECT_EQ(out.metrics_target, h.metrics_target);
  ASSERT_EQ(out.replicas.size(), 2u);
  EXPECT_EQ(out.replicas[1].id, 4u);
  EXPECT_EQ(out.replicas[1].model, "cnn");
  EXPECT_EQ(out.replicas[1].device, "gpu:0");
  EXPECT_EQ(out.cached, h.cached);
  expect_prefixes_fail<worker_hello>(body);
}

namespace {

std::vector<node_device> two_gpus() {
  node_device a;
  a.name = "gpu:0";
  a.product = "NVIDIA H100 80GB HBM3";
  a.total_bytes = uint64_t{80} << 30;
  a.used_bytes = uint64_t{12} << 30;
  a.replicas = {{"cnn", 1}, {"mlp", 2}};
  node_device b = a;
  b.name = "gpu:1";
  b.used_bytes = 0;
  b.replicas.clear();
  return {a, b};
}

using packer = msgpack::packer<string_writer>;

// A hello packed by hand: the seven fields of a hello from before devices
// existed, in an array header announcing `n` items (the test packs any
// beyond seven).
struct hello_writer {
  std::string buf;
  string_writer w{buf};
  packer pk{w};

  explicit hello_writer(uint32_t n) {
    pk.pack_array(n);
    pk.pack(std::string{"worker"});
    pk.pack_map(1);
    pk.pack(std::string{"zone"});
    pk.pack(std::string{"a"});
    pk.pack_uint64(1024);
    pk.pack_false();
    pk.pack(std::string{"127.0.0.1:9311"});
    pk.pack_array(0);
    pk.pack_array(0);
  }
};

caf::error decode_hello_with(const std::function<void(packer&)>& devices,
                             worker_hello& out) {
  hello_writer hw{8};
  devices(hw.pk);
  return decode(hw.buf, out);
}

} // namespace

TEST(cluster_codec, hello_carries_the_workers_gpus) {
  worker_hello h;
  h.metrics_target = "127.0.0.1:9311";
  h.replicas = {{4, "cnn", 2, "gpu:0", 99}};
  h.devices = two_gpus();
  std::string body;
  encode(h, body);
  worker_hello out;
  ASSERT_FALSE(decode(body, out));
  EXPECT_EQ(out.devices, h.devices);
  EXPECT_EQ(out.replicas[0].device, "gpu:0");
  expect_prefixes_fail<worker_hello>(body);
  // No GPU: an empty array, not an absent field.
  h.devices.clear();
  body.clear();
  encode(h, body);
  out.devices = two_gpus();
  ASSERT_FALSE(decode(body, out));
  EXPECT_TRUE(out.devices.empty());
}

TEST(cluster_codec, hello_of_an_older_worker_has_no_devices) {
  hello_writer hw{7};
  worker_hello out;
  out.devices = two_gpus(); // stale content is cleared
  auto err = decode(hw.buf, out);
  ASSERT_FALSE(err) << reason_of(err);
  EXPECT_EQ(out.metrics_target, "127.0.0.1:9311");
  EXPECT_EQ(out.labels.size(), 1u);
  EXPECT_TRUE(out.devices.empty());
}

TEST(cluster_codec, malformed_devices_are_refused_with_the_field) {
  auto refused = [](const std::function<void(packer&)>& devices,
                    const std::string& what) {
    worker_hello out;
    auto err = decode_hello_with(devices, out);
    ASSERT_TRUE(err) << "accepted, expected: " << what;
    EXPECT_NE(reason_of(err).find("cluster message hello"), std::string::npos)
        << reason_of(err);
    EXPECT_NE(reason_of(err).find(what), std::string::npos) << reason_of(err);
  };
  refused([](packer& pk) { pk.pack(std::string{"gpu:0"}); },
          "devices: expected an array");
  // A device cut short: name and product only.
  refused(
      [](packer& pk) {
        pk.pack_array(1);
        pk.pack_array(2);
        pk.pack(std::string{"gpu:0"});
        pk.pack(std::string{"H100"});
      },
      "device: expected an array of at least 5 items");
  refused(
      [](packer& pk) {
        pk.pack_array(1);
        pk.pack_array(5);
        pk.pack(std::string{"gpu:0"});
        pk.pack(std::string{"H100"});
        pk.pack_int64(-1);
        pk.pack_uint64(0);
        pk.pack_array(0);
      },
      "device.total_bytes");
  refused(
      [](packer& pk) {
        pk.pack_array(1);
        pk.pack_array(5);
        pk.pack_uint64(0); // a name that is a number
        pk.pack(std::string{"H100"});
        pk.pack_uint64(1);
        pk.pack_uint64(0);
        pk.pack_array(0);
      },
      "device.name");
  refused(
      [](packer& pk) {
        pk.pack_array(1);
        pk.pack_array(5);
        pk.pack(std::string{"gpu:0"});
        pk.pack(std::string{"H100"});
        pk.pack_uint64(1);
        pk.pack_uint64(0);
        pk.pack_array(1);
        pk.pack_array(2);
        pk.pack(std::string{"mlp"});
        pk.pack(std::string{"two"});
      },
      "device.replicas.count");
  refused(
      [](packer& pk) {
        pk.pack_array(1);
        pk.pack_array(5);
        pk.pack(std::string{"gpu:0"});
        pk.pack(std::string{"H100"});
        pk.pack_uint64(1);
        pk.pack_uint64(0);
        pk.pack_map(0); // replicas as a map
      },
      "device.replicas: expected an array");
  // More devices than any machine has.
  refused(
      [](packer& pk) {
        pk.pack_array(max_node_devices + 1);
        for (size_t i = 0; i <= max_node_devices; ++i) {
          pk.pack_array(5);
          pk.pack(std::string{"gpu:" + std::to_string(i)});
          pk.pack(std::string{"H100"});
          pk.pack_uint64(1);
          pk.pack_uint64(0);
          pk.pack_array(0);
        }
      },
      "at most 64");
  // An array header that promises devices the body does not hold.
  hello_writer hw{8};
  hw.buf += "\xdc\x00\x10"; // array16 of 16, then nothing
  worker_hello out;
  auto err = decode(hw.buf, out);
  ASSERT_TRUE(err);
  EXPECT_NE(reason_of(err).find("cluster message hello"), std::string::npos)
      << reason_of(err);
}

TEST(cluster_codec, devices_update_round_trip) {
  devices_msg m{two_gpus()};
  std::string body;
  encode(m, body);
  devices_msg out;
  ASSERT_FALSE(decode(body, out));
  EXPECT_EQ(out.devices, m.devices);
  expect_prefixes_fail<devices_msg>(body);
  body.clear();
  encode(devices_msg{}, body);
  out.devices = two_gpus();
  ASSERT_FALSE(decode(body, out));
  EXPECT_TRUE(out.devices.empty());
  // Not an array of devices.
  auto err = decode(std::string{"\x91\xa1x"}, out);
  ASSERT_TRUE(err);
  EXPECT_NE(reason_of(err).find("cluster message devices: devices"),
            std::string::npos)
      << reason_of(err);
}

TEST(cluster_codec, exec_carries_time_left_not_clock_values) {
  exec_msg m;
  m.replica = 7;
  exec_item it;
  it.ticket = 42;
  it.rows = 2;
  it.inputs = {make_tensor("x", {2, 3})};
  auto now = now_ns();
  it.deadline_ns = now + 500'000'000; // 500 ms left
  it.sent_ns = now;
  m.items.push_back(it);
  exec_item none = it;
  none.ticket = 43;
  none.deadline_ns = 0; // no deadline stays none
  m.items.push_back(none);
  std::string body;
  encode(m, body);
  exec_msg out;
  ASSERT_FALSE(decode(body, out));
  ASSERT_EQ(out.items.size(), 2u);
  EXPECT_EQ(out.replica, 7u);
  EXPECT_EQ(out.items[0].ticket, 42u);
  EXPECT_EQ(out.items[0].rows, 2u);
  EXPECT_EQ(out.items[0].inputs, it.inputs);
  auto left = out.items[0].deadline_ns - now_ns();
  EXPECT_GT(left, 300'000'000);
  EXPECT_LE(left, 500'000'000);
  EXPECT_EQ(out.items[1].deadline_ns, 0);
  expect_prefixes_fail<exec_msg>(body);
}

TEST(cluster_codec, done_round_trip) {
  done_msg m;
  m.replica = 9;
  exec_result r;
  r.ticket = 5;
  r.code = 0;
  r.outputs_encoded = std::string("\x91\x80", 2);
  r.queue_us = 10;
  r.compute_us = 20;
  r.batch_size = 3;
  exec_result e;
  e.ticket = 6;
  e.code = 5;
  e.error = "deadline";
  m.results = {r, e};
  std::string body;
  encode(m, body);
  done_msg out;
  ASSERT_FALSE(decode(body, out));
  ASSERT_EQ(out.results.size(), 2u);
  EXPECT_EQ(out.results[0].outputs_encoded, r.outputs_encoded);
  EXPECT_EQ(out.results[0].batch_size, 3u);
  EXPECT_EQ(out.results[1].error, "deadline");
  EXPECT_EQ(out.results[1].code, 5);
  expect_prefixes_fail<done_msg>(body);
}

TEST(cluster_codec, small_messages_round_trip) {
  std::string body;
  encode(spawn_msg{"mlp", 3, "lazy"}, body);
  spawn_msg s;
  ASSERT_FALSE(decode(body, s));
  EXPECT_EQ(s.model, "mlp");
  EXPECT_EQ(s.version, 3u);
  EXPECT_EQ(s.reason, "lazy");
  expect_prefixes_fail<spawn_msg>(body);
  body.clear();
  encode(retire_msg{4, "mlp", 3}, body);
  retire_msg rm;
  ASSERT_FALSE(decode(body, rm));
  EXPECT_EQ(rm.replica, 4u);
  body.clear();
  encode(replica_down_msg{4, "crashed"}, body);
  replica_down_msg d;
  ASSERT_FALSE(decode(body, d));
  EXPECT_EQ(d.reason, "crashed");
  body.clear();
  encode(spawn_fail_msg{"mlp", 3, "sha256 mismatch"}, body);
  spawn_fail_msg f;
  ASSERT_FALSE(decode(body, f));
  EXPECT_EQ(f.reason, "sha256 mismatch");
}

TEST(cluster_codec, progress_and_cancel_round_trip) {
  progress_msg p;
  p.replica = 7;
  p.tickets = {3, 41, uint64_t{1} << 40};
  p.done = 12;
  p.total = 20;
  std::string body;
  encode(p, body);
  progress_msg pout;
  ASSERT_FALSE(decode(body, pout));
  EXPECT_EQ(pout.replica, 7u);
  EXPECT_EQ(pout.tickets, p.tickets);
  EXPECT_EQ(pout.done, 12u);
  EXPECT_EQ(pout.total, 20u);
  expect_prefixes_fail<progress_msg>(body);
  body.clear();
  encode(cancel_msg{7, 41}, body);
  cancel_msg c;
  ASSERT_FALSE(decode(body, c));
  EXPECT_EQ(c.replica, 7u);
  EXPECT_EQ(c.ticket, 41u);
  expect_prefixes_fail<cancel_msg>(body);
}

TEST(cluster_codec, bad_progress_and_cancel_are_refused) {
  // More tickets than a batch can hold.
  progress_msg p;
  p.replica = 1;
  p.tickets.assign(max_progress_tickets + 1, 5);
  p.done = 1;
  p.total = 2;
  std::string body;
  encode(p, body);
  progress_msg out;
  auto err = decode(body, out);
  ASSERT_TRUE(err);
  EXPECT_NE(reason_of(err).find("tickets"), std::string::npos)
      << reason_of(err);
  // done past total.
  p.tickets = {5};
  p.done = 21;
  p.total = 20;
  body.clear();
  encode(p, body);
  err = decode(body, out);
  ASSERT_TRUE(err);
  EXPECT_NE(reason_of(err).find("done"), std::string::npos) << reason_of(err);
  // A ticket that is a string; a cancel whose ticket is negative.
  err = decode(std::string{"\x94\x01\x91\xa1x\x01\x02"}, out);
  ASSERT_TRUE(err);
  EXPECT_NE(reason_of(err).find("tickets"), std::string::npos)
      << reason_of(err);
  cancel_msg c;
  err = decode(std::string{"\x92\x01\xff"}, c);
  ASSERT_TRUE(err);
  EXPECT_NE(reason_of(err).find("ticket"), std::string::npos) << reason_of(err);
}

// The names are the wire format: nodes of other versions must keep reading
// them, so they may never change.
TEST(cluster_codec, ops_keep_their_wire_names) {
  const std::vector<std::pair<cluster_op, std::string>> names{
      {cluster_op::spawn, "spawn"},
      {cluster_op::ready, "ready"},
      {cluster_op::spawn_fail, "spawn_fail"},
      {cluster_op::retire, "retire"},
      {cluster_op::replica_down, "replica_down"},
      {cluster_op::exec, "exec"},
      {cluster_op::done, "done"},
      {cluster_op::drain, "drain"},
      {cluster_op::leave, "leave"},
      {cluster_op::devices, "devices"},
      {cluster_op::progress, "progress"},
      {cluster_op::cancel, "cancel"},
  };
  for (auto& [op, name] : names) {
    EXPECT_EQ(to_string(op), name);
    EXPECT_EQ(parse_cluster_op(name), op) << name;
  }
  // A newer node's op is unknown here, not an error.
  EXPECT_FALSE(parse_cluster_op("rebalance"));
  EXPECT_FALSE(parse_cluster_op(""));
  EXPECT_FALSE(parse_cluster_op("link.hello"));
}

TEST(cluster_codec, each_body_knows_its_op) {
  EXPECT_EQ(op_of(spawn_msg{}), cluster_op::spawn);
  EXPECT_EQ(op_of(replica_desc{}), cluster_op::ready);
  EXPECT_EQ(op_of(spawn_fail_msg{}), cluster_op::spawn_fail);
  EXPECT_EQ(op_of(retire_msg{}), cluster_op::retire);
  EXPECT_EQ(op_of(replica_down_msg{}), cluster_op::replica_down);
  EXPECT_EQ(op_of(exec_msg{}), cluster_op::exec);
  EXPECT_EQ(op_of(done_msg{}), cluster_op::done);
  EXPECT_EQ(op_of(drain_msg{}), cluster_op::drain);
  EXPECT_EQ(op_of(leave_msg{}), cluster_op::leave);
  EXPECT_EQ(op_of(devices_msg{}), cluster_op::devices);
  EXPECT_EQ(op_of(progress_msg{}), cluster_op::progress);
  EXPECT_EQ(op_of(cancel_msg{}), cluster_op::cancel);
  // The empty bodies encode to nothing and accept whatever a later version
  // adds.
  std::string body;
  encode(drain_msg{}, body);
  encode(leave_msg{}, body);
  EXPECT_TRUE(body.empty());
  drain_msg d;
  EXPECT_FALSE(decode(std::string{"\x91\x01"}, d));
  leave_msg l;
  EXPECT_FALSE(decode(std::string{}, l));
}

TEST(cluster_codec, wrong_types_and_lying_sizes_are_refused) {
  // spawn with a version that is a string.
  std::string body = "\x93\xa3mlp\xa1x\xa4lazy";
  spawn_msg s;
  auto err = decode(body, s);
  ASSERT_TRUE(err);
  EXPECT_NE(reason_of(err).find("version"), std::string::npos)
      << reason_of(err);
  // An array32 header claiming 4 billion items: refused by the limits.
  std::string bomb = "\xdd\xff\xff\xff\xff";
  exec_msg e;
  EXPECT_TRUE(decode(bomb, e));
  // A tensor whose data does not match its shape.
  exec_msg m;
  m.replica = 1;
  exec_item it;
  it.inputs = {make_tensor("x", {2, 3})};
  m.items.push_back(it);
  body.clear();
  encode(m, body);
  // Patch the shape's 3 into a 4 (positive fixint 0x03 -> 0x04): the last
  // 0x03 before the data bin.
  auto pos = body.rfind('\x03', body.find('\xc4'));
  ASSERT_NE(pos, std::string::npos);
  body[pos] = '\x04';
  err = decode(body, e);
  ASSERT_TRUE(err);
  EXPECT_NE(reason_of(err).find("tensor.data"), std::string::npos)
      << reason_of(err);
}

TEST(cluster_codec, random_bytes_never_crash) {
  std::mt19937 rng{7};
  for (int i = 0; i < 20000; ++i) {
    std::string body(rng() % 64, '\0');
    for (auto& ch : body) {
      ch = static_cast<char>(rng());
    }
    worker_hello h;
    exec_msg e;
    done_msg d;
    devices_msg g;
    progress_msg p;
    cancel_msg c;
    (void)decode(body, h);
    (void)decode(body, e);
    (void)decode(body, d);
    (void)decode(body, g);
    (void)decode(body, p);
    (void)decode(body, c);
  }
}
