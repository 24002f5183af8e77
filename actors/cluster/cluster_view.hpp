// The head's list of workers as the gateway (`drain NODE`) and the HTTP
// server (/sd) read it, without asking the coordinator, which writes it.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace shoal {

class cluster_view {
public:
  struct entry {
    std::string state;
    std::string metrics_target;
    std::vector<std::pair<std::string, std::string>> labels;
  };

  void set(const std::string& name, entry e) {
    std::lock_guard guard{mtx_};
    nodes_[name] = std::move(e);
  }
  void erase(const std::string& name) {
    std::lock_guard guard{mtx_};
    nodes_.erase(name);
  }
  std::string state_of(const std::string& name) const {
    std::lock_guard guard{mtx_};
    auto i = nodes_.find(name);
    return i == nodes_.end() ? std::string{} : i->second.state;
  }
  std::map<std::string, entry> snapshot() const {
    std::lock_guard guard{mtx_};
    return nodes_;
  }

private:
  mutable std::mutex mtx_;
  std::map<std::string, entry> nodes_;
};

} // namespace shoal
