// Progress of the model loads under way on this node: executors write it
// from their load thread, the router reads it for the `models` op, which
// is what `shoalctl load` draws its progress bar from.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

namespace shoal {

class load_progress {
public:
  struct totals {
    uint64_t done = 0;
    uint64_t total = 0; // 0 while no file's size is known yet
  };

  void update(const std::string& model, uint64_t version,
              const std::string& file, uint64_t done, uint64_t total) {
    std::lock_guard guard{mtx_};
    loads_[{model, version}][file] = {done, total};
  }

  void finish(const std::string& model, uint64_t version) {
    std::lock_guard guard{mtx_};
    loads_.erase({model, version});
  }

  // Summed over the files of the load, if one is under way.
  std::optional<totals> get(const std::string& model, uint64_t version) const {
    std::lock_guard guard{mtx_};
    auto i = loads_.find({model, version});
    if (i == loads_.end()) {
      return std::nullopt;
    }
    totals t;
    for (auto& [file, p] : i->second) {
      t.done += p.first;
      t.total += p.second;
    }
    return t;
  }

private:
  mutable std::mutex mtx_;
  std::map<std::pair<std::string, uint64_t>,
           std::map<std::string, std::pair<uint64_t, uint64_t>>>
      loads_;
};

} // namespace shoal
