// Dynamic batching policy of an executor (no actor code, so it is unit
// tested directly): a batch runs when max_batch items wait, or when the
// oldest waiting item has waited max_delay.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <vector>

#include "gpu/model/model_spec.hpp"
#include "net/wire/exec.hpp"

namespace shoal {

class batcher {
public:
  batcher(uint32_t max_batch, std::chrono::microseconds max_delay);

  void push(exec_item item, time_point now);

  size_t size() const noexcept { return queue_.size(); }

  // Whether the item of `ticket` waits here.
  bool contains(uint64_t ticket) const noexcept {
    for (auto& [item, t] : queue_) {
      if (item.ticket == ticket) {
        return true;
      }
    }
    return false;
  }
  bool empty() const noexcept { return queue_.empty(); }

  // True when the queued rows fill a batch (requests may carry many rows).
  bool full() const noexcept { return queued_rows_ >= max_batch_; }

  // True when a batch should run now.
  bool ready(time_point now) const noexcept;

  // How long until the oldest item's delay runs out (zero if ready now).
  std::chrono::microseconds time_to_ready(time_point now) const noexcept;

  // Removes and returns the next batch: the oldest items whose rows add up
  // to at most max_batch (always at least one item).
  std::vector<exec_item> take();

  // Time at which each taken item was queued, for queue timing.
  const std::vector<time_point>& taken_arrivals() const noexcept {
    return taken_arrivals_;
  }

  uint32_t max_batch() const noexcept { return max_batch_; }
  std::chrono::microseconds max_delay() const noexcept { return max_delay_; }

private:
  uint32_t max_batch_;
  std::chrono::microseconds max_delay_;
  uint64_t queued_rows_ = 0;
  std::deque<std::pair<exec_item, time_point>> queue_;
  std::vector<time_point> taken_arrivals_;
};

// Concatenates the requests' inputs along the batch axis (one tensor per
// declared input, rows summed). A single item's inputs are moved, not
// copied.
std::vector<tensor> concat_inputs(std::vector<exec_item>& items,
                                  uint64_t& rows);

// Splits a batch output back into per-request tensors by rows.
std::vector<std::vector<tensor>>
split_outputs(std::vector<tensor>& outputs,
              const std::vector<exec_item>& items);

} // namespace shoal
