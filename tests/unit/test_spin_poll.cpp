// spin_poll: polling for a while before blocking must not change what a
// poll returns: an event during the spin or after it is seen, a timeout
// shorter than the spin is kept, and ZeroMQ sockets work as with zmq_poll.
#include "net/poll/spin_poll.hpp"

#include <chrono>
#include <cstdint>
#include <thread>

#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.hpp>

using namespace shoal;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

struct event_fd {
  int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  ~event_fd() { ::close(fd); }
  void signal() const {
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(fd, &one, sizeof(one));
  }
};

// Signals `ev` after `delay` on another thread.
std::thread signal_after(const event_fd& ev, std::chrono::milliseconds delay) {
  return std::thread{[&ev, delay] {
    std::this_thread::sleep_for(delay);
    ev.signal();
  }};
}

} // namespace

TEST(spin_poll, an_event_during_the_spin_is_returned) {
  event_fd ev;
  zmq::pollitem_t item{nullptr, ev.fd, ZMQ_POLLIN, 0};
  auto t = signal_after(ev, 5ms);
  // The spin outlasts the delay (unless another thread wants the CPU,
  // when it blocks instead): either way the event is what returns.
  EXPECT_EQ(spin_poll(&item, 1, -1ms, 2s), 1);
  EXPECT_TRUE(item.revents & ZMQ_POLLIN);
  t.join();
}

TEST(spin_poll, an_event_after_the_spin_wakes_the_blocking_poll) {
  event_fd ev;
  zmq::pollitem_t item{nullptr, ev.fd, ZMQ_POLLIN, 0};
  auto t = signal_after(ev, 100ms);
  EXPECT_EQ(spin_poll(&item, 1, -1ms, 100us), 1);
  EXPECT_TRUE(item.revents & ZMQ_POLLIN);
  t.join();
}

TEST(spin_poll, a_timeout_shorter_than_the_spin_is_kept) {
  event_fd ev;
  zmq::pollitem_t item{nullptr, ev.fd, ZMQ_POLLIN, 0};
  auto start = steady::now();
  EXPECT_EQ(spin_poll(&item, 1, 20ms, 30s), 0);
  // Far below the 30 s spin: it ended with the timeout.
  EXPECT_LT(steady::now() - start, 10s);
  EXPECT_EQ(item.revents, 0);
  EXPECT_EQ(spin_poll(&item, 1, 0ms, 30s), 0);
}

TEST(spin_poll, zeromq_sockets_are_polled_as_zmq_poll_does) {
  zmq::context_t ctx;
  zmq::socket_t a{ctx, zmq::socket_type::pair};
  zmq::socket_t b{ctx, zmq::socket_type::pair};
  a.bind("inproc://spin_poll_test");
  b.connect("inproc://spin_poll_test");
  zmq::pollitem_t item{static_cast<void*>(b), 0, ZMQ_POLLIN, 0};
  EXPECT_EQ(spin_poll(&item, 1, 10ms, 1ms), 0);
  for (int i = 0; i < 100; ++i) {
    a.send(zmq::buffer(std::to_string(i)));
    ASSERT_EQ(spin_poll(&item, 1, 5000ms, 200us), 1);
    zmq::message_t m;
    ASSERT_TRUE(b.recv(m, zmq::recv_flags::dontwait));
    EXPECT_EQ(m.to_string(), std::to_string(i));
  }
}
