#include "net/security/curve_keys.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <sodium.h>
#include <zmq.h>

#include "net/wire/error.hpp"

namespace shoal {

namespace {

constexpr size_t z85_key_chars = 40;

caf::error file_error(std::string_view what, const std::string& path,
                      const std::string& why) {
  return make_error(errc::config_invalid,
                    std::string{what} + ": " + path + ": " + why);
}

void trim_right(std::string& line) {
  while (!line.empty() &&
         (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) {
    line.pop_back();
  }
}

// Whether `text` looks like a key rather than a file name: exactly 40
// characters with no '/' and no '.', which Z85 has but paths rarely lack.
// Z85's alphabet has '/' and '.', so a key can look like a path: 40
// characters that name no existing file are taken as the key itself.
bool looks_like_z85(const std::string& text) {
  std::error_code ec;
  return text.size() == z85_key_chars && !std::filesystem::exists(text, ec);
}

caf::error write_file(const std::string& path, const std::string& text,
                      mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    return make_error(errc::io_error,
                      "cannot create " + path + ": " + std::strerror(errno));
  }
  // The umask may have widened nothing, but make the mode exact anyway.
  ::fchmod(fd, mode);
  auto n = ::write(fd, text.data(), text.size());
  int err = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(text.size())) {
    return make_error(errc::io_error,
                      "cannot write " + path + ": " + std::strerror(err));
  }
  return {};
}

// Kubernetes mounts a secret volume of a pod with an fsGroup as root, group
// fsGroup, mode 0440 whatever defaultMode says: group read is the only way
// the pod's user reads it there. Accepted in exactly that shape (owned by
// root, read-only, others nothing, the group one this process is in).
bool kubelet_secret(const struct stat& st) {
  if (st.st_uid != 0 || (st.st_mode & 0777) != 0440) {
    return false;
  }
  if (st.st_gid == ::getegid()) {
    return true;
  }
  gid_t groups[256];
  int n = ::getgroups(256, groups);
  for (int i = 0; i < n; ++i) {
    if (groups[i] == st.st_gid) {
      return true;
    }
  }
  return false;
}

} // namespace

std::string z85_of(const curve_key& key) {
  char text[z85_key_chars + 1] = {};
  zmq_z85_encode(text, key.data(), key.size());
  return text;
}

caf::expected<curve_key> key_from_z85(std::string_view text) {
  if (text.size() != z85_key_chars) {
    return make_error(errc::invalid_argument,
                      "a CURVE key in Z85 has 40 characters, got " +
                          std::to_string(text.size()));
  }
  char buf[z85_key_chars + 1] = {};
  std::memcpy(buf, text.data(), z85_key_chars);
  curve_key key{};
  auto* ok = zmq_z85_decode(key.data(), buf);
  sodium_memzero(buf, sizeof(buf));
  if (ok == nullptr) {
    return make_error(errc::invalid_argument,
                      "not a Z85 CURVE key (bad characters)");
  }
  return key;
}

caf::error check_private_file(const std::string& path, std::string_view what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return file_error(what, path,
                      std::string{"cannot read: "} + std::strerror(errno));
  }
  if ((st.st_mode & (S_IRGRP | S_IROTH | S_IWGRP | S_IWOTH)) != 0 &&
      !kubelet_secret(st)) {
    return file_error(what, path,
                      "group or others may read or write it (mode " +
                          std::to_string((st.st_mode >> 6) & 7) +
                          std::to_string((st.st_mode >> 3) & 7) +
                          std::to_string(st.st_mode & 7) +
                          "); make it the owner's alone: chmod 600 " + path);
  }
  return {};
}

caf::expected<std::string> read_private_first_line(const std::string& path,
                                                   std::string_view what) {
  if (auto err = check_private_file(path, what)) {
    return err;
  }
  std::ifstream in{path};
  std::string line;
  if (!in || !std::getline(in, line)) {
    return file_error(what, path, "cannot read its first line");
  }
  trim_right(line);
  return line;
}

caf::expected<curve_key_pair> read_secret_key_file(const std::string& path,
                                                   std::string_view what) {
  auto line = read_private_first_line(path, what);
  if (!line) {
    return line.error();
  }
  auto secret = key_from_z85(*line);
  sodium_memzero(line->data(), line->size());
  if (!secret) {
    return file_error(what, path, reason_of(secret.error()));
  }
  curve_key_pair pair;
  pair.secret_key = *secret;
  crypto_scalarmult_base(pair.public_key.data(), pair.secret_key.data());
  return pair;
}

caf::expected<curve_key> read_public_key(const std::string& text_or_file,
                                         std::string_view what) {
  if (looks_like_z85(text_or_file)) {
    if (auto key = key_from_z85(text_or_file)) {
      return key;
    }
  }
  std::ifstream in{text_or_file};
  std::string line;
  if (!in || !std::getline(in, line)) {
    return make_error(errc::config_invalid,
                      std::string{what} + ": '" + text_or_file +
                          "' is neither a Z85 key nor a readable file");
  }
  trim_right(line);
  auto key = key_from_z85(line);
  if (!key) {
    return file_error(what, text_or_file, reason_of(key.error()));
  }
  return key;
}

caf::expected<curve_key_pair> read_secret_key(const std::string& text_or_file,
                                              std::string_view what) {
  if (looks_like_z85(text_or_file)) {
    if (auto key = key_from_z85(text_or_file)) {
      curve_key_pair pair;
      pair.secret_key = *key;
      crypto_scalarmult_base(pair.public_key.data(), pair.secret_key.data());
      return pair;
    }
  }
  return read_secret_key_file(text_or_file, what);
}

caf::expected<curve_key_pair> generate_key_pair() {
  if (sodium_init() < 0) {
    return make_error(errc::internal, "libsodium initialisation failed");
  }
  curve_key_pair pair;
  crypto_box_keypair(pair.public_key.data(), pair.secret_key.data());
  return pair;
}

caf::error write_key_pair(const std::string& prefix,
                          const curve_key_pair& pair) {
  auto secret = z85_of(pair.secret_key) + "\n";
  auto err = write_file(prefix + ".key", secret, 0600);
  sodium_memzero(secret.data(), secret.size());
  if (err) {
    return err;
  }
  return write_file(prefix + ".pub", z85_of(pair.public_key) + "\n", 0644);
}

curve_key_pair derive_key_pair(std::string_view secret,
                               std::string_view purpose) {
  [[maybe_unused]] auto rc = sodium_init();
  // A domain-separated hash of the secret seeds the pair, so the link keys
  // are unrelated to the HMAC key and to each other.
  std::string label = "shoal node link curve v1/" + std::string{purpose};
  unsigned char seed[crypto_box_SEEDBYTES];
  crypto_generichash_state st;
  crypto_generichash_init(
      &st, reinterpret_cast<const uint8_t*>(label.data()),
      std::min(label.size(), size_t{crypto_generichash_KEYBYTES_MAX}),
      sizeof(seed));
  crypto_generichash_update(
      &st, reinterpret_cast<const uint8_t*>(secret.data()), secret.size());
  crypto_generichash_final(&st, seed, sizeof(seed));
  curve_key_pair pair;
  crypto_box_seed_keypair(pair.public_key.data(), pair.secret_key.data(), seed);
  sodium_memzero(seed, sizeof(seed));
  sodium_memzero(&st, sizeof(st));
  return pair;
}

} // namespace shoal
