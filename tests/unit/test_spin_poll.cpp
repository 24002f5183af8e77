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

// Polls an eventfd that another thread signals after `delay`, with no
// timeout: whatever the spin, the event is what must come back.
void expect_the_event(std::chrono::milliseconds delay,
                      std::chrono::microseconds spin) {
  event_fd ev;
  zmq::pollitem_t item{nullptr, ev.fd, ZMQ_POLLIN, 0};
  std::thread signaller{[&ev, delay] {
    std::this_thread::sleep_for(delay);
    ev.signal();
  }};
  EXPECT_EQ(spin_poll(&item, 1, -1ms, spin), 1);
  EXPECT_TRUE(item.revents & ZMQ_POLLIN);
  signaller.join();
}

} // namespace

TEST(spin_poll, an_event_during_the_spin_is_returned) {
  // The spin outlasts the delay (unless another thread wants the CPU,
  // when it blocks instead).
  expect_the_event(5ms, 2s);
}

TEST(spin_poll, an_event_after_the_spin_wakes_the_blocking_poll) {
  expect_the_event(100ms, 100us);
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
