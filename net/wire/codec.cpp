#include "net/wire/codec.hpp"

#include <array>
#include <cstring>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include <msgpack.hpp>

#include "net/wire/error.hpp"
#include "net/wire/msgpack_util.hpp"

namespace shoal {

namespace {

namespace mt = msgpack::type;
using msgpack::object;

// -- limits ------------------------------------------------------------------

// The per-container limits bound each allocation, but not their sum: a frame
// of nothing but nils inside arrays costs ~24 bytes of msgpack::object per
// byte on the wire. Frames large enough to matter are pre-scanned against a
// budget of object slots first; smaller frames cannot exceed it.
size_t object_budget(const codec_limits& lim) {
  return lim.max_items * 64;
}

size_t prescan_threshold(const codec_limits& lim) {
  return std::min<size_t>(64u << 10, object_budget(lim));
}

msgpack::unpack_limit unpack_limits(const codec_limits& lim) {
  return msgpack::unpack_limit(lim.max_items, lim.max_items, lim.max_str_bytes,
                               lim.max_bin_bytes, lim.max_str_bytes,
                               lim.max_depth);
}

// Strings and bins point into the frame, which outlives the object tree, so
// tensor data is copied exactly once: into tensor::data.
bool reference_all(mt::object_type, size_t, void*) {
  return true;
}

caf::error invalid(std::string reason) {
  return make_error(errc::invalid_argument, std::move(reason));
}

// Error messages quote client-controlled bytes; keep them short and printable
// so a reason never carries 4 KiB of binary junk into logs.
std::string printable(std::string_view s) {
  constexpr size_t max_len = 48;
  std::string out;
  auto n = std::min(s.size(), max_len);
  out.reserve(n + 3);
  for (size_t i = 0; i < n; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  }
  if (s.size() > max_len) {
    out += "...";
  }
  return out;
}

std::string quoted(std::string_view s) {
  return "'" + printable(s) + "'";
}

caf::error type_mismatch(const std::string& path, std::string_view expected,
                         const object& got) {
  std::string r = path;
  r += ": expected ";
  r += expected;
  r += ", got ";
  r += msgpack_kind_name(got);
  return invalid(std::move(r));
}

std::string_view str_of(const object& o) {
  return {o.via.str.ptr, o.via.str.size};
}

// -- pre-scan / failure locator ----------------------------------------------

// Walks a frame without building anything, applying the same limits as the
// unpacker plus a total budget, and remembers where it stopped. Runs before
// unpacking large frames and after any failed unpack, so that the reason
// names the offending key instead of a bare "size overflow". It also picks
// up a top-level `id` on the way, so replies to broken frames can echo it.
class scan_visitor : public msgpack::null_visitor {
public:
  scan_visitor(const codec_limits& lim, std::string_view root)
      : lim_(lim), root_(root), budget_(object_budget(lim)) {
    stack_.reserve(std::min<size_t>(lim.max_depth, 64) + 1);
  }

  bool visit_positive_integer(uint64_t x) {
    if (at_top_level_id()) {
      id_ = request_id::of(x);
    }
    return true;
  }

  bool visit_str(const char* p, uint32_t n) {
    if (n > lim_.max_str_bytes) {
      return fail(path() + ": string of " + std::to_string(n) +
                  " bytes exceeds limit " + std::to_string(lim_.max_str_bytes));
    }
    if (!stack_.empty() && stack_.back().is_map && stack_.back().in_key) {
      stack_.back().key = std::string_view{p, n};
      stack_.back().has_key = true;
    } else if (at_top_level_id() && n <= lim_.max_id_bytes) {
      id_ = request_id::of(std::string{p, n});
    }
    return true;
  }

  bool visit_bin(const char*, uint32_t n) {
    if (n > lim_.max_bin_bytes) {
      return fail(path() + ": bin of " + std::to_string(n) +
                  " bytes exceeds limit " + std::to_string(lim_.max_bin_bytes));
    }
    return true;
  }

  bool visit_ext(const char*, uint32_t n) {
    if (n > lim_.max_str_bytes) {
      return fail(path() + ": ext of " + std::to_string(n) +
                  " bytes exceeds limit " + std::to_string(lim_.max_str_bytes));
    }
    return true;
  }

  bool start_array(uint32_t n) {
    if (n > lim_.max_items) {
      return fail(path() + ": array of " + std::to_string(n) +
                  " items exceeds limit " + std::to_string(lim_.max_items));
    }
    return push(false, n);
  }

  bool end_array_item() {
    ++stack_.back().index;
    return true;
  }

  bool end_array() {
    stack_.pop_back();
    return true;
  }

  bool start_map(uint32_t n) {
    if (n > lim_.max_items) {
      return fail(path() + ": map of " + std::to_string(n) +
                  " entries exceeds limit " + std::to_string(lim_.max_items));
    }
    return push(true, uint64_t{n} * 2);
  }

  bool start_map_key() {
    auto& f = stack_.back();
    f.in_key = true;
    f.has_key = false;
    return true;
  }

  bool end_map_key() {
    stack_.back().in_key = false;
    return true;
  }

  bool end_map_value() {
    auto& f = stack_.back();
    ++f.index;
    f.has_key = false;
    return true;
  }

  bool end_map() {
    stack_.pop_back();
    return true;
  }

  void parse_error(size_t, size_t error_offset) {
    fail(path() + ": malformed msgpack at byte " +
         std::to_string(error_offset));
  }

  void insufficient_bytes(size_t, size_t) {
    fail("truncated frame: ends inside " + path());
  }

  const std::string& reason() const { return reason_; }
  const request_id& id() const { return id_; }

  bool fail(std::string reason) {
    if (reason_.empty()) {
      reason_ = std::move(reason);
    }
    return false;
  }

  // Where the scan currently is, e.g. `inputs[0].shape`.
  std::string path() const {
    std::string p;
    for (auto& f : stack_) {
      if (f.is_map) {
        p += '.';
        if (f.has_key) {
          p += printable(f.key);
        } else {
          p += "<key>";
        }
      } else {
        p += '[';
        p += std::to_string(f.index);
        p += ']';
      }
    }
    if (p.empty()) {
      return std::string{root_};
    }
    if (p[0] == '.' && p.size() > 1 && p[1] != '<') {
      return p.substr(1);
    }
    return std::string{root_} + p;
  }

private:
  struct frame {
    bool is_map = false;
    bool in_key = false;
    bool has_key = false;
    uint32_t index = 0;
    std::string_view key;
  };

  bool at_top_level_id() const {
    return stack_.size() == 1 && stack_[0].is_map && !stack_[0].in_key &&
           stack_[0].has_key && stack_[0].key == "id";
  }

  bool push(bool is_map, uint64_t slots) {
    if (stack_.size() >= lim_.max_depth) {
      return fail(path() + ": nesting deeper than " +
                  std::to_string(lim_.max_depth));
    }
    objects_ += slots;
    if (objects_ > budget_) {
      return fail(path() + ": frame holds more than " +
                  std::to_string(budget_) + " values");
    }
    frame f;
    f.is_map = is_map;
    stack_.push_back(f);
    return true;
  }

  const codec_limits& lim_;
  std::string_view root_;
  uint64_t budget_;
  uint64_t objects_ = 1;
  std::vector<frame> stack_;
  std::string reason_;
  request_id id_;
};

// Runs the scanner; returns an empty string if the frame passes.
std::string scan(const uint8_t* data, size_t size, const codec_limits& lim,
                 std::string_view root, request_id* id_out) {
  scan_visitor v{lim, root};
  size_t off = 0;
  bool ok = false;
  try {
    ok = msgpack::parse(reinterpret_cast<const char*>(data), size, off, v);
  } catch (const std::bad_alloc&) {
    v.fail(std::string{root} + ": out of memory while scanning");
  } catch (const std::exception& e) {
    v.fail(v.path() + ": malformed msgpack (" + e.what() + ")");
  }
  if (id_out != nullptr && v.id().k != request_id::kind::nil) {
    *id_out = v.id();
  }
  if (!ok && v.reason().empty()) {
    return v.path() + ": malformed msgpack";
  }
  return v.reason();
}

// Unpacks one frame into a thread-local zone (kept between calls so the hot
// path does not allocate a fresh chunk per request). Sets `obj` and `off`.
class unpacked {
public:
  unpacked() : zone_(local_zone()) {}
  ~unpacked() { zone_.clear(); }
  unpacked(const unpacked&) = delete;
  unpacked& operator=(const unpacked&) = delete;

  // Returns an empty string on success, or the reason.
  std::string run(const uint8_t* data, size_t size, const codec_limits& lim,
                  std::string_view root, request_id* id_out) {
    if (size > lim.max_frame_bytes) {
      // The transport lets frames somewhat over the limit through so that
      // they get this answer; the scan (bounded by the same per-value
      // limits and budget as any rejected frame) finds their id for it.
      scan(data, size, lim, root, id_out);
      return "frame of " + std::to_string(size) + " bytes exceeds limit " +
             std::to_string(lim.max_frame_bytes);
    }
    if (size == 0) {
      return "truncated frame: empty";
    }
    if (size > prescan_threshold(lim)) {
      if (auto r = scan(data, size, lim, root, id_out); !r.empty()) {
        return r;
      }
    }
    bool failed = false;
    std::string what;
    try {
      bool referenced = false;
      off = 0;
      obj = msgpack::unpack(zone_, reinterpret_cast<const char*>(data), size,
                            off, referenced, reference_all, nullptr,
                            unpack_limits(lim));
    } catch (const std::bad_alloc&) {
      failed = true;
      what = "out of memory";
    } catch (const std::exception& e) {
      // unpack_error and its size_overflow family, type_error, ...
      failed = true;
      what = e.what();
    }
    if (!failed) {
      return {};
    }
    zone_.clear();
    auto r = scan(data, size, lim, root, id_out);
    if (r.empty()) {
      r = std::string{root} + ": malformed msgpack (" + what + ")";
    }
    return r;
  }

  object obj;
  size_t off = 0;

private:
  static msgpack::zone& local_zone() {
    thread_local msgpack::zone z;
    return z;
  }

  msgpack::zone& zone_;
};

// -- schema decoding ---------------------------------------------------------

template <size_t N>
int key_index(const std::array<std::string_view, N>& keys, std::string_view k) {
  for (size_t i = 0; i < N; ++i) {
    if (keys[i] == k) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

// Paths for error messages are passed as strings or, on hot paths, as
// callables, so that they are only rendered when an error is reported.
template <class Path>
std::string render(const Path& p) {
  if constexpr (std::is_invocable_v<const Path&>) {
    return p();
  } else {
    return std::string{p};
  }
}

// Collects the values of known keys of a map (unknown and non-string keys
// are ignored). A known key given twice is rejected: two `tenant` keys would
// otherwise mean whatever each reader picks.
template <size_t N, class Path>
caf::error collect(const object& map,
                   const std::array<std::string_view, N>& keys,
                   std::array<const object*, N>& vals, const Path& prefix) {
  vals.fill(nullptr);
  caf::error dup;
  for (uint32_t i = 0; i < map.via.map.size; ++i) {
    const auto& kv = map.via.map.ptr[i];
    if (kv.key.type != mt::STR) {
      continue;
    }
    auto idx = key_index(keys, str_of(kv.key));
    if (idx < 0) {
      continue;
    }
    if (vals[idx] != nullptr) {
      if (!dup) {
        dup = invalid(render(prefix) + "duplicate key " + quoted(keys[idx]));
      }
      continue;
    }
    vals[idx] = &kv.val;
  }
  return dup;
}

// nil counts as absent for optional keys: many clients serialize None/null.
bool absent(const object* o) {
  return o == nullptr || o->type == mt::NIL;
}

template <class Path>
caf::error get_str(const object& o, const Path& path, std::string& out) {
  if (o.type != mt::STR) {
    return type_mismatch(render(path), "str", o);
  }
  out.assign(o.via.str.ptr, o.via.str.size);
  return {};
}

template <class Path>
caf::error get_uint(const object& o, const Path& path, uint64_t& out) {
  if (o.type != mt::POSITIVE_INTEGER) {
    return type_mismatch(render(path), "uint", o);
  }
  out = o.via.u64;
  return {};
}

caf::error decode_id(const object* o, const codec_limits& lim,
                     request_id& out) {
  if (o == nullptr || o->type == mt::NIL) {
    return {};
  }
  if (o->type == mt::POSITIVE_INTEGER) {
    out = request_id::of(o->via.u64);
    return {};
  }
  if (o->type == mt::STR) {
    if (o->via.str.size > lim.max_id_bytes) {
      return invalid("id longer than " + std::to_string(lim.max_id_bytes) +
                     " bytes (" + std::to_string(o->via.str.size) + ")");
    }
    out = request_id::of(std::string{str_of(*o)});
    return {};
  }
  return type_mismatch("id", "uint64 or str", *o);
}

caf::error decode_version(const object* o, uint32_t& out) {
  if (absent(o)) {
    return {};
  }
  if (o->type != mt::POSITIVE_INTEGER) {
    return type_mismatch("v", "uint", *o);
  }
  auto v = o->via.u64;
  out = v > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(v);
  if (v != 1) {
    return invalid("unsupported protocol version " + std::to_string(v) +
                   " in v (expected 1)");
  }
  return {};
}

std::string elem_path(std::string_view field, size_t i) {
  std::string p{field};
  p += '[';
  p += std::to_string(i);
  p += ']';
  return p;
}

std::string shape_string(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) {
      s += ',';
    }
    s += std::to_string(shape[i]);
  }
  s += ']';
  return s;
}

constexpr std::array<std::string_view, 4> tensor_keys{"name", "dtype", "shape",
                                                      "data"};

caf::error decode_tensor(const object& o, std::string_view field, uint32_t idx,
                         const codec_limits& lim, tensor& out) {
  auto path = [&] { return elem_path(field, idx); };
  if (o.type != mt::MAP) {
    return type_mismatch(path(), "map (tensor)", o);
  }
  std::array<const object*, tensor_keys.size()> v;
  if (auto err = collect(o, tensor_keys, v, [&] { return path() + ": "; })) {
    return err;
  }
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] == nullptr) {
      return invalid(path() + "." + std::string{tensor_keys[i]} + ": required");
    }
  }
  if (auto err = get_str(
          *v[0], [&] { return path() + ".name"; }, out.name)) {
    return err;
  }
  const auto& dt = *v[1];
  if (dt.type != mt::STR) {
    return type_mismatch(path() + ".dtype", "str", dt);
  }
  auto parsed = parse_dtype(str_of(dt));
  if (!parsed) {
    return invalid("unknown dtype " + quoted(str_of(dt)) + " in " + path() +
                   ".dtype (f32 f16 bf16 f64 i8 i16 i32 i64 u8 bool)");
  }
  out.type = *parsed;
  const auto& sh = *v[2];
  if (sh.type != mt::ARRAY) {
    return invalid(path() + ".shape: expected array of uint, got " +
                   std::string{msgpack_kind_name(sh)});
  }
  if (sh.via.array.size > lim.max_rank) {
    return invalid(path() + ".shape: rank " +
                   std::to_string(sh.via.array.size) + " exceeds limit " +
                   std::to_string(lim.max_rank));
  }
  out.shape.resize(sh.via.array.size);
  uint64_t elems = 1;
  bool overflow = false;
  for (uint32_t i = 0; i < sh.via.array.size; ++i) {
    const auto& d = sh.via.array.ptr[i];
    if (d.type != mt::POSITIVE_INTEGER) {
      return invalid(path() + ".shape: expected array of uint, got " +
                     std::string{msgpack_kind_name(d)} + " at index " +
                     std::to_string(i));
    }
    out.shape[i] = d.via.u64;
    overflow = overflow || __builtin_mul_overflow(elems, d.via.u64, &elems);
  }
  uint64_t bytes = 0;
  if (overflow || __builtin_mul_overflow(elems, dtype_size(out.type), &bytes)) {
    return invalid(path() + ".shape: " + shape_string(out.shape) + " of " +
                   std::string{to_string(out.type)} +
                   " overflows uint64 bytes");
  }
  const auto& data = *v[3];
  if (data.type != mt::BIN) {
    return type_mismatch(path() + ".data", "bin", data);
  }
  if (data.via.bin.size != bytes) {
    return invalid(path() + ".data: " + std::to_string(data.via.bin.size) +
                   " bytes but shape " + shape_string(out.shape) + " of " +
                   std::string{to_string(out.type)} + " needs " +
                   std::to_string(bytes));
  }
  auto p = reinterpret_cast<const uint8_t*>(data.via.bin.ptr);
  out.data.assign(p, p + data.via.bin.size);
  return {};
}

caf::error decode_tensors(const object& o, std::string_view field,
                          const codec_limits& lim, std::vector<tensor>& out) {
  if (o.type != mt::ARRAY) {
    return type_mismatch(std::string{field}, "array of tensors", o);
  }
  auto n = o.via.array.size;
  if (n > lim.max_tensors) {
    return invalid(std::string{field} + ": " + std::to_string(n) +
                   " tensors exceed limit " + std::to_string(lim.max_tensors));
  }
  out.resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    if (auto err = decode_tensor(o.via.array.ptr[i], field, i, lim, out[i])) {
      return err;
    }
  }
  return {};
}

// -- encoding ----------------------------------------------------------------

// Adds key(): keys are short literals, written as one fixstr append instead
// of a header and a body.
class packer : public msgpack::packer<string_writer> {
public:
  explicit packer(string_writer& w)
      : msgpack::packer<string_writer>(w), buf_(w.buf) {}

  void key(std::string_view k) {
    char tmp[32];
    tmp[0] = static_cast<char>(0xa0 | k.size());
    std::memcpy(tmp + 1, k.data(), k.size());
    buf_.append(tmp, k.size() + 1);
  }

private:
  std::string& buf_;
};

void put_str(packer& pk, std::string_view s) {
  auto n = static_cast<uint32_t>(s.size());
  pk.pack_str(n);
  pk.pack_str_body(s.data(), n);
}

void put_id(packer& pk, const request_id& id) {
  switch (id.k) {
  case request_id::kind::num:
    pk.pack_uint64(id.num);
    break;
  case request_id::kind::str:
    put_str(pk, id.str);
    break;
  default:
    pk.pack_nil();
  }
}

void put_tensor(packer& pk, const tensor& t) {
  pk.pack_map(4);
  pk.key("name");
  put_str(pk, t.name);
  pk.key("dtype");
  put_str(pk, to_string(t.type));
  pk.key("shape");
  pk.pack_array(static_cast<uint32_t>(t.shape.size()));
  for (auto d : t.shape) {
    pk.pack_uint64(d);
  }
  pk.key("data");
  auto n = static_cast<uint32_t>(t.data.size());
  pk.pack_bin(n);
  pk.pack_bin_body(reinterpret_cast<const char*>(t.data.data()), n);
}

void put_tensors(packer& pk, const std::vector<tensor>& ts) {
  pk.pack_array(static_cast<uint32_t>(ts.size()));
  for (const auto& t : ts) {
    put_tensor(pk, t);
  }
}

size_t tensors_size_hint(const std::vector<tensor>& ts) {
  size_t n = 8;
  for (const auto& t : ts) {
    n += 40 + t.name.size() + 9 * t.shape.size() + t.data.size();
  }
  return n;
}

void put_io_specs(packer& pk, const std::vector<io_spec>& specs) {
  pk.pack_array(static_cast<uint32_t>(specs.size()));
  for (const auto& s : specs) {
    pk.pack_map(3);
    pk.key("name");
    put_str(pk, s.name);
    pk.key("dtype");
    put_str(pk, to_string(s.type));
    pk.key("shape");
    pk.pack_array(static_cast<uint32_t>(s.shape.size()));
    for (auto d : s.shape) {
      pk.pack_int64(d);
    }
  }
}

void put_model(packer& pk, const model_info& m) {
  pk.pack_map(m.has_progress ? 6 : 5);
  pk.key("name");
  put_str(pk, m.name);
  pk.key("versions");
  pk.pack_array(static_cast<uint32_t>(m.versions.size()));
  for (auto v : m.versions) {
    pk.pack_uint64(v);
  }
  pk.key("state");
  put_str(pk, m.state);
  pk.key("inputs");
  put_io_specs(pk, m.inputs);
  pk.key("outputs");
  put_io_specs(pk, m.outputs);
  if (m.has_progress) {
    pk.key("progress");
    pk.pack_map(2);
    pk.key("done");
    pk.pack_uint64(m.bytes_done);
    pk.key("total");
    pk.pack_uint64(m.bytes_total);
  }
}

// A map of model name to count (a node's or a device's replicas).
void put_counts(packer& pk,
                const std::vector<std::pair<std::string, uint64_t>>& counts) {
  pk.pack_map(static_cast<uint32_t>(counts.size()));
  for (const auto& [k, v] : counts) {
    put_str(pk, k);
    pk.pack_uint64(v);
  }
}

void put_node(packer& pk, const node_info& n) {
  pk.pack_map(6);
  pk.key("name");
  put_str(pk, n.name);
  pk.key("role");
  put_str(pk, n.role);
  pk.key("state");
  put_str(pk, n.state);
  pk.key("labels");
  pk.pack_map(static_cast<uint32_t>(n.labels.size()));
  for (const auto& [k, v] : n.labels) {
    put_str(pk, k);
    put_str(pk, v);
  }
  pk.key("replicas");
  put_counts(pk, n.replicas);
  pk.key("devices");
  pk.pack_array(static_cast<uint32_t>(n.devices.size()));
  for (const auto& d : n.devices) {
    pk.pack_map(5);
    pk.key("name");
    put_str(pk, d.name);
    pk.key("product");
    put_str(pk, d.product);
    pk.key("total_bytes");
    pk.pack_uint64(d.total_bytes);
    pk.key("used_bytes");
    pk.pack_uint64(d.used_bytes);
    pk.key("replicas");
    put_counts(pk, d.replicas);
  }
}

// -- reply decoding helpers --------------------------------------------------

caf::error decode_io_specs(const object& o, const std::string& path,
                           const codec_limits& lim, std::vector<io_spec>& out) {
  static constexpr std::array<std::string_view, 3> keys{"name", "dtype",
                                                        "shape"};
  if (o.type != mt::ARRAY) {
    return type_mismatch(path, "array of maps", o);
  }
  out.resize(o.via.array.size);
  for (uint32_t i = 0; i < o.via.array.size; ++i) {
    auto p = elem_path(path, i);
    const auto& e = o.via.array.ptr[i];
    if (e.type != mt::MAP) {
      return type_mismatch(p, "map", e);
    }
    std::array<const object*, keys.size()> v;
    if (auto err = collect(e, keys, v, p + ": ")) {
      return err;
    }
    auto& spec = out[i];
    if (!absent(v[0])) {
      if (auto err = get_str(*v[0], p + ".name", spec.name)) {
        return err;
      }
    }
    if (!absent(v[1])) {
      if (v[1]->type != mt::STR) {
        return type_mismatch(p + ".dtype", "str", *v[1]);
      }
      auto dt = parse_dtype(str_of(*v[1]));
      if (!dt) {
        return invalid("unknown dtype " + quoted(str_of(*v[1])) + " in " + p +
                       ".dtype");
      }
      spec.type = *dt;
    }
    if (!absent(v[2])) {
      const auto& sh = *v[2];
      if (sh.type != mt::ARRAY) {
        return type_mismatch(p + ".shape", "array of int", sh);
      }
      if (sh.via.array.size > lim.max_rank) {
        return invalid(p + ".shape: rank " + std::to_string(sh.via.array.size) +
                       " exceeds limit " + std::to_string(lim.max_rank));
      }
      spec.shape.resize(sh.via.array.size);
      for (uint32_t j = 0; j < sh.via.array.size; ++j) {
        const auto& d = sh.via.array.ptr[j];
        if (d.type == mt::POSITIVE_INTEGER && d.via.u64 <= INT64_MAX) {
          spec.shape[j] = static_cast<int64_t>(d.via.u64);
        } else if (d.type == mt::NEGATIVE_INTEGER && d.via.i64 == -1) {
          spec.shape[j] = -1;
        } else {
          return invalid(p + ".shape: expected array of int >= -1");
        }
      }
    }
  }
  return {};
}

caf::error decode_models(const object& o, const codec_limits& lim,
                         std::vector<model_info>& out) {
  static constexpr std::array<std::string_view, 6> keys{
      "name", "versions", "state", "inputs", "outputs", "progress"};
  if (o.type != mt::ARRAY) {
    return type_mismatch("models", "array of maps", o);
  }
  out.resize(o.via.array.size);
  for (uint32_t i = 0; i < o.via.array.size; ++i) {
    auto p = elem_path("models", i);
    const auto& e = o.via.array.ptr[i];
    if (e.type != mt::MAP) {
      return type_mismatch(p, "map", e);
    }
    std::array<const object*, keys.size()> v;
    if (auto err = collect(e, keys, v, p + ": ")) {
      return err;
    }
    auto& m = out[i];
    if (v[0] == nullptr) {
      return invalid(p + ".name: required");
    }
    if (auto err = get_str(*v[0], p + ".name", m.name)) {
      return err;
    }
    if (!absent(v[1])) {
      const auto& vs = *v[1];
      if (vs.type != mt::ARRAY) {
        return type_mismatch(p + ".versions", "array of uint", vs);
      }
      m.versions.resize(vs.via.array.size);
      for (uint32_t j = 0; j < vs.via.array.size; ++j) {
        if (auto err =
                get_uint(vs.via.array.ptr[j], p + ".versions", m.versions[j])) {
          return err;
        }
      }
    }
    if (!absent(v[2])) {
      if (auto err = get_str(*v[2], p + ".state", m.state)) {
        return err;
      }
    }
    if (!absent(v[3])) {
      if (auto err = decode_io_specs(*v[3], p + ".inputs", lim, m.inputs)) {
        return err;
      }
    }
    if (!absent(v[4])) {
      if (auto err = decode_io_specs(*v[4], p + ".outputs", lim, m.outputs)) {
        return err;
      }
    }
    if (!absent(v[5])) {
      static constexpr std::array<std::string_view, 2> pkeys{"done", "total"};
      std::array<const object*, pkeys.size()> pv;
      if (v[5]->type != mt::MAP) {
        return type_mismatch(p + ".progress", "map", *v[5]);
      }
      if (auto err = collect(*v[5], pkeys, pv, p + ".progress: ")) {
        return err;
      }
      m.has_progress = true;
      if (!absent(pv[0])) {
        if (auto err = get_uint(*pv[0], p + ".progress.done", m.bytes_done)) {
          return err;
        }
      }
      if (!absent(pv[1])) {
        if (auto err = get_uint(*pv[1], p + ".progress.total", m.bytes_total)) {
          return err;
        }
      }
    }
  }
  return {};
}

caf::error decode_counts(const object& m, const std::string& path,
                         std::vector<std::pair<std::string, uint64_t>>& out) {
  if (m.type != mt::MAP) {
    return type_mismatch(path, "map of uint", m);
  }
  out.resize(m.via.map.size);
  for (uint32_t j = 0; j < m.via.map.size; ++j) {
    const auto& kv = m.via.map.ptr[j];
    if (kv.key.type != mt::STR || kv.val.type != mt::POSITIVE_INTEGER) {
      return invalid(path + ": expected map of str to uint");
    }
    out[j] = {std::string{str_of(kv.key)}, kv.val.via.u64};
  }
  return {};
}

caf::error decode_devices(const object& o, const std::string& path,
                          std::vector<node_device>& out) {
  static constexpr std::array<std::string_view, 5> keys{
      "name", "product", "total_bytes", "used_bytes", "replicas"};
  if (o.type != mt::ARRAY) {
    return type_mismatch(path, "array of maps", o);
  }
  out.resize(o.via.array.size);
  for (uint32_t i = 0; i < o.via.array.size; ++i) {
    auto p = elem_path(path, i);
    const auto& e = o.via.array.ptr[i];
    if (e.type != mt::MAP) {
      return type_mismatch(p, "map", e);
    }
    std::array<const object*, keys.size()> v;
    if (auto err = collect(e, keys, v, p + ": ")) {
      return err;
    }
    auto& d = out[i];
    if (v[0] == nullptr) {
      return invalid(p + ".name: required");
    }
    if (auto err = get_str(*v[0], p + ".name", d.name)) {
      return err;
    }
    if (!absent(v[1])) {
      if (auto err = get_str(*v[1], p + ".product", d.product)) {
        return err;
      }
    }
    if (!absent(v[2])) {
      if (auto err = get_uint(*v[2], p + ".total_bytes", d.total_bytes)) {
        return err;
      }
    }
    if (!absent(v[3])) {
      if (auto err = get_uint(*v[3], p + ".used_bytes", d.used_bytes)) {
        return err;
      }
    }
    if (!absent(v[4])) {
      if (auto err = decode_counts(*v[4], p + ".replicas", d.replicas)) {
        return err;
      }
    }
  }
  return {};
}

caf::error decode_nodes(const object& o, std::vector<node_info>& out) {
  static constexpr std::array<std::string_view, 6> keys{
      "name", "role", "state", "labels", "replicas", "devices"};
  if (o.type != mt::ARRAY) {
    return type_mismatch("nodes", "array of maps", o);
  }
  out.resize(o.via.array.size);
  for (uint32_t i = 0; i < o.via.array.size; ++i) {
    auto p = elem_path("nodes", i);
    const auto& e = o.via.array.ptr[i];
    if (e.type != mt::MAP) {
      return type_mismatch(p, "map", e);
    }
    std::array<const object*, keys.size()> v;
    if (auto err = collect(e, keys, v, p + ": ")) {
      return err;
    }
    auto& n = out[i];
    if (v[0] == nullptr) {
      return invalid(p + ".name: required");
    }
    if (auto err = get_str(*v[0], p + ".name", n.name)) {
      return err;
    }
    if (!absent(v[1])) {
      if (auto err = get_str(*v[1], p + ".role", n.role)) {
        return err;
      }
    }
    if (!absent(v[2])) {
      if (auto err = get_str(*v[2], p + ".state", n.state)) {
        return err;
      }
    }
    if (!absent(v[3])) {
      const auto& m = *v[3];
      if (m.type != mt::MAP) {
        return type_mismatch(p + ".labels", "map of str", m);
      }
      n.labels.resize(m.via.map.size);
      for (uint32_t j = 0; j < m.via.map.size; ++j) {
        const auto& kv = m.via.map.ptr[j];
        if (kv.key.type != mt::STR || kv.val.type != mt::STR) {
          return invalid(p + ".labels: expected map of str to str");
        }
        n.labels[j] = {std::string{str_of(kv.key)},
                       std::string{str_of(kv.val)}};
      }
    }
    if (!absent(v[4])) {
      if (auto err = decode_counts(*v[4], p + ".replicas", n.replicas)) {
        return err;
      }
    }
    if (!absent(v[5])) {
      if (auto err = decode_devices(*v[5], p + ".devices", n.devices)) {
        return err;
      }
    }
  }
  return {};
}

caf::error decode_changes(const object& o, std::string_view key,
                          std::vector<catalog_change>& out) {
  static constexpr std::array<std::string_view, 3> keys{"model", "version",
                                                        "error"};
  std::string path{key};
  if (o.type != mt::ARRAY) {
    return type_mismatch(path, "array of maps", o);
  }
  out.resize(o.via.array.size);
  for (uint32_t i = 0; i < o.via.array.size; ++i) {
    auto p = elem_path(path, i);
    const auto& e = o.via.array.ptr[i];
    if (e.type != mt::MAP) {
      return type_mismatch(p, "map", e);
    }
    std::array<const object*, keys.size()> v;
    if (auto err = collect(e, keys, v, p + ": ")) {
      return err;
    }
    if (v[0] == nullptr || v[1] == nullptr) {
      return invalid(p + ": model and version are required");
    }
    auto& c = out[i];
    if (auto err = get_str(*v[0], p + ".model", c.model)) {
      return err;
    }
    if (auto err = get_uint(*v[1], p + ".version", c.version)) {
      return err;
    }
    if (!absent(v[2])) {
      if (auto err = get_str(*v[2], p + ".error", c.error)) {
        return err;
      }
    }
  }
  return {};
}

caf::error decode_timing(const object& o, timing& out) {
  static constexpr std::array<std::string_view, 3> keys{"queue", "compute",
                                                        "total"};
  if (o.type != mt::MAP) {
    return type_mismatch("timing_us", "map", o);
  }
  std::array<const object*, keys.size()> v;
  if (auto err = collect(o, keys, v, "timing_us: ")) {
    return err;
  }
  uint64_t* dst[] = {&out.queue_us, &out.compute_us, &out.total_us};
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!absent(v[i])) {
      if (auto err = get_uint(
              *v[i], [&] { return "timing_us." + std::string{keys[i]}; },
              *dst[i])) {
        return err;
      }
    }
  }
  return {};
}

std::optional<reply_source> parse_source(std::string_view s) {
  for (auto x :
       {reply_source::cache, reply_source::executor, reply_source::coalesced}) {
    if (to_string(x) == s) {
      return x;
    }
  }
  return std::nullopt;
}

enum request_key : size_t {
  rq_v,
  rq_id,
  rq_op,
  rq_model,
  rq_version,
  rq_inputs,
  rq_priority,
  rq_timeout_ms,
  rq_cache,
  rq_tenant,
  rq_node,
  rq_job,
  rq_progress,
  rq_stream,
  rq_limit,
  rq_after,
  rq_count,
};

constexpr std::array<std::string_view, rq_count> request_keys{
    "v",        "id",         "op",    "model",  "version", "inputs",
    "priority", "timeout_ms", "cache", "tenant", "node",    "job",
    "progress", "stream",     "limit", "after"};

enum reply_key : size_t {
  rp_v,
  rp_id,
  rp_status,
  rp_error,
  rp_outputs,
  rp_source,
  rp_model,
  rp_version,
  rp_timing,
  rp_node,
  rp_models,
  rp_nodes,
  rp_added,
  rp_removed,
  rp_refused,
  rp_retry_after,
  rp_job,
  rp_state,
  rp_progress,
  rp_created,
  rp_updated,
  rp_jobs,
  rp_event,
  rp_count,
};

constexpr std::array<std::string_view, rp_count> reply_keys{
    "v",          "id",      "status",   "error",
    "outputs",    "source",  "model",    "version",
    "timing_us",  "node",    "models",   "nodes",
    "added",      "removed", "refused",  "retry_after_ms",
    "job",        "state",   "progress", "created_ms",
    "updated_ms", "jobs",    "event"};

// Parses a request or reply frame into its top-level map, and reads first
// what every later failure is answered with: the id and the protocol
// version. `what` names the message in errors.
template <size_t N>
caf::error open_map(unpacked& u, const uint8_t* data, size_t size,
                    const codec_limits& limits, const char* what,
                    const std::array<std::string_view, N>& keys, size_t v_key,
                    size_t id_key, std::array<const object*, N>& v,
                    request_id& id, uint32_t& version) {
  if (auto r = u.run(data, size, limits, what, &id); !r.empty()) {
    return invalid(std::move(r));
  }
  const auto& root = u.obj;
  if (root.type != mt::MAP) {
    return invalid(std::string{what} + ": not a msgpack map (got " +
                   std::string{msgpack_kind_name(root)} + ")");
  }
  auto dup = collect(root, keys, v, "");
  if (auto err = decode_id(v[id_key], limits, id)) {
    return err;
  }
  if (auto err = decode_version(v[v_key], version)) {
    return err;
  }
  if (dup) {
    return dup;
  }
  if (u.off != size) {
    return invalid("trailing bytes after " + std::string{what} + " (" +
                   std::to_string(size - u.off) + " bytes)");
  }
  return {};
}

// A str naming one of an enum's values; `kind` and `choices` (may be
// empty) word the error for an unknown one.
template <class E, class Parse>
caf::error get_enum(const object& o, const char* field, Parse parse,
                    const char* kind, std::string_view choices, E& out) {
  if (o.type != mt::STR) {
    return type_mismatch(field, "str", o);
  }
  auto x = parse(str_of(o));
  if (!x) {
    auto why =
        std::string{field} + ": unknown " + kind + " " + quoted(str_of(o));
    if (!choices.empty()) {
      why += " (" + std::string{choices} + ")";
    }
    return invalid(std::move(why));
  }
  out = *x;
  return {};
}

template <class E, class Parse>
caf::error get_opt_enum(const object* o, const char* field, Parse parse,
                        const char* kind, std::string_view choices, E& out) {
  return absent(o) ? caf::error{}
                   : get_enum(*o, field, parse, kind, choices, out);
}

caf::error get_opt_str(const object* o, const char* field, std::string& out) {
  return absent(o) ? caf::error{} : get_str(*o, field, out);
}

caf::error get_opt_uint(const object* o, const char* field,
                        std::optional<uint64_t>& out) {
  if (absent(o)) {
    return {};
  }
  uint64_t x = 0;
  if (auto err = get_uint(*o, field, x)) {
    return err;
  }
  out = x;
  return {};
}

caf::error get_priority(const object* o, uint8_t& out) {
  std::optional<uint64_t> x;
  if (auto err = get_opt_uint(o, "priority", x)) {
    return err;
  }
  if (x && *x > 9) {
    return invalid("priority: " + std::to_string(*x) + " out of range 0..9");
  }
  if (x) {
    out = static_cast<uint8_t>(*x);
  }
  return {};
}

caf::error get_opt_bool(const object* o, const char* field, bool& out) {
  if (absent(o)) {
    return {};
  }
  if (o->type != mt::BOOLEAN) {
    return type_mismatch(field, "bool", *o);
  }
  out = o->via.boolean;
  return {};
}

// The keys of the job ops (and `stream`, which any request may set).
caf::error decode_job_fields(const std::array<const object*, rq_count>& v,
                             const codec_limits& limits, request& out) {
  if (auto err = get_opt_str(v[rq_job], "job", out.job)) {
    return err;
  }
  if (out.job.size() > limits.max_id_bytes) {
    return invalid("job longer than " + std::to_string(limits.max_id_bytes) +
                   " bytes (" + std::to_string(out.job.size()) + ")");
  }
  if (auto err = get_opt_bool(v[rq_progress], "progress", out.progress)) {
    return err;
  }
  if (auto err = get_opt_bool(v[rq_stream], "stream", out.stream)) {
    return err;
  }
  std::optional<uint64_t> limit;
  if (auto err = get_opt_uint(v[rq_limit], "limit", limit)) {
    return err;
  }
  out.limit = limit.value_or(0);
  return get_opt_str(v[rq_after], "after", out.after);
}

// The fields of a request after its id and version, in the order their
// errors are reported.
caf::error decode_request_fields(const std::array<const object*, rq_count>& v,
                                 const codec_limits& limits, request& out) {
  if (auto err = get_opt_enum(
          v[rq_op], "op", parse_op, "op",
          "infer, ping, models, status, load, unload, drain, reload, "
          "submit, job, wait, cancel, jobs",
          out.op)) {
    return err;
  }
  if (auto err = get_opt_str(v[rq_model], "model", out.model)) {
    return err;
  }
  if (auto err = get_opt_uint(v[rq_version], "version", out.version)) {
    return err;
  }
  if (!absent(v[rq_inputs])) {
    if (auto err =
            decode_tensors(*v[rq_inputs], "inputs", limits, out.inputs)) {
      return err;
    }
  }
  if (auto err = get_priority(v[rq_priority], out.priority)) {
    return err;
  }
  if (auto err = get_opt_uint(v[rq_timeout_ms], "timeout_ms", out.timeout_ms)) {
    return err;
  }
  if (auto err = get_opt_enum(v[rq_cache], "cache", parse_cache_mode, "mode",
                              "use, bypass or refresh", out.cache)) {
    return err;
  }
  if (auto err = get_opt_str(v[rq_tenant], "tenant", out.tenant)) {
    return err;
  }
  if (auto err = get_opt_str(v[rq_node], "node", out.node)) {
    return err;
  }
  return decode_job_fields(v, limits, out);
}

// The ops that name a model.
caf::error check_model_given(const request& r) {
  switch (r.op) {
  case op_kind::infer:
  case op_kind::submit:
  case op_kind::load:
  case op_kind::unload:
    if (r.model.empty()) {
      return invalid("model: required for op " + std::string{to_string(r.op)});
    }
    return {};
  case op_kind::job:
  case op_kind::wait:
    if (r.job.empty()) {
      return invalid("job: required for op " + std::string{to_string(r.op)});
    }
    return {};
  case op_kind::cancel:
    if (r.job.empty() && r.id.k == request_id::kind::nil) {
      return invalid("cancel: needs a job, or the id of an open request");
    }
    return {};
  case op_kind::jobs:
  case op_kind::ping:
  case op_kind::models:
  case op_kind::status:
  case op_kind::drain:
  case op_kind::reload:
    return {};
  }
  return {};
}

// How many keys put_job writes.
uint32_t job_keys(const job_info& j) {
  return !j.job.empty() + !j.state.empty() + j.has_progress +
         (j.created_ms > 0) + (j.updated_ms > 0);
}

void put_progress(packer& pk, uint64_t done, uint64_t total) {
  pk.key("progress");
  pk.pack_map(2);
  pk.key("done");
  pk.pack_uint64(done);
  pk.key("total");
  pk.pack_uint64(total);
}

// A job's keys, each when set (inside a reply map, or a `jobs` entry).
void put_job(packer& pk, const job_info& j) {
  if (!j.job.empty()) {
    pk.key("job");
    put_str(pk, j.job);
  }
  if (!j.state.empty()) {
    pk.key("state");
    put_str(pk, j.state);
  }
  if (j.has_progress) {
    put_progress(pk, j.done, j.total);
  }
  if (j.created_ms > 0) {
    pk.key("created_ms");
    pk.pack_uint64(j.created_ms);
  }
  if (j.updated_ms > 0) {
    pk.key("updated_ms");
    pk.pack_uint64(j.updated_ms);
  }
}

void put_jobs(packer& pk, const std::vector<job_info>& jobs) {
  pk.key("jobs");
  pk.pack_array(static_cast<uint32_t>(jobs.size()));
  for (auto& j : jobs) {
    pk.pack_map(job_keys(j) + !j.model.empty() + j.version.has_value());
    put_job(pk, j);
    if (!j.model.empty()) {
      pk.key("model");
      put_str(pk, j.model);
    }
    if (j.version) {
      pk.key("version");
      pk.pack_uint64(*j.version);
    }
  }
}

// How many keys encode_reply writes.
uint32_t reply_map_size(const reply& r) {
  bool has_outputs = !r.outputs_encoded.empty() || !r.outputs.empty();
  return 3 + !r.error.empty() + has_outputs + (r.source != reply_source::none) +
         !r.model.empty() + r.version.has_value() + r.timing_us.has_value() +
         !r.node.empty() + r.has_models + r.has_nodes + 3 * r.has_changes +
         r.retry_after_ms.has_value() + job_keys(r.job) + r.has_jobs +
         !r.event.empty();
}

// A `reload` reply's list of model versions.
void put_changes(packer& pk, std::string_view key,
                 const std::vector<catalog_change>& xs) {
  pk.key(key);
  pk.pack_array(static_cast<uint32_t>(xs.size()));
  for (const auto& c : xs) {
    pk.pack_map(c.error.empty() ? 2 : 3);
    pk.key("model");
    put_str(pk, c.model);
    pk.key("version");
    pk.pack_uint64(c.version);
    if (!c.error.empty()) {
      pk.key("error");
      put_str(pk, c.error);
    }
  }
}

// A reply's timing, node, models and nodes, after its other keys.
void put_reply_tail(packer& pk, const reply& r) {
  if (r.timing_us) {
    pk.key("timing_us");
    pk.pack_map(3);
    pk.key("queue");
    pk.pack_uint64(r.timing_us->queue_us);
    pk.key("compute");
    pk.pack_uint64(r.timing_us->compute_us);
    pk.key("total");
    pk.pack_uint64(r.timing_us->total_us);
  }
  if (!r.node.empty()) {
    pk.key("node");
    put_str(pk, r.node);
  }
  if (r.has_models) {
    pk.key("models");
    pk.pack_array(static_cast<uint32_t>(r.models.size()));
    for (const auto& m : r.models) {
      put_model(pk, m);
    }
  }
  if (r.has_nodes) {
    pk.key("nodes");
    pk.pack_array(static_cast<uint32_t>(r.nodes.size()));
    for (const auto& x : r.nodes) {
      put_node(pk, x);
    }
  }
  if (r.has_changes) {
    put_changes(pk, "added", r.added);
    put_changes(pk, "removed", r.removed);
    put_changes(pk, "refused", r.refused);
  }
  if (r.retry_after_ms) {
    pk.key("retry_after_ms");
    pk.pack_uint64(*r.retry_after_ms);
  }
  put_job(pk, r.job);
  if (r.has_jobs) {
    put_jobs(pk, r.jobs);
  }
  if (!r.event.empty()) {
    pk.key("event");
    put_str(pk, r.event);
  }
}

// The keys of one job (a reply's, or an entry of `jobs`), by position:
// job, state, progress, created_ms, updated_ms.
caf::error decode_job(const object* const* v, const std::string& path,
                      job_info& out) {
  if (auto err = get_opt_str(v[0], "job", out.job)) {
    return err;
  }
  if (auto err = get_opt_str(v[1], "state", out.state)) {
    return err;
  }
  if (!absent(v[2])) {
    static constexpr std::array<std::string_view, 2> keys{"done", "total"};
    if (v[2]->type != mt::MAP) {
      return type_mismatch(path + "progress", "map", *v[2]);
    }
    std::array<const object*, keys.size()> p;
    if (auto err = collect(*v[2], keys, p, "progress: ")) {
      return err;
    }
    for (size_t i = 0; i < 2; ++i) {
      if (!absent(p[i])) {
        if (auto err =
                get_uint(*p[i], path + "progress." + std::string{keys[i]},
                         i == 0 ? out.done : out.total)) {
          return err;
        }
      }
    }
    out.has_progress = true;
  }
  for (size_t i = 3; i < 5; ++i) {
    if (!absent(v[i])) {
      if (auto err =
              get_uint(*v[i], path + (i == 3 ? "created_ms" : "updated_ms"),
                       i == 3 ? out.created_ms : out.updated_ms)) {
        return err;
      }
    }
  }
  return {};
}

caf::error decode_jobs(const object& o, std::vector<job_info>& out) {
  static constexpr std::array<std::string_view, 7> keys{
      "job",        "state", "progress", "created_ms",
      "updated_ms", "model", "version"};
  if (o.type != mt::ARRAY) {
    return type_mismatch("jobs", "array of maps", o);
  }
  out.resize(o.via.array.size);
  for (uint32_t i = 0; i < o.via.array.size; ++i) {
    auto p = elem_path("jobs", i);
    const auto& e = o.via.array.ptr[i];
    if (e.type != mt::MAP) {
      return type_mismatch(p, "map", e);
    }
    std::array<const object*, keys.size()> v;
    if (auto err = collect(e, keys, v, p + ": ")) {
      return err;
    }
    if (auto err = decode_job(v.data(), p + ".", out[i])) {
      return err;
    }
    if (auto err = get_opt_str(v[5], "model", out[i].model)) {
      return err;
    }
    if (auto err = get_opt_uint(v[6], "version", out[i].version)) {
      return err;
    }
  }
  return {};
}

caf::error decode_reply_jobs(const std::array<const object*, rp_count>& v,
                             reply& out) {
  const object* job_keys[] = {v[rp_job], v[rp_state], v[rp_progress],
                              v[rp_created], v[rp_updated]};
  if (auto err = decode_job(job_keys, "", out.job)) {
    return err;
  }
  out.has_job = !out.job.job.empty() || !out.job.state.empty();
  if (!absent(v[rp_jobs])) {
    if (auto err = decode_jobs(*v[rp_jobs], out.jobs)) {
      return err;
    }
    out.has_jobs = true;
  }
  return get_opt_str(v[rp_event], "event", out.event);
}

// A reply's timing, node, models and nodes.
caf::error decode_reply_lists(const std::array<const object*, rp_count>& v,
                              const codec_limits& limits, reply& out) {
  if (!absent(v[rp_timing])) {
    timing t;
    if (auto err = decode_timing(*v[rp_timing], t)) {
      return err;
    }
    out.timing_us = t;
  }
  if (auto err = get_opt_str(v[rp_node], "node", out.node)) {
    return err;
  }
  if (auto err = get_opt_uint(v[rp_retry_after], "retry_after_ms",
                              out.retry_after_ms)) {
    return err;
  }
  if (!absent(v[rp_models])) {
    if (auto err = decode_models(*v[rp_models], limits, out.models)) {
      return err;
    }
    out.has_models = true;
  }
  if (!absent(v[rp_nodes])) {
    if (auto err = decode_nodes(*v[rp_nodes], out.nodes)) {
      return err;
    }
    out.has_nodes = true;
  }
  std::pair<size_t, std::vector<catalog_change>*> changes[] = {
      {rp_added, &out.added},
      {rp_removed, &out.removed},
      {rp_refused, &out.refused}};
  for (auto [key, dst] : changes) {
    if (!absent(v[key])) {
      if (auto err = decode_changes(*v[key], reply_keys[key], *dst)) {
        return err;
      }
      out.has_changes = true;
    }
  }
  return decode_reply_jobs(v, out);
}

// The fields of a reply after its id and version, in the order their
// errors are reported.
caf::error decode_reply_fields(const std::array<const object*, rp_count>& v,
                               const codec_limits& limits, reply& out) {
  if (v[rp_status] == nullptr) {
    return invalid("status: required");
  }
  if (auto err = get_enum(*v[rp_status], "status", parse_status, "status", "",
                          out.code)) {
    return err;
  }
  if (auto err = get_opt_str(v[rp_error], "error", out.error)) {
    return err;
  }
  if (!absent(v[rp_outputs])) {
    if (auto err =
            decode_tensors(*v[rp_outputs], "outputs", limits, out.outputs)) {
      return err;
    }
  }
  if (auto err = get_opt_enum(v[rp_source], "source", parse_source, "source",
                              "cache, executor or coalesced", out.source)) {
    return err;
  }
  if (auto err = get_opt_str(v[rp_model], "model", out.model)) {
    return err;
  }
  if (auto err = get_opt_uint(v[rp_version], "version", out.version)) {
    return err;
  }
  return decode_reply_lists(v, limits, out);
}

void put_request_jobs(packer& pk, const request& r) {
  if (!r.job.empty()) {
    pk.key("job");
    put_str(pk, r.job);
  }
  if (r.progress) {
    pk.key("progress");
    pk.pack_true();
  }
  if (r.stream) {
    pk.key("stream");
    pk.pack_true();
  }
  if (r.limit > 0) {
    pk.key("limit");
    pk.pack_uint64(r.limit);
  }
  if (!r.after.empty()) {
    pk.key("after");
    put_str(pk, r.after);
  }
}

} // namespace

// -- public API --------------------------------------------------------------

caf::error decode_request(const uint8_t* data, size_t size,
                          const codec_limits& limits, request& out) {
  out = request{};
  unpacked u;
  std::array<const object*, rq_count> v;
  if (auto err = open_map(u, data, size, limits, "request", request_keys, rq_v,
                          rq_id, v, out.id, out.v)) {
    return err;
  }
  if (auto err = decode_request_fields(v, limits, out)) {
    return err;
  }
  return check_model_given(out);
}

void encode_tensors(const std::vector<tensor>& ts, std::string& out) {
  out.reserve(out.size() + tensors_size_hint(ts));
  string_writer w{out};
  packer pk{w};
  put_tensors(pk, ts);
}

void encode_reply(const reply& r, std::string& out) {
  bool has_outputs = !r.outputs_encoded.empty() || !r.outputs.empty();
  size_t hint = 128 + r.error.size() + r.outputs_encoded.size();
  if (r.outputs_encoded.empty()) {
    hint += tensors_size_hint(r.outputs);
  }
  out.reserve(out.size() + hint);
  string_writer w{out};
  packer pk{w};
  pk.pack_map(reply_map_size(r));
  pk.key("v");
  pk.pack_uint64(r.v);
  pk.key("id");
  put_id(pk, r.id);
  pk.key("status");
  put_str(pk, to_string(r.code));
  if (!r.error.empty()) {
    pk.key("error");
    put_str(pk, r.error);
  }
  if (has_outputs) {
    pk.key("outputs");
    if (!r.outputs_encoded.empty()) {
      out.append(r.outputs_encoded);
    } else {
      put_tensors(pk, r.outputs);
    }
  }
  if (r.source != reply_source::none) {
    pk.key("source");
    put_str(pk, to_string(r.source));
  }
  if (!r.model.empty()) {
    pk.key("model");
    put_str(pk, r.model);
  }
  if (r.version) {
    pk.key("version");
    pk.pack_uint64(*r.version);
  }
  put_reply_tail(pk, r);
}

void encode_request(const request& r, std::string& out) {
  uint32_t n = 3 + !r.model.empty() + r.version.has_value() +
               !r.inputs.empty() + (r.priority != 5) +
               r.timeout_ms.has_value() + (r.cache != cache_mode::use) +
               !r.tenant.empty() + !r.node.empty() + !r.job.empty() +
               r.progress + r.stream + (r.limit > 0) + !r.after.empty();
  out.reserve(out.size() + 96 + r.model.size() + r.tenant.size() +
              tensors_size_hint(r.inputs));
  string_writer w{out};
  packer pk{w};
  pk.pack_map(n);
  pk.key("v");
  pk.pack_uint64(r.v);
  pk.key("id");
  put_id(pk, r.id);
  pk.key("op");
  put_str(pk, to_string(r.op));
  if (!r.model.empty()) {
    pk.key("model");
    put_str(pk, r.model);
  }
  if (r.version) {
    pk.key("version");
    pk.pack_uint64(*r.version);
  }
  if (!r.inputs.empty()) {
    pk.key("inputs");
    put_tensors(pk, r.inputs);
  }
  if (r.priority != 5) {
    pk.key("priority");
    pk.pack_uint64(r.priority);
  }
  if (r.timeout_ms) {
    pk.key("timeout_ms");
    pk.pack_uint64(*r.timeout_ms);
  }
  if (r.cache != cache_mode::use) {
    pk.key("cache");
    put_str(pk, to_string(r.cache));
  }
  if (!r.tenant.empty()) {
    pk.key("tenant");
    put_str(pk, r.tenant);
  }
  if (!r.node.empty()) {
    pk.key("node");
    put_str(pk, r.node);
  }
  put_request_jobs(pk, r);
}

caf::error decode_reply(const uint8_t* data, size_t size,
                        const codec_limits& limits, reply& out) {
  out = reply{};
  unpacked u;
  std::array<const object*, rp_count> v;
  if (auto err = open_map(u, data, size, limits, "reply", reply_keys, rp_v,
                          rp_id, v, out.id, out.v)) {
    return err;
  }
  return decode_reply_fields(v, limits, out);
}

} // namespace shoal
