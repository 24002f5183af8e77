// Latency percentiles and medians of rounds, as every benchmark reports them.
#pragma once

#include <chrono>
#include <cmath>
#include <cstddef>
#include <vector>

#include "bench/harness/json.hpp"

namespace shoal::bench {

// A figure that was not measured.
inline const double nan_v = std::nan("");

// Milliseconds from `t` (a steady_clock time, as bench_clock's) to now.
inline double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now() - t)
      .count();
}

struct percentiles {
  size_t n = 0;
  double p50 = 0, p90 = 0, p99 = 0, p999 = 0, mean = 0;
};

// Nearest-rank percentile `q` (0..1) of sorted values; NaN when empty.
double rank(const std::vector<double>& sorted, double q);

// p50, p90, p99, p99.9 (nearest rank) and the mean; NaN when empty.
percentiles summarize(std::vector<double> xs);

// The median (the mean of the middle two for an even count); NaN when
// empty.
double median(std::vector<double> xs);
double mean(const std::vector<double>& xs);
double max_of(const std::vector<double>& xs);

// Each field the median of the rounds': what a benchmark reports, so that
// one disturbed round does not move the result.
percentiles median_of_rounds(const std::vector<percentiles>& rounds);

// {"n", "p50_us", "p90_us", "p99_us", "p999_us", "mean_us"}.
json to_json(const percentiles& p);

} // namespace shoal::bench
