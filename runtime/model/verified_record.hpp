// What the model store has verified, so that an unchanged file is not
// hashed again on every load: hashing 1 GiB costs seconds, mapping it does
// not. A file counts as unchanged while its size, mtime, ctime, inode and
// device all match what they were when its sha256 was computed (the test
// git's index uses for the same purpose).
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace shoal {

class verified_record {
public:
  // Reads <dir>/.shoal-verified. A missing or garbled record is empty,
  // which only means files are hashed again.
  static verified_record load(const std::string& dir);

  // Whether `path` is unchanged since it was verified to hash to `sha256`.
  bool matches(const std::string& path, const std::string& sha256) const;

  // Records `path` (as it is on disk now) as hashing to `sha256`.
  void add(const std::string& path, const std::string& sha256);

  // Forgets `path`, e.g. after it failed verification.
  void erase(const std::string& path);

  // Writes the record back atomically (temp file + rename). Failure is
  // logged, not returned: it costs a re-hash later, never a wrong load.
  void save();

private:
  struct identity {
    uint64_t size = 0;
    uint64_t mtime_ns = 0;
    uint64_t ctime_ns = 0;
    uint64_t ino = 0;
    uint64_t dev = 0;
    bool operator==(const identity&) const = default;
  };
  struct entry {
    std::string sha256;
    identity id;
  };

  static bool stat_identity(const std::string& path, identity& out);

  std::string file_;
  bool dirty_ = false;
  std::map<std::string, entry> entries_;
};

} // namespace shoal
