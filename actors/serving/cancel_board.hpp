// Tickets cancelled while their replica may be running them. A replica's
// thread is inside backend::run then and reads no messages, so whoever
// cancels (the router for a local replica, a worker's agent for its head's)
// posts the ticket here as well as in a message; the executor's progress
// callback looks here between steps, and the executor forgets a ticket when
// the message itself arrives.
#pragma once

#include <cstdint>
#include <mutex>
#include <unordered_set>
#include <vector>

namespace shoal {

class cancel_board {
public:
  // The process's board.
  static cancel_board& instance() {
    static cancel_board board;
    return board;
  }

  void cancel(uint64_t ticket) {
    std::lock_guard<std::mutex> guard{mtx_};
    tickets_.insert(ticket);
  }

  void forget(uint64_t ticket) {
    std::lock_guard<std::mutex> guard{mtx_};
    tickets_.erase(ticket);
  }

  // True when every ticket is cancelled (and there is one).
  bool all_cancelled(const std::vector<uint64_t>& tickets) const {
    std::lock_guard<std::mutex> guard{mtx_};
    for (auto t : tickets) {
      if (tickets_.count(t) == 0) {
        return false;
      }
    }
    return !tickets.empty();
  }

  bool cancelled(uint64_t ticket) const {
    std::lock_guard<std::mutex> guard{mtx_};
    return tickets_.count(ticket) > 0;
  }

private:
  mutable std::mutex mtx_;
  std::unordered_set<uint64_t> tickets_;
};

} // namespace shoal
