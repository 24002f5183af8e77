// Fuzz target for what a node reads from its cluster link: the envelope
// (net/link_envelope.hpp) and, inside it, the cluster message bodies
// (net/cluster_codec.hpp). Builds with libFuzzer or standalone_main.cpp.
//
// Besides "never crash, never over-allocate", it checks that a decoded
// envelope re-encodes (signed) to one that decodes to the same fields and
// is refused under any other secret.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "net/link/cluster_codec.hpp"
#include "net/link/link_envelope.hpp"

using namespace shoal;

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_link: %s\n", what);
  std::abort();
}

template <class T>
void decode_as(const std::string& body) {
  T out;
  (void)decode(body, out);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  envelope_limits lim;
  lim.max_frame_bytes = 1u << 20;
  // Unauthenticated, so that mutations reach the field checks.
  auto env = decode_envelope(data, size, "", lim);
  if (!env) {
    return 0;
  }
  std::string body{env->body};
  decode_as<worker_hello>(body);
  decode_as<exec_msg>(body);
  decode_as<done_msg>(body);
  decode_as<spawn_msg>(body);
  decode_as<retire_msg>(body);
  decode_as<replica_down_msg>(body);
  decode_as<progress_msg>(body);
  decode_as<cancel_msg>(body);
  std::string signed_frame;
  if (encode_envelope(*env, "secret", lim, signed_frame)) {
    return 0; // e.g. a type the encoder refuses: fine, it was not sent
  }
  auto again =
      decode_envelope(reinterpret_cast<const uint8_t*>(signed_frame.data()),
                      signed_frame.size(), "secret", lim);
  if (!again) {
    fail("a signed re-encoding does not decode");
  }
  if (again->type != env->type || again->from != env->from ||
      again->inc != env->inc || again->to_inc != env->to_inc ||
      again->seq != env->seq || again->body != env->body) {
    fail("the re-encoding changed a field");
  }
  if (decode_envelope(reinterpret_cast<const uint8_t*>(signed_frame.data()),
                      signed_frame.size(), "other", lim)) {
    fail("a frame signed with another secret was accepted");
  }
  return 0;
}
