#include "net/link/cluster_codec.hpp"

#include <msgpack.hpp>

#include "net/wire/error.hpp"
#include "net/wire/msgpack_util.hpp"

namespace shoal {

namespace {

using packer = msgpack::packer<string_writer>;
using object = msgpack::object;
namespace mt = msgpack::type;

// Bodies come from authenticated peers, but a bug on the other side must
// still not make us allocate without bound.
constexpr size_t max_items = 1u << 16;
constexpr size_t max_str = 1u << 16;
constexpr size_t max_bin = size_t{256} << 20;
constexpr size_t max_depth = 8;

void put(packer& pk, const std::string& s) {
  pk.pack_str(static_cast<uint32_t>(s.size()));
  pk.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
}

void put_bin(packer& pk, const void* data, size_t n) {
  pk.pack_bin(static_cast<uint32_t>(n));
  pk.pack_bin_body(static_cast<const char*>(data), static_cast<uint32_t>(n));
}

// Reads one positional array, remembering which message and field failed.
class reader {
public:
  reader(const char* msg, const object& o) : msg_(msg), o_(&o) {
    // nop
  }

  caf::error fail(const std::string& what) const {
    return make_error(errc::invalid_argument,
                      std::string{"cluster message "} + msg_ + ": " + what);
  }

  // The array at `o` must have at least n elements (more are ignored, so a
  // later version may append fields).
  caf::error array(const object& o, size_t n, const char* field,
                   const object*& out) const {
    if (o.type != mt::ARRAY || o.via.array.size < n) {
      return fail(std::string{field} + ": expected an array of at least " +
                  std::to_string(n) + " items");
    }
    out = o.via.array.ptr;
    return {};
  }

  caf::error str(const object& o, const char* field, std::string& out) const {
    if (o.type != mt::STR) {
      return fail(std::string{field} + ": expected a string");
    }
    out.assign(o.via.str.ptr, o.via.str.size);
    return {};
  }

  caf::error bin(const object& o, const char* field, std::string& out) const {
    if (o.type != mt::BIN && o.type != mt::STR) {
      return fail(std::string{field} + ": expected bin");
    }
    if (o.type == mt::BIN) {
      out.assign(o.via.bin.ptr, o.via.bin.size);
    } else {
      out.assign(o.via.str.ptr, o.via.str.size);
    }
    return {};
  }

  caf::error u64(const object& o, const char* field, uint64_t& out) const {
    if (o.type != mt::POSITIVE_INTEGER) {
      return fail(std::string{field} + ": expected an unsigned integer");
    }
    out = o.via.u64;
    return {};
  }

  caf::error i64(const object& o, const char* field, int64_t& out) const {
    if (o.type == mt::POSITIVE_INTEGER) {
      if (o.via.u64 > static_cast<uint64_t>(INT64_MAX)) {
        return fail(std::string{field} + ": out of range");
      }
      out = static_cast<int64_t>(o.via.u64);
      return {};
    }
    if (o.type == mt::NEGATIVE_INTEGER) {
      out = o.via.i64;
      return {};
    }
    return fail(std::string{field} + ": expected an integer");
  }

  caf::error boolean(const object& o, const char* field, bool& out) const {
    if (o.type != mt::BOOLEAN) {
      return fail(std::string{field} + ": expected a boolean");
    }
    out = o.via.boolean;
    return {};
  }

  const object& root() const noexcept { return *o_; }

private:
  const char* msg_;
  const object* o_;
};

// Unpacks with limits; exceptions (malformed, limits) become errors.
template <class F>
caf::error unpack(const std::string& body, const char* msg, F&& f) {
  msgpack::object_handle oh;
  try {
    oh = msgpack::unpack(body.data(), body.size(), nullptr, nullptr,
                         msgpack::unpack_limit(max_items, max_items, max_str,
                                               max_bin, max_str, max_depth));
  } catch (const std::bad_alloc&) {
    return make_error(errc::invalid_argument, std::string{"cluster message "} +
                                                  msg + ": out of memory");
  } catch (const std::exception& e) {
    return make_error(errc::invalid_argument, std::string{"cluster message "} +
                                                  msg + ": malformed (" +
                                                  e.what() + ")");
  }
  reader rd{msg, oh.get()};
  return f(rd);
}

#define SHOAL_TRY(expr)                                                        \
  if (auto err_ = (expr))                                                      \
  return err_

void put_desc(packer& pk, const replica_desc& x) {
  pk.pack_array(5);
  pk.pack_uint64(x.id);
  put(pk, x.model);
  pk.pack_uint64(x.version);
  put(pk, x.device);
  pk.pack_uint64(x.memory_bytes);
}

caf::error get_desc(const reader& rd, const object& o, replica_desc& x) {
  const object* a = nullptr;
  SHOAL_TRY(rd.array(o, 5, "replica", a));
  SHOAL_TRY(rd.u64(a[0], "replica.id", x.id));
  SHOAL_TRY(rd.str(a[1], "replica.model", x.model));
  SHOAL_TRY(rd.u64(a[2], "replica.version", x.version));
  SHOAL_TRY(rd.str(a[3], "replica.device", x.device));
  SHOAL_TRY(rd.u64(a[4], "replica.memory_bytes", x.memory_bytes));
  return {};
}

// A node's GPUs: [[name, product, total, used, [[model, count], ...]], ...].
void put_devices(packer& pk, const std::vector<node_device>& devices) {
  pk.pack_array(static_cast<uint32_t>(devices.size()));
  for (auto& d : devices) {
    pk.pack_array(5);
    put(pk, d.name);
    put(pk, d.product);
    pk.pack_uint64(d.total_bytes);
    pk.pack_uint64(d.used_bytes);
    pk.pack_array(static_cast<uint32_t>(d.replicas.size()));
    for (auto& [m, n] : d.replicas) {
      pk.pack_array(2);
      put(pk, m);
      pk.pack_uint64(n);
    }
  }
}

caf::error get_devices(const reader& rd, const object& o,
                       std::vector<node_device>& out) {
  if (o.type != mt::ARRAY) {
    return rd.fail("devices: expected an array");
  }
  if (o.via.array.size > max_node_devices) {
    return rd.fail("devices: " + std::to_string(o.via.array.size) +
                   " devices, at most " + std::to_string(max_node_devices));
  }
  out.resize(o.via.array.size);
  for (uint32_t i = 0; i < o.via.array.size; ++i) {
    auto& d = out[i];
    const object* a = nullptr;
    SHOAL_TRY(rd.array(o.via.array.ptr[i], 5, "device", a));
    SHOAL_TRY(rd.str(a[0], "device.name", d.name));
    SHOAL_TRY(rd.str(a[1], "device.product", d.product));
    SHOAL_TRY(rd.u64(a[2], "device.total_bytes", d.total_bytes));
    SHOAL_TRY(rd.u64(a[3], "device.used_bytes", d.used_bytes));
    if (a[4].type != mt::ARRAY) {
      return rd.fail("device.replicas: expected an array");
    }
    if (a[4].via.array.size > max_device_replicas) {
      return rd.fail("device.replicas: at most " +
                     std::to_string(max_device_replicas) + " models");
    }
    d.replicas.resize(a[4].via.array.size);
    for (uint32_t j = 0; j < a[4].via.array.size; ++j) {
      const object* r = nullptr;
      SHOAL_TRY(rd.array(a[4].via.array.ptr[j], 2, "device.replicas", r));
      SHOAL_TRY(rd.str(r[0], "device.replicas.model", d.replicas[j].first));
      SHOAL_TRY(rd.u64(r[1], "device.replicas.count", d.replicas[j].second));
    }
  }
  return {};
}

void put_tensor(packer& pk, const tensor& t) {
  pk.pack_array(4);
  put(pk, t.name);
  pk.pack_uint8(static_cast<uint8_t>(t.type));
  pk.pack_array(static_cast<uint32_t>(t.shape.size()));
  for (auto d : t.shape) {
    pk.pack_uint64(d);
  }
  put_bin(pk, t.data.data(), t.data.size());
}

caf::error get_tensor(const reader& rd, const object& o, tensor& t) {
  const object* a = nullptr;
  SHOAL_TRY(rd.array(o, 4, "tensor", a));
  SHOAL_TRY(rd.str(a[0], "tensor.name", t.name));
  uint64_t type = 0;
  SHOAL_TRY(rd.u64(a[1], "tensor.dtype", type));
  t.type = static_cast<dtype>(type);
  if (type > 255 || dtype_size(t.type) == 0) {
    return rd.fail("tensor.dtype: unknown dtype " + std::to_string(type));
  }
  if (a[2].type != mt::ARRAY || a[2].via.array.size > 8) {
    return rd.fail("tensor.shape: expected at most 8 dimensions");
  }
  t.shape.resize(a[2].via.array.size);
  for (uint32_t i = 0; i < a[2].via.array.size; ++i) {
    SHOAL_TRY(rd.u64(a[2].via.array.ptr[i], "tensor.shape", t.shape[i]));
  }
  if (a[3].type != mt::BIN) {
    return rd.fail("tensor.data: expected bin");
  }
  auto n = t.element_count();
  if (!n || *n > max_bin || *n * dtype_size(t.type) != a[3].via.bin.size) {
    return rd.fail("tensor.data: size does not match shape and dtype");
  }
  t.data.assign(a[3].via.bin.ptr, a[3].via.bin.ptr + a[3].via.bin.size);
  return {};
}

// spawn and spawn_fail have one shape: [model, version, reason].
template <class T>
void put_model_reason(const T& x, std::string& out) {
  string_writer w{out};
  packer pk{w};
  pk.pack_array(3);
  put(pk, x.model);
  pk.pack_uint64(x.version);
  put(pk, x.reason);
}

template <class T>
caf::error get_model_reason(const std::string& body, const char* msg, T& x) {
  return unpack(body, msg, [&](const reader& rd) -> caf::error {
    const object* a = nullptr;
    SHOAL_TRY(rd.array(rd.root(), 3, msg, a));
    SHOAL_TRY(rd.str(a[0], "model", x.model));
    SHOAL_TRY(rd.u64(a[1], "version", x.version));
    return rd.str(a[2], "reason", x.reason);
  });
}

template <class Body>
caf::error send_body(node_link& link, const std::string& peer, const Body& x) {
  std::string body;
  encode(x, body);
  return link.send(peer, to_string(op_of(x)), std::move(body));
}

} // namespace

std::string_view to_string(cluster_op op) noexcept {
  switch (op) {
  case cluster_op::spawn:
    return "spawn";
  case cluster_op::ready:
    return "ready";
  case cluster_op::spawn_fail:
    return "spawn_fail";
  case cluster_op::retire:
    return "retire";
  case cluster_op::replica_down:
    return "replica_down";
  case cluster_op::exec:
    return "exec";
  case cluster_op::done:
    return "done";
  case cluster_op::drain:
    return "drain";
  case cluster_op::leave:
    return "leave";
  case cluster_op::devices:
    return "devices";
  case cluster_op::progress:
    return "progress";
  case cluster_op::cancel:
    return "cancel";
  }
  return "?";
}

std::optional<cluster_op> parse_cluster_op(std::string_view name) noexcept {
  // Every op, in declaration order; to_string's switch keeps the names.
  for (auto i = static_cast<uint8_t>(cluster_op::spawn);
       i <= static_cast<uint8_t>(cluster_op::cancel); ++i) {
    auto op = static_cast<cluster_op>(i);
    if (to_string(op) == name) {
      return op;
    }
  }
  return std::nullopt;
}

void encode(const worker_hello& x, std::string& out) {
  string_writer w{out};
  packer pk{w};
  pk.pack_array(8);
  put(pk, x.role);
  pk.pack_map(static_cast<uint32_t>(x.labels.size()));
  for (auto& [k, v] : x.labels) {
    put(pk, k);
    put(pk, v);
  }
  pk.pack_uint64(x.memory_bytes);
  if (x.draining) {
    pk.pack_true();
  } else {
    pk.pack_false();
  }
  put(pk, x.metrics_target);
  pk.pack_array(static_cast<uint32_t>(x.replicas.size()));
  for (auto& r : x.replicas) {
    put_desc(pk, r);
  }
  pk.pack_array(static_cast<uint32_t>(x.cached.size()));
  for (auto& [m, v] : x.cached) {
    pk.pack_array(2);
    put(pk, m);
    pk.pack_uint64(v);
  }
  put_devices(pk, x.devices);
}

caf::error decode(const std::string& body, worker_hello& x) {
  return unpack(body, "hello", [&](const reader& rd) -> caf::error {
    const object* a = nullptr;
    SHOAL_TRY(rd.array(rd.root(), 7, "hello", a));
    SHOAL_TRY(rd.str(a[0], "role", x.role));
    if (a[1].type != mt::MAP) {
      return rd.fail("labels: expected a map");
    }
    x.labels.clear();
    for (uint32_t i = 0; i < a[1].via.map.size; ++i) {
      std::string k, v;
      SHOAL_TRY(rd.str(a[1].via.map.ptr[i].key, "labels", k));
      SHOAL_TRY(rd.str(a[1].via.map.ptr[i].val, "labels", v));
      x.labels.emplace_back(std::move(k), std::move(v));
    }
    SHOAL_TRY(rd.u64(a[2], "memory_bytes", x.memory_bytes));
    SHOAL_TRY(rd.boolean(a[3], "draining", x.draining));
    SHOAL_TRY(rd.str(a[4], "metrics_target", x.metrics_target));
    if (a[5].type != mt::ARRAY) {
      return rd.fail("replicas: expected an array");
    }
    x.replicas.resize(a[5].via.array.size);
    for (uint32_t i = 0; i < a[5].via.array.size; ++i) {
      SHOAL_TRY(get_desc(rd, a[5].via.array.ptr[i], x.replicas[i]));
    }
    if (a[6].type != mt::ARRAY) {
      return rd.fail("cached: expected an array");
    }
    x.cached.resize(a[6].via.array.size);
    for (uint32_t i = 0; i < a[6].via.array.size; ++i) {
      const object* c = nullptr;
      SHOAL_TRY(rd.array(a[6].via.array.ptr[i], 2, "cached", c));
      SHOAL_TRY(rd.str(c[0], "cached.model", x.cached[i].first));
      SHOAL_TRY(rd.u64(c[1], "cached.version", x.cached[i].second));
    }
    // Workers older than the devices field send 7 items.
    x.devices.clear();
    if (rd.root().via.array.size > 7) {
      SHOAL_TRY(get_devices(rd, a[7], x.devices));
    }
    return {};
  });
}

void encode(const spawn_msg& x, std::string& out) {
  put_model_reason(x, out);
}

caf::error decode(const std::string& body, spawn_msg& x) {
  return get_model_reason(body, "spawn", x);
}

void encode(const spawn_fail_msg& x, std::string& out) {
  put_model_reason(x, out);
}

caf::error decode(const std::string& body, spawn_fail_msg& x) {
  return get_model_reason(body, "spawn_fail", x);
}

void encode(const retire_msg& x, std::string& out) {
  string_writer w{out};
  packer pk{w};
  pk.pack_array(3);
  pk.pack_uint64(x.replica);
  put(pk, x.model);
  pk.pack_uint64(x.version);
}

caf::error decode(const std::string& body, retire_msg& x) {
  return unpack(body, "retire", [&](const reader& rd) -> caf::error {
    const object* a = nullptr;
    SHOAL_TRY(rd.array(rd.root(), 3, "retire", a));
    SHOAL_TRY(rd.u64(a[0], "replica", x.replica));
    SHOAL_TRY(rd.str(a[1], "model", x.model));
    return rd.u64(a[2], "version", x.version);
  });
}

void encode(const replica_desc& x, std::string& out) {
  string_writer w{out};
  packer pk{w};
  put_desc(pk, x);
}

caf::error decode(const std::string& body, replica_desc& x) {
  return unpack(body, "ready", [&](const reader& rd) -> caf::error {
    return get_desc(rd, rd.root(), x);
  });
}

void encode(const replica_down_msg& x, std::string& out) {
  string_writer w{out};
  packer pk{w};
  pk.pack_array(2);
  pk.pack_uint64(x.replica);
  put(pk, x.reason);
}

caf::error decode(const std::string& body, replica_down_msg& x) {
  return unpack(body, "replica_down", [&](const reader& rd) -> caf::error {
    const object* a = nullptr;
    SHOAL_TRY(rd.array(rd.root(), 2, "replica_down", a));
    SHOAL_TRY(rd.u64(a[0], "replica", x.replica));
    return rd.str(a[1], "reason", x.reason);
  });
}

void encode(const exec_msg& x, std::string& out) {
  string_writer w{out};
  packer pk{w};
  auto now = now_ns();
  pk.pack_array(2);
  pk.pack_uint64(x.replica);
  pk.pack_array(static_cast<uint32_t>(x.items.size()));
  for (auto& it : x.items) {
    pk.pack_array(5);
    pk.pack_uint64(it.ticket);
    pk.pack_uint64(it.rows);
    // Time left (0: no deadline; an expired one stays expired: 1 ns).
    pk.pack_int64(
        it.deadline_ns == 0 ? 0 : std::max<int64_t>(1, it.deadline_ns - now));
    pk.pack_int64(it.sent_ns == 0 ? 0 : now - it.sent_ns);
    pk.pack_array(static_cast<uint32_t>(it.inputs.size()));
    for (auto& t : it.inputs) {
      put_tensor(pk, t);
    }
  }
}

caf::error decode(const std::string& body, exec_msg& x) {
  return unpack(body, "exec", [&](const reader& rd) -> caf::error {
    auto now = now_ns();
    const object* a = nullptr;
    SHOAL_TRY(rd.array(rd.root(), 2, "exec", a));
    SHOAL_TRY(rd.u64(a[0], "replica", x.replica));
    if (a[1].type != mt::ARRAY) {
      return rd.fail("items: expected an array");
    }
    x.items.resize(a[1].via.array.size);
    for (uint32_t i = 0; i < a[1].via.array.size; ++i) {
      auto& it = x.items[i];
      const object* e = nullptr;
      SHOAL_TRY(rd.array(a[1].via.array.ptr[i], 5, "item", e));
      SHOAL_TRY(rd.u64(e[0], "item.ticket", it.ticket));
      SHOAL_TRY(rd.u64(e[1], "item.rows", it.rows));
      int64_t left = 0, age = 0;
      SHOAL_TRY(rd.i64(e[2], "item.deadline", left));
      SHOAL_TRY(rd.i64(e[3], "item.age", age));
      it.deadline_ns = left <= 0 ? 0 : now + left;
      it.sent_ns = now - std::max<int64_t>(0, age);
      if (e[4].type != mt::ARRAY || e[4].via.array.size > 64) {
        return rd.fail("item.inputs: expected at most 64 tensors");
      }
      it.inputs.resize(e[4].via.array.size);
      for (uint32_t j = 0; j < e[4].via.array.size; ++j) {
        SHOAL_TRY(get_tensor(rd, e[4].via.array.ptr[j], it.inputs[j]));
      }
    }
    return {};
  });
}

void encode(const done_msg& x, std::string& out) {
  string_writer w{out};
  packer pk{w};
  pk.pack_array(2);
  pk.pack_uint64(x.replica);
  pk.pack_array(static_cast<uint32_t>(x.results.size()));
  for (auto& r : x.results) {
    pk.pack_array(7);
    pk.pack_uint64(r.ticket);
    pk.pack_uint8(r.code);
    put(pk, r.error);
    put_bin(pk, r.outputs_encoded.data(), r.outputs_encoded.size());
    pk.pack_uint64(r.queue_us);
    pk.pack_uint64(r.compute_us);
    pk.pack_uint32(r.batch_size);
  }
}

caf::error decode(const std::string& body, done_msg& x) {
  return unpack(body, "done", [&](const reader& rd) -> caf::error {
    const object* a = nullptr;
    SHOAL_TRY(rd.array(rd.root(), 2, "done", a));
    SHOAL_TRY(rd.u64(a[0], "replica", x.replica));
    if (a[1].type != mt::ARRAY) {
      return rd.fail("results: expected an array");
    }
    x.results.resize(a[1].via.array.size);
    for (uint32_t i = 0; i < a[1].via.array.size; ++i) {
      auto& r = x.results[i];
      const object* e = nullptr;
      SHOAL_TRY(rd.array(a[1].via.array.ptr[i], 7, "result", e));
      SHOAL_TRY(rd.u64(e[0], "result.ticket", r.ticket));
      uint64_t code = 0;
      SHOAL_TRY(rd.u64(e[1], "result.code", code));
      if (code > 255) {
        return rd.fail("result.code: out of range");
      }
      r.code = static_cast<uint8_t>(code);
      SHOAL_TRY(rd.str(e[2], "result.error", r.error));
      SHOAL_TRY(rd.bin(e[3], "result.outputs", r.outputs_encoded));
      SHOAL_TRY(rd.u64(e[4], "result.queue_us", r.queue_us));
      SHOAL_TRY(rd.u64(e[5], "result.compute_us", r.compute_us));
      uint64_t bs = 0;
      SHOAL_TRY(rd.u64(e[6], "result.batch_size", bs));
      r.batch_size = static_cast<uint32_t>(std::min<uint64_t>(bs, UINT32_MAX));
    }
    return {};
  });
}

void encode(const devices_msg& x, std::string& out) {
  string_writer w{out};
  packer pk{w};
  pk.pack_array(1);
  put_devices(pk, x.devices);
}

caf::error decode(const std::string& body, devices_msg& x) {
  return unpack(body, "devices", [&](const reader& rd) -> caf::error {
    const object* a = nullptr;
    SHOAL_TRY(rd.array(rd.root(), 1, "devices", a));
    return get_devices(rd, a[0], x.devices);
  });
}

void encode(const progress_msg& x, std::string& out) {
  string_writer w{out};
  packer pk{w};
  pk.pack_array(4);
  pk.pack_uint64(x.replica);
  pk.pack_array(static_cast<uint32_t>(x.tickets.size()));
  for (auto t : x.tickets) {
    pk.pack_uint64(t);
  }
  pk.pack_uint64(x.done);
  pk.pack_uint64(x.total);
}

caf::error decode(const std::string& body, progress_msg& x) {
  return unpack(body, "progress", [&](const reader& rd) -> caf::error {
    const object* a = nullptr;
    SHOAL_TRY(rd.array(rd.root(), 4, "progress", a));
    SHOAL_TRY(rd.u64(a[0], "replica", x.replica));
    if (a[1].type != mt::ARRAY) {
      return rd.fail("tickets: expected an array");
    }
    if (a[1].via.array.size > max_progress_tickets) {
      return rd.fail("tickets: " + std::to_string(a[1].via.array.size) +
                     " tickets, at most " +
                     std::to_string(max_progress_tickets));
    }
    x.tickets.resize(a[1].via.array.size);
    for (uint32_t i = 0; i < a[1].via.array.size; ++i) {
      SHOAL_TRY(rd.u64(a[1].via.array.ptr[i], "tickets", x.tickets[i]));
    }
    SHOAL_TRY(rd.u64(a[2], "done", x.done));
    SHOAL_TRY(rd.u64(a[3], "total", x.total));
    // Clients are promised done <= total; a body that breaks it is not
    // passed on.
    if (x.done > x.total) {
      return rd.fail("done: " + std::to_string(x.done) + " exceeds total " +
                     std::to_string(x.total));
    }
    return {};
  });
}

void encode(const cancel_msg& x, std::string& out) {
  string_writer w{out};
  packer pk{w};
  pk.pack_array(2);
  pk.pack_uint64(x.replica);
  pk.pack_uint64(x.ticket);
}

caf::error decode(const std::string& body, cancel_msg& x) {
  return unpack(body, "cancel", [&](const reader& rd) -> caf::error {
    const object* a = nullptr;
    SHOAL_TRY(rd.array(rd.root(), 2, "cancel", a));
    SHOAL_TRY(rd.u64(a[0], "replica", x.replica));
    return rd.u64(a[1], "ticket", x.ticket);
  });
}

void encode(const drain_msg&, std::string&) {
  // nop: the op is the message
}

caf::error decode(const std::string&, drain_msg&) {
  return {};
}

void encode(const leave_msg&, std::string&) {
  // nop: the op is the message
}

caf::error decode(const std::string&, leave_msg&) {
  return {};
}

caf::error send(node_link& link, const std::string& peer, const spawn_msg& x) {
  return send_body(link, peer, x);
}

caf::error send(node_link& link, const std::string& peer,
                const replica_desc& x) {
  return send_body(link, peer, x);
}

caf::error send(node_link& link, const std::string& peer,
                const spawn_fail_msg& x) {
  return send_body(link, peer, x);
}

caf::error send(node_link& link, const std::string& peer, const retire_msg& x) {
  return send_body(link, peer, x);
}

caf::error send(node_link& link, const std::string& peer,
                const replica_down_msg& x) {
  return send_body(link, peer, x);
}

caf::error send(node_link& link, const std::string& peer, const exec_msg& x) {
  return send_body(link, peer, x);
}

caf::error send(node_link& link, const std::string& peer, const done_msg& x) {
  return send_body(link, peer, x);
}

caf::error send(node_link& link, const std::string& peer, const drain_msg& x) {
  return send_body(link, peer, x);
}

caf::error send(node_link& link, const std::string& peer, const leave_msg& x) {
  return send_body(link, peer, x);
}

caf::error send(node_link& link, const std::string& peer,
                const devices_msg& x) {
  return send_body(link, peer, x);
}

caf::error send(node_link& link, const std::string& peer,
                const progress_msg& x) {
  return send_body(link, peer, x);
}

caf::error send(node_link& link, const std::string& peer, const cancel_msg& x) {
  return send_body(link, peer, x);
}

caf::error set_hello(node_link& link, const worker_hello& x) {
  std::string body;
  encode(x, body);
  return link.set_hello(std::move(body));
}

} // namespace shoal
