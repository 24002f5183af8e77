// A small Prometheus registry: counters, gauges and histograms with labels,
// rendered in the text exposition format (version 0.0.4). prometheus-cpp is
// not packaged in Debian 12, so this is ours; promtool checks its output.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::metrics {

// Lock-free; safe to update from any thread. Handles returned by a family
// stay valid for the registry's lifetime, so hot paths look them up once.
class counter {
public:
  void inc(double v = 1.0) noexcept;
  double value() const noexcept;

private:
  std::atomic<double> value_{0.0};
};

class gauge {
public:
  void set(double v) noexcept;
  void inc(double v = 1.0) noexcept;
  void dec(double v = 1.0) noexcept;
  double value() const noexcept;

private:
  std::atomic<double> value_{0.0};
};

class histogram {
public:
  explicit histogram(std::vector<double> upper_bounds);
  void observe(double v) noexcept;
  // Cumulative counts per bound (the last is +Inf), sum and count.
  struct snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;
    double sum = 0;
    uint64_t count = 0;
  };
  snapshot snap() const;

private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_; // bounds_.size() + 1
  std::atomic<double> sum_{0.0};
  std::atomic<uint64_t> count_{0};
};

// Default latency buckets in seconds, 50 us .. 10 s.
std::vector<double> latency_buckets();

template <class T>
class family;

class registry {
public:
  registry() = default;
  registry(const registry&) = delete;
  registry& operator=(const registry&) = delete;

  // Registering the same name twice returns the same family (label names and
  // type must agree; a mismatch throws std::logic_error: a programming bug).
  family<counter>& counters(std::string name, std::string help,
                            std::vector<std::string> label_names = {});
  family<gauge>& gauges(std::string name, std::string help,
                        std::vector<std::string> label_names = {});
  family<histogram>& histograms(std::string name, std::string help,
                                std::vector<std::string> label_names = {},
                                std::vector<double> bounds = latency_buckets());

  // Called at every scrape, before rendering, to refresh gauges whose value
  // lives elsewhere (cache bytes, queue depths).
  void on_collect(std::function<void()> fn);

  // The text exposition of every family, sorted by name.
  std::string render() const;

private:
  struct entry;
  mutable std::mutex mtx_;
  std::map<std::string, std::shared_ptr<void>> families_;
  std::vector<std::function<void()>> collectors_;
  std::vector<std::function<void(std::string&)>> renderers_;
  std::map<std::string, std::function<void(std::string&)>> by_name_;
};

// The children of one metric name, one per label-value combination.
template <class T>
class family {
public:
  family(std::string name, std::string help, std::vector<std::string> labels,
         std::function<std::unique_ptr<T>()> make)
    : name_(std::move(name)),
      help_(std::move(help)),
      labels_(std::move(labels)),
      make_(std::move(make)) {
    // ok
  }

  // The child for these label values (same order as the label names).
  T& with(const std::vector<std::string>& values) {
    std::lock_guard<std::mutex> guard{mtx_};
    auto& slot = children_[values];
    if (!slot)
      slot = make_();
    return *slot;
  }

  // Drops a child, e.g. when a model's last replica retires.
  void remove(const std::vector<std::string>& values) {
    std::lock_guard<std::mutex> guard{mtx_};
    children_.erase(values);
  }

  const std::string& name() const noexcept { return name_; }
  const std::string& help() const noexcept { return help_; }
  const std::vector<std::string>& label_names() const noexcept {
    return labels_;
  }

  template <class F>
  void for_each(F&& f) const {
    std::lock_guard<std::mutex> guard{mtx_};
    for (auto& [values, child] : children_)
      f(values, *child);
  }

private:
  std::string name_;
  std::string help_;
  std::vector<std::string> labels_;
  std::function<std::unique_ptr<T>()> make_;
  mutable std::mutex mtx_;
  std::map<std::vector<std::string>, std::unique_ptr<T>> children_;
};

// Escapes a label value per the exposition format (\\, \", \n).
std::string escape_label_value(std::string_view v);

} // namespace shoal::metrics
