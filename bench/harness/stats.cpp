#include "bench/harness/stats.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace shoal::bench {

double rank(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) {
    return nan_v;
  }
  auto r =
      static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return sorted[std::min(sorted.size() - 1, r == 0 ? 0 : r - 1)];
}

percentiles summarize(std::vector<double> xs) {
  std::sort(xs.begin(), xs.end());
  percentiles p;
  p.n = xs.size();
  p.p50 = rank(xs, 0.5);
  p.p90 = rank(xs, 0.9);
  p.p99 = rank(xs, 0.99);
  p.p999 = rank(xs, 0.999);
  p.mean = mean(xs);
  return p;
}

double median(std::vector<double> xs) {
  if (xs.empty()) {
    return nan_v;
  }
  std::sort(xs.begin(), xs.end());
  auto n = xs.size();
  return n % 2 ? xs[n / 2] : (xs[n / 2 - 1] + xs[n / 2]) / 2;
}

double mean(const std::vector<double>& xs) {
  if (xs.empty()) {
    return nan_v;
  }
  return std::accumulate(xs.begin(), xs.end(), 0.0) /
         static_cast<double>(xs.size());
}

double max_of(const std::vector<double>& xs) {
  return xs.empty() ? nan_v : *std::max_element(xs.begin(), xs.end());
}

percentiles median_of_rounds(const std::vector<percentiles>& rounds) {
  auto med = [&](double percentiles::*m) {
    std::vector<double> xs;
    for (const auto& p : rounds) {
      xs.push_back(p.*m);
    }
    return median(xs);
  };
  percentiles p;
  p.n = rounds.empty() ? 0 : rounds.front().n;
  p.p50 = med(&percentiles::p50);
  p.p90 = med(&percentiles::p90);
  p.p99 = med(&percentiles::p99);
  p.p999 = med(&percentiles::p999);
  p.mean = med(&percentiles::mean);
  return p;
}

json to_json(const percentiles& p) {
  return json::object()
      .set("n", p.n)
      .set("p50_us", p.p50)
      .set("p90_us", p.p90)
      .set("p99_us", p.p99)
      .set("p999_us", p.p999)
      .set("mean_us", p.mean);
}

} // namespace shoal::bench
