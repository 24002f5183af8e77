// zmq_poll with a short busy-poll first: a thread that polls without
// blocking for a few tens of microseconds after its last event takes the
// next one without being woken, which on virtual machines (where a halted
// vCPU costs an inter-processor interrupt and a VM exit to wake) is most of
// what a hand-over between threads costs.
#pragma once

#include <chrono>

#include <zmq.hpp>

namespace shoal {

// Like zmq::poll(items, n, timeout) (timeout < 0: no limit), but polls
// without blocking, yielding the CPU between polls, for up to `spin`
// before it blocks for the rest of the timeout. Returns zmq_poll's count.
int spin_poll(zmq::pollitem_t* items, size_t n,
              std::chrono::milliseconds timeout,
              std::chrono::microseconds spin);

} // namespace shoal
