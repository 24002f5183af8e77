// The envelope of the node-to-node link (net/node_link.hpp): one MessagePack
// map per ZeroMQ frame, authenticated with HMAC-SHA256 under the shared
// cluster secret. Untrusted link frames are only ever decoded here.
//
// Wire format, protocol version 1. String keys; unknown keys are ignored
// (but covered by the MAC); a known key given twice is rejected.
//
// | key      | type   | required | meaning                                    |
// |----------|--------|----------|--------------------------------------------|
// | `v`      | uint   | yes      | 1                                          |
// | `t`      | str    | yes      | message type, 1..64 bytes                  |
// | `from`   | str    | yes      | sender node name, 1..128 bytes             |
// | `inc`    | uint   | yes      | sender incarnation, non-zero               |
// | `to_inc` | uint   | no (0)   | receiver incarnation believed in, 0 = any  |
// | `seq`    | uint   | yes      | sender's message counter                   |
// | `body`   | bin    | no ("")  | opaque to the link, <= max_body_bytes()    |
// | `mac`    | bin 32 | if keyed | HMAC-SHA256, see below                     |
//
// MAC: `mac` = HMAC-SHA256(key = secret, message = F'), where F' is the
// whole frame exactly as sent, with the 32 payload bytes of the `mac` bin
// replaced by zeros. The sender writes the mac as the last entry, computes
// the HMAC over the frame with a zeroed payload and patches it in; the
// receiver zeroes the payload where it finds it. Signing the bytes rather
// than a re-encoding means no canonical form is needed: any key order or
// integer width a sender picks is covered, unknown keys included.
// An empty secret turns authentication off: encode omits `mac`, decode
// ignores it (a present `mac` must still be a 32-byte bin).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <caf/error.hpp>
#include <caf/expected.hpp>

namespace shoal {

inline constexpr uint64_t link_protocol_version = 1;
inline constexpr size_t link_max_type_bytes = 64;
inline constexpr size_t link_max_name_bytes = 128;
inline constexpr size_t link_mac_bytes = 32;
// Frame bytes an envelope needs besides its body (keys, type, name, three
// integers, mac, headers: about 300), rounded up generously.
inline constexpr size_t link_envelope_overhead = 1024;

struct envelope_limits {
  // The largest frame accepted; also the link socket's ZMQ_MAXMSGSIZE.
  size_t max_frame_bytes = (size_t{64} << 20) + link_envelope_overhead;

  size_t max_body_bytes() const noexcept {
    return max_frame_bytes > link_envelope_overhead
               ? max_frame_bytes - link_envelope_overhead
               : 0;
  }
};

// One envelope. After decode_envelope the views point into the decoded
// frame and are valid only as long as it is.
struct link_envelope {
  std::string_view type;
  std::string_view from;
  uint64_t inc = 0;
  uint64_t to_inc = 0;
  uint64_t seq = 0;
  std::string_view body;
};

// Why a frame was refused; the node link counts and logs drops by this.
enum class link_fault : uint8_t {
  none,
  malformed,           // not msgpack, not a map, wrong key types or sizes
  unsupported_version, // `v` is not link_protocol_version
  oversized,           // frame or body over the limits
  unauthenticated,     // `mac` missing or wrong while a secret is set
};

std::string_view to_string(link_fault f) noexcept;

// Appends the encoding of `env` to `out` (with `mac` iff `secret` is not
// empty). Fails with errc::invalid_argument, leaving `out` as it was, when
// a field is out of range (empty or long type or name, inc 0, body over
// max_body_bytes()).
caf::error encode_envelope(const link_envelope& env, std::string_view secret,
                           const envelope_limits& limits, std::string& out);

// Decodes and checks one frame: bounded msgpack parse (no allocation
// proportional to a claimed length), types and sizes of every known key,
// version, then the MAC when `secret` is not empty. Fails with an
// errc::invalid_argument error whose reason says what is wrong; `fault`
// (when given) receives the class of the failure, or none on success.
caf::expected<link_envelope> decode_envelope(const uint8_t* data, size_t size,
                                             std::string_view secret,
                                             const envelope_limits& limits,
                                             link_fault* fault = nullptr);

} // namespace shoal
