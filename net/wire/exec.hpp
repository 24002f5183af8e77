// One request as an executor runs it, and its outcome. Locally they travel
// between the router and an executor in CAF messages; between nodes the
// cluster codec (net/link/cluster_codec.hpp) carries them in `exec` and
// `done` link messages. Kept here, with the rest of the wire vocabulary, so
// that the codec needs nothing from the actors that use them.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "net/wire/message.hpp"

namespace shoal {

// Steady-clock nanoseconds: time points travel inside messages as integers.
inline int64_t to_ns(time_point t) noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             t.time_since_epoch())
      .count();
}

inline int64_t now_ns() noexcept {
  return to_ns(clock_type::now());
}

// One request handed to an executor.
struct exec_item {
  uint64_t ticket = 0;
  std::vector<tensor> inputs;
  uint64_t rows = 1;
  int64_t deadline_ns = 0;
  int64_t sent_ns = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, exec_item& x) {
  return f(x.ticket, x.inputs, x.rows, x.deadline_ns, x.sent_ns);
}

// The outcome of one exec_item.
struct exec_result {
  uint64_t ticket = 0;
  uint8_t code = 0; // status
  std::string error;
  std::string outputs_encoded; // msgpack array of tensors
  uint64_t queue_us = 0;       // waiting inside the executor
  uint64_t compute_us = 0;
  uint32_t batch_size = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, exec_result& x) {
  return f(x.ticket, x.code, x.error, x.outputs_encoded, x.queue_us,
           x.compute_us, x.batch_size);
}

} // namespace shoal
