// The node link as the cluster actors hold it. The actors must exist before
// the link starts (its callbacks send to them), so they get this box first
// and the node fills it right after the link started; a call in between
// waits for that moment (bounded) instead of finding no link. The actors
// send only cluster messages, through the typed overloads of
// net/link/cluster_codec.hpp: a body always travels under its own op.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>

#include <caf/typed_actor.hpp>
#include <spdlog/spdlog.h>

#include "actors/messages.hpp"
#include "net/link/cluster_codec.hpp"
#include "net/link/node_link.hpp"
#include "net/wire/error.hpp"

namespace shoal {

// What the link thread posts to the node's cluster role: the coordinator
// on a head, the worker agent on a worker. Both implement it.
using link_events_handle = caf::typed_actor<
    // A session changed state: (peer, incarnation, peer_state as uint8_t,
    // reason, and on a head the worker's hello body when it comes up).
    // Nothing comes back.
    caf::reacts_to<peer_atom, std::string, uint64_t, uint8_t, std::string,
                   std::string>,
    // A cluster message of a live session: (peer, incarnation, op name as
    // on the wire, body). Nothing comes back.
    caf::reacts_to<link_msg_atom, std::string, uint64_t, std::string,
                   std::string>>;

class link_box {
public:
  void set(std::shared_ptr<node_link> link) {
    {
      std::lock_guard guard{mtx_};
      link_ = std::move(link);
    }
    cv_.notify_all();
  }

  // At shutdown: the link is gone for good, so callers stop waiting for
  // it (every executor's exit makes the agent send; two seconds each kept
  // a stopping worker alive for many seconds).
  void close() {
    {
      std::lock_guard guard{mtx_};
      link_ = nullptr;
      closed_ = true;
    }
    cv_.notify_all();
  }

  std::shared_ptr<node_link> get() const {
    std::unique_lock guard{mtx_};
    cv_.wait_for(guard, std::chrono::seconds{2},
                 [&] { return link_ != nullptr || closed_; });
    return link_;
  }

  // One of the cluster bodies (spawn_msg, done_msg, ...) to `peer`.
  template <class Body>
  caf::error send(const std::string& peer, const Body& body) const {
    auto l = get();
    if (!l) {
      return make_error(errc::unavailable, "node link not started");
    }
    return shoal::send(*l, peer, body);
  }

  caf::error set_hello(const worker_hello& hello) const {
    auto l = get();
    if (!l) {
      return make_error(errc::unavailable, "node link not started");
    }
    return shoal::set_hello(*l, hello);
  }

private:
  mutable std::mutex mtx_;
  mutable std::condition_variable cv_;
  std::shared_ptr<node_link> link_;
  bool closed_ = false;
};

// A message whose op this node does not know: a newer peer's, which an
// older node ignores during a rolling upgrade. Logged once per op name (a
// newer worker may send it every second), then only at debug level.
inline void log_unknown_op(std::set<std::string>& seen, std::string_view who,
                           const std::string& peer, std::string_view op) {
  constexpr size_t max_remembered = 64;
  if (seen.count(std::string{op}) > 0 || seen.size() >= max_remembered) {
    spdlog::debug("{}: {}: unknown op '{}' ignored", who, peer, op);
    return;
  }
  seen.emplace(op);
  spdlog::info("{}: {}: unknown op '{}' ignored (a newer node's?)", who, peer,
               op);
}

} // namespace shoal
