// Spot preemption notices. A spot machine is reclaimed with a short
// warning (two minutes on the big clouds): the cloud's metadata service
// starts answering an instance-action URL, or a node termination handler
// writes a file. The watcher looks at either every poll interval and, on
// the first notice, asks the node to drain: its replicas are replaced on
// other workers first, then it exits, well before the SIGTERM that
// follows.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace shoal {

struct preemption_config {
  std::string url;  // empty: not polled
  std::string file; // empty: not watched
  std::chrono::milliseconds poll{2000};
};

// Whether an answer of the notice URL is a notice: a 200 whose body is not
// "false" (GCP's `preempted` answers 200 FALSE until it is preempted; AWS's
// instance-action answers 404 until there is an action).
bool is_preemption_notice(long http_status, const std::string& body);

class preemption_watcher {
public:
  // Starts a thread that calls `on_notice(source)` once, on the first
  // notice (`source` names the URL or the file). Nothing is started when
  // neither a URL nor a file is configured.
  static std::unique_ptr<preemption_watcher>
  start(preemption_config cfg,
        std::function<void(const std::string&)> on_notice);

  // Stops and joins the thread.
  ~preemption_watcher();

private:
  preemption_watcher() = default;
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace shoal
