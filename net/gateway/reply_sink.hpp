// The one way replies reach the gateway thread from actors: a queue plus an
// eventfd the gateway polls next to its ROUTER socket, so that no ZeroMQ
// socket is ever touched by two threads.
#pragma once

#include <mutex>
#include <string>
#include <vector>

namespace shoal {

// Where a reply goes: the client's ROUTER identity and whether it was a REQ
// socket (whose empty delimiter frame is mirrored).
struct reply_route {
  std::string identity;
  bool delimiter = false;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, reply_route& x) {
  return f(x.identity, x.delimiter);
}

class reply_sink {
public:
  struct outgoing {
    reply_route route;
    std::string body;
  };

  reply_sink();
  ~reply_sink();
  reply_sink(const reply_sink&) = delete;
  reply_sink& operator=(const reply_sink&) = delete;

  // Thread-safe. Wakes the gateway only when the queue was empty, so a
  // burst of replies costs one wake-up.
  void push(reply_route route, std::string body);

  // Gateway side: the descriptor to poll, and the queued replies.
  int fd() const noexcept { return fd_; }
  void drain(std::vector<outgoing>& out);

private:
  int fd_ = -1;
  mutable std::mutex mtx_;
  std::vector<outgoing> queue_;
};

} // namespace shoal
