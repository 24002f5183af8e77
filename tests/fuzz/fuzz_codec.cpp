// Fuzz target for the protocol v1 codec. Builds with libFuzzer
// (clang -fsanitize=fuzzer) or with standalone_main.cpp, which replays a
// corpus and mutates it for a bounded time.
//
// Besides "never crash, never over-allocate", it checks the codec's round
// trip: whatever decodes must re-encode to a frame that decodes to the same
// value, and re-encoding that value must reproduce the same bytes.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "net/wire/codec.hpp"
#include "net/wire/error.hpp"

using namespace shoal;

namespace {

[[noreturn]] void fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz_codec: %s: %s\n", what, detail.c_str());
  std::abort();
}

bool same(const request& a, const request& b) {
  return a.v == b.v && a.id == b.id && a.op == b.op && a.model == b.model &&
         a.version == b.version && a.inputs == b.inputs &&
         a.priority == b.priority && a.timeout_ms == b.timeout_ms &&
         a.cache == b.cache && a.tenant == b.tenant && a.node == b.node;
}

bool same(const io_spec& a, const io_spec& b) {
  return a.name == b.name && a.type == b.type && a.shape == b.shape;
}

// Declared ahead so that same_list finds them (no ADL into this namespace).
bool same(const model_info& a, const model_info& b);
bool same(const node_info& a, const node_info& b);

template <class T>
bool same_list(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (!same(a[i], b[i])) {
      return false;
    }
  }
  return true;
}

bool same(const model_info& a, const model_info& b) {
  return a.name == b.name && a.versions == b.versions && a.state == b.state &&
         same_list(a.inputs, b.inputs) && same_list(a.outputs, b.outputs);
}

bool same(const node_info& a, const node_info& b) {
  return a.name == b.name && a.role == b.role && a.state == b.state &&
         a.labels == b.labels && a.replicas == b.replicas;
}

bool same(const std::optional<timing>& a, const std::optional<timing>& b) {
  if (a.has_value() != b.has_value()) {
    return false;
  }
  return !a || (a->queue_us == b->queue_us && a->compute_us == b->compute_us &&
                a->total_us == b->total_us);
}

bool same(const reply& a, const reply& b) {
  return a.v == b.v && a.id == b.id && a.code == b.code && a.error == b.error &&
         a.outputs == b.outputs && a.outputs_encoded == b.outputs_encoded &&
         a.source == b.source && a.model == b.model && a.version == b.version &&
         same(a.timing_us, b.timing_us) && a.node == b.node &&
         a.has_models == b.has_models && same_list(a.models, b.models) &&
         a.has_nodes == b.has_nodes && same_list(a.nodes, b.nodes);
}

const uint8_t* bytes(const std::string& s) {
  return reinterpret_cast<const uint8_t*>(s.data());
}

void check_failure(const caf::error& err) {
  if (to_status(err) != status::invalid_argument) {
    fail("decode failed with a status other than INVALID_ARGUMENT",
         reason_of(err));
  }
  if (reason_of(err).empty()) {
    fail("decode failed without a reason", "");
  }
}

void round_trip_request(const uint8_t* data, size_t size,
                        const codec_limits& lim) {
  request first;
  if (auto err = decode_request(data, size, lim, first)) {
    check_failure(err);
    return;
  }
  std::string frame;
  encode_request(first, frame);
  request second;
  if (auto err = decode_request(bytes(frame), frame.size(), lim, second)) {
    fail("re-encoded request does not decode", reason_of(err));
  }
  if (!same(first, second)) {
    fail("request round trip changed the value", first.id.to_string());
  }
  std::string again;
  encode_request(second, again);
  if (again != frame) {
    fail("request encoding is not stable", first.id.to_string());
  }
}

void round_trip_reply(const uint8_t* data, size_t size,
                      const codec_limits& lim) {
  reply first;
  if (auto err = decode_reply(data, size, lim, first)) {
    check_failure(err);
    return;
  }
  std::string frame;
  encode_reply(first, frame);
  reply second;
  if (auto err = decode_reply(bytes(frame), frame.size(), lim, second)) {
    fail("re-encoded reply does not decode", reason_of(err));
  }
  if (!same(first, second)) {
    fail("reply round trip changed the value", first.id.to_string());
  }
  // The cache path: outputs pre-encoded must give the very same bytes.
  reply cached = second;
  if (!cached.outputs.empty()) {
    encode_tensors(cached.outputs, cached.outputs_encoded);
    cached.outputs.clear();
  }
  std::string again;
  encode_reply(cached, again);
  if (again != frame) {
    fail("reply encoding is not stable", first.id.to_string());
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const codec_limits limits{};
  round_trip_request(data, size, limits);
  round_trip_reply(data, size, limits);
  return 0;
}
