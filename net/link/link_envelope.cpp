#include "net/link/link_envelope.hpp"

#include <array>
#include <cstring>
#include <new>

#include <msgpack.hpp>
#include <sodium.h>

#include "net/wire/error.hpp"
#include "net/wire/msgpack_util.hpp"

namespace shoal {

namespace {

namespace mt = msgpack::type;
using msgpack::object;

// The known keys, in the order the encoder writes them (mac last, so the
// encoder can patch it in place).
enum key : size_t { k_v, k_t, k_from, k_inc, k_to_inc, k_seq, k_body, k_mac };
constexpr std::array<std::string_view, 8> key_names = {
    "v", "t", "from", "inc", "to_inc", "seq", "body", "mac"};

// Bounds for the parse itself. An envelope is one flat map; the slack
// (32 entries, one level of nesting, 256-byte strings) is only there so
// that a later version may add small keys that this one ignores. Every
// bound is checked by msgpack before it allocates for the claim, so a map32
// header claiming 4 billion entries costs nothing.
msgpack::unpack_limit parse_limits(const envelope_limits& lim) {
  constexpr size_t items = 32, str = 256, depth = 2;
  auto bin = std::max(lim.max_body_bytes(), link_mac_bytes);
  return msgpack::unpack_limit(items, items, str, bin, str, depth);
}

bool reference_all(mt::object_type, size_t, void*) {
  return true;
}

struct failure {
  link_fault fault = link_fault::malformed;
  std::string reason;
};

std::string mismatch(size_t k, std::string_view want, const object& got) {
  std::string r{key_names[k]};
  r += ": expected ";
  r += want;
  r += ", got ";
  r += msgpack_kind_name(got);
  return r;
}

// A str of 1..max bytes.
std::string get_str(const object* o, size_t k, size_t max,
                    std::string_view& out) {
  if (o == nullptr) {
    return std::string{"missing key "} + std::string{key_names[k]};
  }
  if (o->type != mt::STR) {
    return mismatch(k, "str", *o);
  }
  if (o->via.str.size == 0 || o->via.str.size > max) {
    return std::string{key_names[k]} + ": length " +
           std::to_string(o->via.str.size) + " outside 1.." +
           std::to_string(max);
  }
  out = {o->via.str.ptr, o->via.str.size};
  return {};
}

std::string get_uint(const object* o, size_t k, bool required, uint64_t& out) {
  if (o == nullptr) {
    return required ? "missing key " + std::string{key_names[k]}
                    : std::string{};
  }
  if (o->type != mt::POSITIVE_INTEGER) {
    return mismatch(k, "uint", *o);
  }
  out = o->via.u64;
  return {};
}

void mac_of(std::string_view secret, const uint8_t* data, size_t size,
            size_t mac_off, uint8_t (&out)[link_mac_bytes]) {
  static const uint8_t zeros[link_mac_bytes] = {};
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(
      &st, reinterpret_cast<const unsigned char*>(secret.data()),
      secret.size());
  crypto_auth_hmacsha256_update(&st, data, mac_off);
  crypto_auth_hmacsha256_update(&st, zeros, link_mac_bytes);
  crypto_auth_hmacsha256_update(&st, data + mac_off + link_mac_bytes,
                                size - mac_off - link_mac_bytes);
  crypto_auth_hmacsha256_final(&st, out);
  sodium_memzero(&st, sizeof(st));
}

// Parses into a thread-local zone kept between calls (strings and bins
// reference the frame, so the zone only holds the map's object slots).
class parsed {
public:
  parsed() : zone_(local_zone()) {}
  ~parsed() { zone_.clear(); }
  parsed(const parsed&) = delete;
  parsed& operator=(const parsed&) = delete;

  // Returns an empty string on success, or the reason (and sets `fault`).
  std::string run(const uint8_t* data, size_t size, const envelope_limits& lim,
                  link_fault& fault) {
    size_t off = 0;
    fault = link_fault::malformed;
    try {
      bool referenced = false;
      obj = msgpack::unpack(zone_, reinterpret_cast<const char*>(data), size,
                            off, referenced, reference_all, nullptr,
                            parse_limits(lim));
    } catch (const std::bad_alloc&) {
      return "out of memory while parsing";
    } catch (const msgpack::bin_size_overflow&) {
      // The one overflow a sane peer produces: a body over our limit.
      fault = link_fault::oversized;
      return "a bin exceeds the limit of " +
             std::to_string(lim.max_body_bytes()) + " bytes";
    } catch (const std::exception& e) {
      // insufficient_bytes (truncation), parse_error, the size_overflow
      // family (a claim over the limits), ...
      return std::string{"malformed msgpack ("} + e.what() + ")";
    }
    if (off != size) {
      return std::to_string(size - off) + " trailing bytes after the map";
    }
    return {};
  }

  object obj;

private:
  static msgpack::zone& local_zone() {
    thread_local msgpack::zone z;
    return z;
  }

  msgpack::zone& zone_;
};

caf::expected<link_envelope> fail(link_fault f, std::string reason,
                                  link_fault* out) {
  if (out != nullptr) {
    *out = f;
  }
  return make_error(errc::invalid_argument,
                    "link envelope: " + std::move(reason));
}

using key_values = std::array<const object*, key_names.size()>;

// Finds the known keys of the envelope map; false (with `f`) when it is not
// a map of str keys or a known key is given twice.
bool index_keys(const object& map, key_values& vals, failure& f) {
  f.fault = link_fault::malformed;
  if (map.type != mt::MAP) {
    f.reason = "expected a map, got " + std::string{msgpack_kind_name(map)};
    return false;
  }
  for (uint32_t i = 0; i < map.via.map.size; ++i) {
    const auto& kv = map.via.map.ptr[i];
    if (kv.key.type != mt::STR) {
      f.reason = "map key " + std::to_string(i) + " is a " +
                 std::string{msgpack_kind_name(kv.key)} + ", not a str";
      return false;
    }
    std::string_view name{kv.key.via.str.ptr, kv.key.via.str.size};
    for (size_t k = 0; k < key_names.size(); ++k) {
      if (key_names[k] != name) {
        continue;
      }
      if (vals[k] != nullptr) {
        f.reason = "duplicate key " + std::string{name};
        return false;
      }
      vals[k] = &kv.val;
    }
  }
  return true;
}

bool check_version(const key_values& vals, failure& f) {
  uint64_t v = 0;
  if (auto why = get_uint(vals[k_v], k_v, true, v); !why.empty()) {
    f = {link_fault::malformed, std::move(why)};
    return false;
  }
  if (v != link_protocol_version) {
    f = {link_fault::unsupported_version,
         "version " + std::to_string(v) + ", expected " +
             std::to_string(link_protocol_version)};
    return false;
  }
  return true;
}

// A present `mac` must be a 32-byte bin; with a secret it must be there
// and match the frame.
bool check_mac(const key_values& vals, std::string_view secret,
               const uint8_t* data, size_t size, failure& f) {
  const object* mac = vals[k_mac];
  if (mac != nullptr &&
      (mac->type != mt::BIN || mac->via.bin.size != link_mac_bytes)) {
    f = {link_fault::malformed, "mac: expected a bin of 32 bytes"};
    return false;
  }
  if (secret.empty()) {
    return true;
  }
  if (mac == nullptr) {
    f = {link_fault::unauthenticated, "missing mac"};
    return false;
  }
  auto* at = reinterpret_cast<const uint8_t*>(mac->via.bin.ptr);
  // Parsed by reference, so the payload lies inside the frame.
  if (at < data || at + link_mac_bytes > data + size) {
    f = {link_fault::malformed, "mac outside the frame"};
    return false;
  }
  uint8_t want[link_mac_bytes];
  mac_of(secret, data, size, static_cast<size_t>(at - data), want);
  if (sodium_memcmp(want, at, link_mac_bytes) != 0) {
    f = {link_fault::unauthenticated, "wrong mac"};
    return false;
  }
  return true;
}

// The envelope's fields besides version and mac.
bool read_fields(const key_values& vals, const envelope_limits& limits,
                 link_envelope& env, failure& f) {
  std::string why = get_str(vals[k_t], k_t, link_max_type_bytes, env.type);
  if (why.empty()) {
    why = get_str(vals[k_from], k_from, link_max_name_bytes, env.from);
  }
  if (why.empty()) {
    why = get_uint(vals[k_inc], k_inc, true, env.inc);
  }
  if (why.empty() && env.inc == 0) {
    why = "inc must not be 0";
  }
  if (why.empty()) {
    why = get_uint(vals[k_to_inc], k_to_inc, false, env.to_inc);
  }
  if (why.empty()) {
    why = get_uint(vals[k_seq], k_seq, true, env.seq);
  }
  if (!why.empty()) {
    f = {link_fault::malformed, std::move(why)};
    return false;
  }
  const object* b = vals[k_body];
  if (b == nullptr) {
    return true;
  }
  if (b->type != mt::BIN) {
    f = {link_fault::malformed, mismatch(k_body, "bin", *b)};
    return false;
  }
  if (b->via.bin.size > limits.max_body_bytes()) {
    f = {link_fault::oversized, "body of " + std::to_string(b->via.bin.size) +
                                    " bytes exceeds limit " +
                                    std::to_string(limits.max_body_bytes())};
    return false;
  }
  env.body = {b->via.bin.ptr, b->via.bin.size};
  return true;
}

} // namespace

std::string_view to_string(link_fault f) noexcept {
  switch (f) {
  case link_fault::none:
    return "none";
  case link_fault::malformed:
    return "malformed";
  case link_fault::unsupported_version:
    return "unsupported version";
  case link_fault::oversized:
    return "oversized";
  case link_fault::unauthenticated:
    return "unauthenticated";
  }
  return "unknown";
}

caf::error encode_envelope(const link_envelope& env, std::string_view secret,
                           const envelope_limits& limits, std::string& out) {
  auto bad = [](std::string r) {
    return make_error(errc::invalid_argument, "link envelope: " + r);
  };
  if (env.type.empty() || env.type.size() > link_max_type_bytes) {
    return bad("type length " + std::to_string(env.type.size()) +
               " outside 1.." + std::to_string(link_max_type_bytes));
  }
  if (env.from.empty() || env.from.size() > link_max_name_bytes) {
    return bad("from length " + std::to_string(env.from.size()) +
               " outside 1.." + std::to_string(link_max_name_bytes));
  }
  if (env.inc == 0) {
    return bad("inc must not be 0");
  }
  if (env.body.size() > limits.max_body_bytes()) {
    return bad("body of " + std::to_string(env.body.size()) +
               " bytes exceeds limit " +
               std::to_string(limits.max_body_bytes()));
  }
  auto start = out.size();
  string_writer w{out};
  msgpack::packer<string_writer> pk{w};
  auto key = [&](size_t k) {
    pk.pack_str(static_cast<uint32_t>(key_names[k].size()));
    pk.pack_str_body(key_names[k].data(),
                     static_cast<uint32_t>(key_names[k].size()));
  };
  auto str = [&](std::string_view s) {
    pk.pack_str(static_cast<uint32_t>(s.size()));
    pk.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
  };
  pk.pack_map(secret.empty() ? 7 : 8);
  key(k_v);
  pk.pack_uint64(link_protocol_version);
  key(k_t);
  str(env.type);
  key(k_from);
  str(env.from);
  key(k_inc);
  pk.pack_uint64(env.inc);
  key(k_to_inc);
  pk.pack_uint64(env.to_inc);
  key(k_seq);
  pk.pack_uint64(env.seq);
  key(k_body);
  pk.pack_bin(static_cast<uint32_t>(env.body.size()));
  pk.pack_bin_body(env.body.data(), static_cast<uint32_t>(env.body.size()));
  if (!secret.empty()) {
    key(k_mac);
    pk.pack_bin(link_mac_bytes);
    out.append(link_mac_bytes, '\0');
    auto* frame = reinterpret_cast<const uint8_t*>(out.data() + start);
    auto size = out.size() - start;
    uint8_t mac[link_mac_bytes];
    mac_of(secret, frame, size, size - link_mac_bytes, mac);
    std::memcpy(out.data() + out.size() - link_mac_bytes, mac, sizeof(mac));
  }
  return {};
}

caf::expected<link_envelope> decode_envelope(const uint8_t* data, size_t size,
                                             std::string_view secret,
                                             const envelope_limits& limits,
                                             link_fault* fault) {
  using lf = link_fault;
  if (fault != nullptr) {
    *fault = lf::none;
  }
  if (size > limits.max_frame_bytes) {
    return fail(lf::oversized,
                "frame of " + std::to_string(size) + " bytes exceeds limit " +
                    std::to_string(limits.max_frame_bytes),
                fault);
  }
  if (size == 0) {
    return fail(lf::malformed, "empty frame", fault);
  }
  parsed p;
  link_fault parse_fault;
  if (auto why = p.run(data, size, limits, parse_fault); !why.empty()) {
    return fail(parse_fault, why, fault);
  }
  key_values vals{};
  failure f;
  // Version first: a peer of another version may differ in everything
  // else, and "unsupported version" is the reason an operator needs. The
  // MAC before the other fields, so that a sender without the key learns
  // nothing from our checks beyond "unauthenticated".
  if (!index_keys(p.obj, vals, f) || !check_version(vals, f) ||
      !check_mac(vals, secret, data, size, f)) {
    return fail(f.fault, std::move(f.reason), fault);
  }
  link_envelope env;
  if (!read_fields(vals, limits, env, f)) {
    return fail(f.fault, std::move(f.reason), fault);
  }
  return env;
}

} // namespace shoal
