// The load generator behind `shoalctl bench`, and the pieces `shoalctl`
// shares with it: deterministic inputs from a model's input spec, a latency
// histogram, and a few JSON helpers.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "net/client/client.hpp"
#include "net/wire/message.hpp"

namespace shoal::ctl {

// -- inputs -----------------------------------------------------------------

// Tensors for `spec` with the batch axis (-1) set to 1 and values that depend
// only on (seed, index): the same index always gives the same bytes (a cache
// hit), a new index gives new bytes (a miss). Floats are uniform in [-1, 1),
// u8 covers 0..255, other integers 0..99, bools 0/1.
std::vector<tensor> make_inputs(const std::vector<io_spec>& spec, uint64_t seed,
                                uint64_t index);

// Bytes of the tensors make_inputs() returns for `spec`, or nullopt when a
// dimension is negative (other than -1) or the product overflows.
std::optional<uint64_t> input_bytes(const std::vector<io_spec>& spec);

// Appends element `i` of `t` as text: a JSON number (or null/true/false) when
// `json`, else a human-readable rendering (nan, inf, true, false).
void append_value(std::string& out, const tensor& t, size_t i, bool json);

// -- latency histogram --------------------------------------------------------

// Log-linear buckets over nanoseconds, 128 sub-buckets per power of two, so a
// reported percentile is within 1/128 (< 0.8%) of the true value. Fixed size,
// no allocation per sample: recording stays cheap at 100k samples/s.
class latency_histogram {
public:
  void record(uint64_t ns) noexcept;
  uint64_t count() const noexcept { return count_; }
  uint64_t max_ns() const noexcept { return max_; }
  double mean_ns() const noexcept;
  // The value at quantile q (0..1), nanoseconds; 0 when empty.
  uint64_t quantile_ns(double q) const noexcept;

private:
  static constexpr int sub_bits = 7;
  static constexpr size_t sub_count = size_t{1} << sub_bits;
  static constexpr size_t bucket_count = sub_count * (64 - sub_bits + 1);
  static size_t index_of(uint64_t v) noexcept;
  static uint64_t value_of(size_t idx) noexcept;

  std::array<uint64_t, bucket_count> buckets_{};
  uint64_t count_ = 0;
  uint64_t max_ = 0;
  long double sum_ = 0;
};

// -- bench
// ----------------------------------------------------------------------

struct bench_options {
  std::string model;
  std::optional<uint64_t> version;
  // Closed loop: this many requests in flight. Ignored when rate > 0.
  size_t concurrency = 16;
  // Open loop: requests per second at fixed intervals.
  double rate = 0;
  double duration_s = 10;
  double warmup_s = 1;
  // --zipf: ranks drawn over this many distinct inputs.
  uint64_t distinct = 1000;
  // --hot-ratio: share of requests that reuse one of hot_set inputs; the
  // rest use a never-seen input.
  double hot_ratio = 0.9;
  size_t hot_set = 16;
  std::optional<double> zipf;
  cache_mode cache = cache_mode::use;
  uint64_t seed = 0;
  std::string tenant;
  std::chrono::milliseconds timeout{5000};
  // Redraw a progress line on stderr every 250 ms.
  bool progress = false;
};

struct bench_result {
  uint64_t requests = 0; // sent inside the measured window
  uint64_t replies = 0;  // replies (any status) to those requests
  uint64_t ok = 0;
  uint64_t cache_hits = 0; // OK replies with source=cache
  uint64_t coalesced = 0;  // OK replies with source=coalesced
  uint64_t timeouts = 0;   // no reply within --timeout-ms
  uint64_t unmatched = 0;  // late or malformed replies the client dropped
  std::map<std::string, uint64_t> errors; // non-OK status -> count
  double measured_s = 0;                  // window plus the drain after it
  latency_histogram latency;

  double throughput_rps() const noexcept;
  double hit_ratio() const noexcept;
};

// Runs warm-up and measurement against `model` (as listed by the models op).
// Blocks for about warmup + duration seconds, plus at most one timeout to
// drain the requests still in flight.
bench_result run_bench(client& c, const model_info& model,
                       const bench_options& opts);

void print_bench_text(std::ostream& out, const bench_options& opts,
                      const bench_result& res);
void print_bench_json(std::ostream& out, const bench_result& res);

// -- JSON helpers
// ---------------------------------------------------------------

// Appends `s` as a quoted JSON string (control and non-ASCII bytes escaped
// as needed; invalid UTF-8 is passed through byte-wise as \u00XX).
void append_json_string(std::string& out, std::string_view s);

// Appends a JSON number; NaN and infinities become null.
void append_json_number(std::string& out, double x, int precision = 6);

} // namespace shoal::ctl
