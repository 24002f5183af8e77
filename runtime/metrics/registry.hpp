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
#include <stdexcept>
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
  // Bounds must be strictly increasing and not NaN; a trailing +Inf is implied
  // (and dropped if given). Bad bounds throw std::invalid_argument.
  explicit histogram(std::vector<double> upper_bounds);
  void observe(double v) noexcept;
  // Cumulative counts per bound, sum and count. `bounds` ends with +Inf and
  // has the same size as `cumulative`; count == cumulative.back().
  struct snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;
    double sum = 0;
    uint64_t count = 0;
  };
  snapshot snap() const;

private:
  std::vector<double> bounds_;
  // Non-cumulative, bounds_.size() + 1 (the last is +Inf): one increment per
  // observation; render sums them up.
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;
  std::atomic<double> sum_{0.0};
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
  // Names that are not valid Prometheus metric or label names throw
  // std::invalid_argument.
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

  // The text exposition of every family, sorted by name. Runs the on_collect
  // callbacks first, without holding the registry lock, so they may register
  // or update metrics; an exception from a callback propagates.
  std::string render() const;

private:
  enum class kind : uint8_t { counter, gauge, histogram };

  struct entry {
    kind type;
    std::vector<std::string> label_names;
    std::vector<double> bounds; // histograms only
    std::shared_ptr<void> fam;  // family<counter|gauge|histogram>
  };

  // Throws when `name` would share a sample name with a histogram's.
  void check_clash(kind type, const std::string& name) const;
  entry& add(kind type, std::string name, std::vector<std::string> labels,
             std::vector<double> bounds, const std::string& help);

  mutable std::mutex mtx_;
  std::map<std::string, entry> families_;
  std::vector<std::function<void()>> collectors_;
};

// The children of one metric name, one per label-value combination.
template <class T>
class family {
public:
  family(std::string name, std::string help, std::vector<std::string> labels,
         std::function<std::unique_ptr<T>()> make)
      : name_(std::move(name)), help_(std::move(help)),
        labels_(std::move(labels)), make_(std::move(make)) {
    // ok
  }

  // The child for these label values (same order as the label names). A
  // count mismatch throws std::invalid_argument: a programming bug.
  T& with(const std::vector<std::string>& values) {
    if (values.size() != labels_.size()) {
      throw std::invalid_argument(
          "metric " + name_ + " has " + std::to_string(labels_.size()) +
          " labels, got " + std::to_string(values.size()) + " values");
    }
    std::lock_guard<std::mutex> guard{mtx_};
    auto i = children_.find(values);
    if (i != children_.end()) {
      return *i->second;
    }
    // A removed child comes back as it was: references handed out before
    // remove() must stay valid, and a counter must not go backwards.
    auto& slot = children_[values];
    if (auto j = retired_.find(values); j != retired_.end()) {
      slot = std::move(j->second);
      retired_.erase(j);
    } else {
      slot = make_();
    }
    return *slot;
  }

  // Stops exporting a child, e.g. when a model's last replica retires. The
  // child itself lives on (see with()), so memory is bounded by the number
  // of distinct label values ever used.
  void remove(const std::vector<std::string>& values) {
    std::lock_guard<std::mutex> guard{mtx_};
    if (auto i = children_.find(values); i != children_.end()) {
      retired_.emplace(i->first, std::move(i->second));
      children_.erase(i);
    }
  }

  const std::string& name() const noexcept { return name_; }
  const std::string& help() const noexcept { return help_; }
  const std::vector<std::string>& label_names() const noexcept {
    return labels_;
  }

  template <class F>
  void for_each(F&& f) const {
    std::lock_guard<std::mutex> guard{mtx_};
    for (auto& [values, child] : children_) {
      f(values, *child);
    }
  }

private:
  std::string name_;
  std::string help_;
  std::vector<std::string> labels_;
  std::function<std::unique_ptr<T>()> make_;
  mutable std::mutex mtx_;
  std::map<std::vector<std::string>, std::unique_ptr<T>> children_;
  std::map<std::vector<std::string>, std::unique_ptr<T>> retired_;
};

// Escapes a label value per the exposition format (\\, \", \n). Invalid
// UTF-8 becomes U+FFFD: one bad byte must not make the whole scrape fail.
std::string escape_label_value(std::string_view v);

} // namespace shoal::metrics
