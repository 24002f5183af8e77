// CURVE keys as files and text: the node's secret key file, the public
// keys operators pass around (Z85, 40 characters), key generation, and the
// node link keys derived from the cluster secret. Key material never leaves
// these functions in an error message or a log line: errors name the file.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include <caf/error.hpp>
#include <caf/expected.hpp>

namespace shoal {

using curve_key = std::array<uint8_t, 32>;

struct curve_key_pair {
  curve_key public_key{};
  curve_key secret_key{};
};

// Z85 text of a key (40 characters).
std::string z85_of(const curve_key& key);

// Decodes 40 Z85 characters; errc::invalid_argument otherwise (the reason
// says what is wrong, never the text itself).
caf::expected<curve_key> key_from_z85(std::string_view text);

// Fails with errc::config_invalid naming `what` and `path` when group or
// others may read or write the file (a secret must be the owner's alone), or
// when it cannot be read. One exception, the shape of a Kubernetes secret
// volume in a pod with an fsGroup: owned by root, mode 0440, its group one
// this process is in.
caf::error check_private_file(const std::string& path, std::string_view what);

// The first line of `path`, trailing spaces and CR removed, after
// check_private_file. errc::config_invalid naming `what` and the file.
caf::expected<std::string> read_private_first_line(const std::string& path,
                                                   std::string_view what);

// A secret key file (Z85 secret on its first line) and its public key.
caf::expected<curve_key_pair> read_secret_key_file(const std::string& path,
                                                   std::string_view what);

// A public key given as 40 Z85 characters or as a file whose first line is
// one (a .pub file).
caf::expected<curve_key> read_public_key(const std::string& text_or_file,
                                         std::string_view what);

// A secret key given as 40 Z85 characters or as a secret key file.
caf::expected<curve_key_pair> read_secret_key(const std::string& text_or_file,
                                              std::string_view what);

// A fresh key pair from the system's random source.
caf::expected<curve_key_pair> generate_key_pair();

// Writes PREFIX.key (the Z85 secret, mode 0600, created exclusively) and
// PREFIX.pub (the Z85 public key). Refuses to overwrite either file.
caf::error write_key_pair(const std::string& prefix,
                          const curve_key_pair& pair);

// A key pair derived from a shared secret and a purpose ("hub", "member"):
// every node that knows the secret derives the same pair, nobody else can.
curve_key_pair derive_key_pair(std::string_view secret,
                               std::string_view purpose);

} // namespace shoal
