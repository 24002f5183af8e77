// The node's model catalog while it runs: one immutable model_catalog at a
// time, replaced whole when the repository is read again (models.poll_ms,
// the `reload` op). Readers take a snapshot and keep using it, so a request
// sees one catalog from start to end, and nobody waits for a re-read.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

#include <caf/expected.hpp>

#include "gpu/model/model_spec.hpp"
#include "net/wire/message.hpp"

namespace shoal {

// What a re-read of the repository changed. A version is immutable once a
// node has read it: a manifest that changed under a known version is
// refused and the known spec stays.
struct catalog_update {
  model_catalog_ptr catalog; // the catalog after the re-read
  std::vector<catalog_change> added;
  std::vector<catalog_change> removed;
  std::vector<catalog_change> refused; // error names the file
  bool changed() const noexcept { return !added.empty() || !removed.empty(); }
};

// Merges a fresh scan into the current catalog: versions only in `scanned`
// are added, versions only in `current` removed, and a version in both
// keeps its current spec (the same pointer) — refused when its manifest's
// sha256 differs (the refusal names the manifest).
catalog_update merge_catalogs(const model_catalog& current,
                              const model_catalog& scanned);

// Where a spec's manifest lives, for messages: the repository URL of a
// remote one, else the local file.
std::string manifest_path(const model_spec& spec);

using reread_done = std::function<void(const caf::expected<catalog_update>&)>;

class live_catalog {
public:
  explicit live_catalog(model_catalog_ptr initial);

  // The current catalog (never null).
  model_catalog_ptr get() const;

  // Bumped by every set(): a reader that cached a snapshot compares it
  // instead of taking the lock per request.
  uint64_t generation() const noexcept {
    return generation_.load(std::memory_order_acquire);
  }

  void set(model_catalog_ptr next);

  // Asks for the repository to be read again now; `done` runs once that
  // re-read finished (on the re-reading thread, or here when nothing
  // re-reads: then with the current catalog and no change).
  void reread(reread_done done) const;

  // Installed by the node: how reread() reaches the repository.
  void set_rereader(std::function<void(reread_done)> f);

private:
  mutable std::mutex mtx_;
  model_catalog_ptr current_;
  std::function<void(reread_done)> rereader_;
  std::atomic<uint64_t> generation_{0};
};

using live_catalog_ptr = std::shared_ptr<live_catalog>;

} // namespace shoal
