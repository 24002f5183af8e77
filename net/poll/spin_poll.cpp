#include "net/poll/spin_poll.hpp"

#include <algorithm>

#include <sched.h>

namespace shoal {

namespace {

using clock_type = std::chrono::steady_clock;

// A yield that took longer than this ran another thread: the CPU is wanted,
// and spinning on would take it from work.
constexpr auto yielded_to_another = std::chrono::microseconds{5};

// Polls without blocking until an event, `until`, or a yield that ran
// another thread. Returns zmq_poll's count (0: nothing came).
int spin_until(zmq::pollitem_t* items, size_t n, clock_type::time_point until) {
  for (;;) {
    if (auto rc = zmq::poll(items, n, std::chrono::milliseconds{0}); rc > 0) {
      return rc;
    }
    auto before = clock_type::now();
    sched_yield();
    auto after = clock_type::now();
    if (after - before > yielded_to_another || after >= until) {
      return 0;
    }
  }
}

} // namespace

int spin_poll(zmq::pollitem_t* items, size_t n,
              std::chrono::milliseconds timeout,
              std::chrono::microseconds spin) {
  if (spin.count() <= 0 || timeout.count() == 0) {
    return zmq::poll(items, n, timeout);
  }
  auto start = clock_type::now();
  auto until = start + spin;
  if (timeout.count() > 0) {
    until = std::min<clock_type::time_point>(until, start + timeout);
  }
  if (auto rc = spin_until(items, n, until); rc > 0) {
    return rc;
  }
  if (timeout.count() > 0) {
    auto spent = std::chrono::duration_cast<std::chrono::milliseconds>(
        clock_type::now() - start);
    timeout = std::max(timeout - spent, std::chrono::milliseconds{0});
  }
  return zmq::poll(items, n, timeout);
}

} // namespace shoal
