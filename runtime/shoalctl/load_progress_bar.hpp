// The progress bar `shoalctl load` draws on a terminal while a node
// fetches or verifies a model's files: it asks the `models` op for the
// load's progress a few times a second, on the same client as the load.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "net/client/client.hpp"

namespace shoal::ctl {

class load_progress_bar {
public:
  // Draws nothing unless `enabled` (stderr is a terminal, no --json).
  load_progress_bar(client& c, std::string model, bool enabled);

  // Between polls of the client: asks for progress when it is time and no
  // question is open. `finished` tells whether the load already answered,
  // so that a late progress reply draws nothing.
  void tick(const std::function<bool()>& finished);

  // Erases the bar.
  void clear();

private:
  void draw(const model_info& m);

  client& client_;
  std::string model_;
  bool enabled_;
  bool asking_ = false;
  clock_type::time_point next_poll_;
  size_t drawn_ = 0;
  uint64_t last_done_ = 0;
  clock_type::time_point last_t_;
  double rate_ = 0;
};

} // namespace shoal::ctl
