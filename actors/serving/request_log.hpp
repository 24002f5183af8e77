// request_log: one JSON line per request (log.requests), for an operator
// who wants to know who asked for what and how long it took. The gateway
// writes the lines of the replies it sends, the router those of the
// replies it sends; a line never holds tensor data. Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <caf/expected.hpp>

#include "net/wire/message.hpp"

namespace spdlog {
class logger;
}

namespace shoal {

// What one line says about one request and its reply.
struct request_record {
  const request_id* id = nullptr;
  std::string_view tenant;
  std::string_view model;
  std::optional<uint64_t> version;
  op_kind op = op_kind::infer;
  status code = status::ok;
  reply_source source = reply_source::none;
  timing timing_us;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
};

class request_log {
public:
  // Lines go to `file` (appended; created when missing), or to the node's
  // log at level info when `file` is empty. `sample` (0..1) is the share
  // of requests written. Fails with errc::io_error naming the file.
  static caf::expected<std::shared_ptr<request_log>> open(std::string file,
                                                          double sample);

  // Whether this request is written (decided once per request).
  bool sampled() noexcept;

  void write(const request_record& rec);

  // The line for `rec` at wall time `unix_ns` (for tests).
  static std::string format(const request_record& rec, int64_t unix_ns);

private:
  request_log() = default;
  std::shared_ptr<spdlog::logger> out_; // null: the default logger
  uint64_t threshold_ = 0;              // sampled when a draw is below
  bool all_ = true;
};

} // namespace shoal
