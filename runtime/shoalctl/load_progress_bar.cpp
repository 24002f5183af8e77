#include "runtime/shoalctl/load_progress_bar.hpp"

#include <algorithm>
#include <cstdio>

namespace shoal::ctl {

load_progress_bar::load_progress_bar(client& c, std::string model, bool enabled)
    : client_(c), model_(std::move(model)), enabled_(enabled),
      next_poll_(clock_type::now()), last_t_(next_poll_) {
  // nop
}

void load_progress_bar::tick(const std::function<bool()>& finished) {
  auto now = clock_type::now();
  if (!enabled_ || asking_ || now < next_poll_) {
    return;
  }
  next_poll_ = now + std::chrono::milliseconds{250};
  asking_ = true;
  request q;
  q.op = op_kind::models;
  client_.submit(
      std::move(q),
      [this, finished](caf::expected<reply> r) {
        asking_ = false;
        if (!r || finished()) {
          return;
        }
        for (auto& m : r->models) {
          if (m.name == model_ && m.has_progress) {
            draw(m);
          }
        }
      },
      std::chrono::milliseconds{2000}, 0);
}

void load_progress_bar::draw(const model_info& m) {
  auto t = clock_type::now();
  auto dt = std::chrono::duration<double>(t - last_t_).count();
  if (dt > 0.2 && m.bytes_done >= last_done_) {
    rate_ = (m.bytes_done - last_done_) / dt;
    last_done_ = m.bytes_done;
    last_t_ = t;
  }
  constexpr int width = 30;
  double frac = m.bytes_total > 0 ? static_cast<double>(m.bytes_done) /
                                        static_cast<double>(m.bytes_total)
                                  : 0.0;
  auto fill = static_cast<int>(frac * width);
  char line[160];
  int n = std::snprintf(
      line, sizeof(line), "\rloading %s [%s%s] %3.0f%% %.1f/%.1f MB %.1f MB/s",
      model_.c_str(), std::string(static_cast<size_t>(fill), '#').c_str(),
      std::string(static_cast<size_t>(width - fill), '.').c_str(), frac * 100,
      m.bytes_done / 1e6, m.bytes_total / 1e6, rate_ / 1e6);
  std::fputs(line, stderr);
  drawn_ = std::max(drawn_, static_cast<size_t>(n > 0 ? n : 0));
}

void load_progress_bar::clear() {
  if (drawn_ > 0) {
    std::fprintf(stderr, "\r%*s\r", static_cast<int>(drawn_), "");
  }
}

} // namespace shoal::ctl
