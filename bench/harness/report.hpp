// What every benchmark reports: its checks against the targets (shoal, the
// baseline measured in the same run, their ratio, the target, PASS/FAIL) as
// a table, and everything as JSON with --json FILE.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "bench/harness/json.hpp"

namespace shoal::bench {

// `v` with `prec` decimals, "-" for NaN.
std::string fmt(double v, int prec = 1);

struct check_row {
  std::string metric;
  double shoal = std::nan("");
  double baseline = std::nan(""); // NaN: none
  double ratio = std::nan("");    // NaN: none
  std::string target;             // empty: information, no target
  bool pass = true;
  int prec = 1; // decimals of shoal and baseline in the table

  // Targets on the ratio shoal / baseline.
  static check_row at_most(std::string metric, double shoal, double baseline,
                           double limit);
  static check_row at_least(std::string metric, double shoal, double baseline,
                            double limit);
  // No target: reported next to its baseline.
  static check_row info(std::string metric, double shoal, double baseline);

  check_row& decimals(int n) {
    prec = n;
    return *this;
  }
};

class report {
public:
  // Takes the load average before: the run's starting conditions.
  explicit report(std::string bench);

  // The bench's own sections of the JSON document ("config", results...).
  json& doc() noexcept { return doc_; }

  void add(check_row row) { checks_.push_back(std::move(row)); }
  const std::vector<check_row>& checks() const noexcept { return checks_; }

  // The checks as a table, then `note` (what the baseline is) when set.
  void print_checks(const std::string& note = {}) const;

  // Takes the load average after: call when the measurements are done.
  void finish();
  const std::string& load_before() const noexcept { return load_before_; }
  const std::string& load_after() const noexcept { return load_after_; }

  // With a path, writes {"bench", the sections, "loadavg", "checks"} there
  // and says so.
  void write(const std::string& path) const;

private:
  std::string bench_;
  json doc_ = json::object();
  std::vector<check_row> checks_;
  std::string load_before_, load_after_;
};

} // namespace shoal::bench
