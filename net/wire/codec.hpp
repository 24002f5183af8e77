// MessagePack codec for protocol v1 with hard limits. Untrusted bytes are
// only ever decoded through these functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <caf/error.hpp>

#include "net/wire/message.hpp"

namespace shoal {

// Every limit is checked before memory proportional to the claim is
// allocated, so a 5-byte header claiming 4 billion items costs nothing.
struct codec_limits {
  size_t max_frame_bytes = 64u << 20; // whole frame
  size_t max_depth = 8;               // nesting of arrays and maps
  size_t max_items = 4096;            // entries of any one array or map
  size_t max_str_bytes = 4096;        // any string (an id: 128, see below)
  size_t max_id_bytes = 128;          // string request ids
  size_t max_bin_bytes = 64u << 20;   // any one bin (tensor data)
  size_t max_tensors = 64;            // inputs or outputs of one message
  size_t max_rank = 8;                // dimensions of one tensor
};

// Decodes and validates one request frame. On failure returns an
// errc::invalid_argument error whose reason names the offending key, and
// leaves in `out.id` / `out.v` whatever could be read (nil id otherwise), so
// the reply can still echo it. Validates: types of every known key, protocol
// version, op name, dtype names, tensor byte count == prod(shape) * size,
// priority 0..9, cache mode, id length. Unknown keys are ignored.
caf::error decode_request(const uint8_t* data, size_t size,
                          const codec_limits& limits, request& out);

// Appends the msgpack encoding of `r` to `out`. Keys that do not apply (empty
// error, no outputs, ...) are omitted; `id` is always present (nil if unset).
void encode_reply(const reply& r, std::string& out);

// Appends a msgpack array of tensor maps (the `outputs` value).
void encode_tensors(const std::vector<tensor>& ts, std::string& out);

// Client side: appends the msgpack encoding of a request.
void encode_request(const request& r, std::string& out);

// Client side: decodes a reply frame with the same limits (tensor data
// copied into `out.outputs`).
caf::error decode_reply(const uint8_t* data, size_t size,
                        const codec_limits& limits, reply& out);

} // namespace shoal
