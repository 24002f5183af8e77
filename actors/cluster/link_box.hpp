// The node link as the cluster actors hold it. The actors must exist before
// the link starts (its callbacks send to them), so they get this box first
// and the node fills it right after the link started; a call in between
// waits for that moment (bounded) instead of finding no link.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "net/wire/error.hpp"
#include "net/link/node_link.hpp"

namespace shoal {

class link_box {
public:
  void set(std::shared_ptr<node_link> link) {
    {
      std::lock_guard guard{mtx_};
      link_ = std::move(link);
    }
    cv_.notify_all();
  }

  std::shared_ptr<node_link> get() const {
    std::unique_lock guard{mtx_};
    cv_.wait_for(guard, std::chrono::seconds{2},
                 [&] { return link_ != nullptr; });
    return link_;
  }

  caf::error send(const std::string& peer, std::string_view type,
                  std::string body) const {
    auto l = get();
    if (!l)
      return make_error(errc::unavailable, "node link not started");
    return l->send(peer, type, std::move(body));
  }

  caf::error set_hello(std::string body) const {
    auto l = get();
    if (!l)
      return make_error(errc::unavailable, "node link not started");
    return l->set_hello(std::move(body));
  }

private:
  mutable std::mutex mtx_;
  mutable std::condition_variable cv_;
  std::shared_ptr<node_link> link_;
  bool closed_ = false;
};

} // namespace shoal
