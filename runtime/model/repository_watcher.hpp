// Keeps a running node's catalog in step with its model repository: a
// thread re-reads the repository every models.poll_ms (when set) and
// whenever asked (the `reload` op; a worker asked to spawn a version it
// has not seen), and installs the result in the node's live_catalog.
// Re-reads run one at a time on that thread, off the actors' and the
// gateway's threads; requests that arrive during one are answered by the
// next.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gpu/model/live_catalog.hpp"
#include "runtime/model/model_store.hpp"

namespace shoal {

class repository_watcher {
public:
  // `on_change` runs on the watcher's thread after a re-read that added or
  // removed versions, once the new catalog is installed. poll = 0: only
  // requests re-read.
  static std::shared_ptr<repository_watcher>
  start(store_config store, std::chrono::milliseconds poll,
        live_catalog_ptr catalog,
        std::function<void(const catalog_update&)> on_change);

  // Stops and joins the thread; requests still waiting are not answered.
  ~repository_watcher();
  repository_watcher(const repository_watcher&) = delete;
  repository_watcher& operator=(const repository_watcher&) = delete;

  // Re-reads as soon as the thread is free; `done` gets the result.
  void request(reread_done done);

private:
  repository_watcher() = default;
  void run();
  caf::expected<catalog_update> reread(bool asked);

  store_config store_;
  std::chrono::milliseconds poll_{0};
  live_catalog_ptr catalog_;
  std::function<void(const catalog_update&)> on_change_;
  std::mutex mtx_;
  std::condition_variable cv_;
  std::vector<reread_done> waiting_;
  bool stop_ = false;
  // What polls already logged, so that a refused manifest or an
  // unreachable repository is one warning, not one per poll.
  std::set<std::string> refusals_logged_;
  std::string last_error_;
  std::thread thread_;
};

} // namespace shoal
