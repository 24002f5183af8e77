// The clients a CURVE gateway accepts: the clients file (TOML,
// `[[client]] name, public_key, tenant, role`), read at start and re-read
// when it changes (looked at a few times a second) or when asked (SIGHUP),
// without a restart. A bad file keeps the previous list and logs why.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include <caf/expected.hpp>

#include "net/security/curve_keys.hpp"

namespace shoal {

enum class client_role : uint8_t { client, admin };

struct client_entry {
  std::string name;
  curve_key public_key{};
  // "default" when the file gives none.
  std::string tenant = "default";
  client_role role = client_role::client;
};

// Parses a clients file; errc::config_invalid naming the file and the entry
// (by index and name) that is wrong. Refuses a file group or others may
// read (check_private_file).
caf::expected<std::vector<client_entry>>
load_clients_file(const std::string& path);

class client_registry {
public:
  // Reads `path`; a first read that fails is an error (the node does not
  // start with a broken list).
  static caf::expected<std::shared_ptr<client_registry>> open(std::string path);

  // The entry for `key`, if the current list has one.
  std::optional<client_entry> find(const curve_key& key) const;

  // Whether a client of this name is in the current list.
  bool has_name(const std::string& name) const;

  // Bumped by every successful re-read; lets a reader cache has_name.
  uint64_t generation() const;

  // Re-reads the file when its identity, size or time changed.
  void reload_if_changed();

  // Re-reads the file now. Returns false (and keeps the list) when it is bad.
  bool reload();

  size_t size() const;
  const std::string& path() const noexcept { return path_; }

private:
  explicit client_registry(std::string path) : path_(std::move(path)) {}
  struct file_stamp {
    uint64_t ino = 0, size = 0;
    int64_t mtime_ns = 0, ctime_ns = 0;
    bool operator==(const file_stamp&) const = default;
  };
  static file_stamp stamp_of(const std::string& path);

  std::string path_;
  mutable std::mutex mtx_;
  std::vector<client_entry> entries_;
  std::unordered_set<std::string> names_;
  file_stamp stamp_;
  uint64_t generation_ = 0;
};

} // namespace shoal
