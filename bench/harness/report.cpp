#include "bench/harness/report.hpp"

#include <algorithm>
#include <cstdio>

#include "tests/support/process.hpp"

namespace shoal::bench {

std::string fmt(double v, int prec) {
  if (std::isnan(v)) {
    return "-";
  }
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", prec, v);
  return buf;
}

check_row check_row::at_most(std::string metric, double shoal, double baseline,
                             double limit) {
  check_row r{std::move(metric), shoal, baseline, shoal / baseline};
  r.target = "<= " + fmt(limit, 1) + "x";
  r.pass = r.ratio <= limit;
  return r;
}

check_row check_row::at_least(std::string metric, double shoal, double baseline,
                              double limit) {
  check_row r{std::move(metric), shoal, baseline, shoal / baseline};
  r.target = ">= " + fmt(limit, 1) + "x";
  r.pass = r.ratio >= limit;
  return r;
}

check_row check_row::info(std::string metric, double shoal, double baseline) {
  return {std::move(metric), shoal, baseline, shoal / baseline};
}

report::report(std::string bench)
    : bench_(std::move(bench)), load_before_(shoal::test::loadavg()) {}

void report::print_checks(const std::string& note) const {
  size_t width = 34;
  for (const auto& r : checks_) {
    width = std::max(width, r.metric.size());
  }
  auto w = static_cast<int>(width);
  std::printf("\n%-*s %12s %12s %7s %9s  %s\n", w, "metric", "shoal",
              "baseline", "ratio", "target", "result");
  std::printf("%s\n", std::string(width + 52, '-').c_str());
  for (const auto& r : checks_) {
    const char* result = r.target.empty() ? "info" : r.pass ? "PASS" : "FAIL";
    std::printf("%-*s %12s %12s %7s %9s  %s\n", w, r.metric.c_str(),
                fmt(r.shoal, r.prec).c_str(), fmt(r.baseline, r.prec).c_str(),
                fmt(r.ratio, 3).c_str(),
                r.target.empty() ? "-" : r.target.c_str(), result);
  }
  if (!note.empty()) {
    std::printf("(%s)\n", note.c_str());
  }
  std::fflush(stdout);
}

void report::finish() {
  load_after_ = shoal::test::loadavg();
}

void report::write(const std::string& path) const {
  if (path.empty()) {
    return;
  }
  auto checks = json::array();
  for (const auto& r : checks_) {
    checks.push(json::object()
                    .set("metric", r.metric)
                    .set("shoal", r.shoal)
                    .set("baseline", r.baseline)
                    .set("ratio", r.ratio)
                    .set("target", r.target.empty() ? json{} : json{r.target})
                    .set("pass", r.target.empty() ? json{} : json{r.pass}));
  }
  // The bench's sections in the order it set them, between the common head
  // and tail.
  auto out = json::object().set("bench", bench_);
  out.merge(doc_);
  out.set("loadavg",
          json::object().set("before", load_before_).set("after", load_after_));
  out.set("checks", std::move(checks));
  write_json_file(path, out);
  std::printf("wrote %s\n", path.c_str());
}

} // namespace shoal::bench
