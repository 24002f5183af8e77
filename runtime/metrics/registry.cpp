#include "runtime/metrics/registry.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <utility>

namespace shoal::metrics {

// -- counter, gauge -----------------------------------------------------------

void counter::inc(double v) noexcept {
  // A counter only goes up (Prometheus treats a decrease as a reset), and
  // noexcept leaves no way to report a bad argument: drop it.
  if (!(v >= 0)) {
    return;
  }
  value_.fetch_add(v, std::memory_order_relaxed);
}

double counter::value() const noexcept {
  return value_.load(std::memory_order_relaxed);
}

void gauge::set(double v) noexcept {
  value_.store(v, std::memory_order_relaxed);
}

void gauge::inc(double v) noexcept {
  value_.fetch_add(v, std::memory_order_relaxed);
}

void gauge::dec(double v) noexcept {
  value_.fetch_sub(v, std::memory_order_relaxed);
}

double gauge::value() const noexcept {
  return value_.load(std::memory_order_relaxed);
}

// -- histogram ----------------------------------------------------------------

histogram::histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)) {
  // The +Inf bucket is always there; accept it spelled out too.
  if (!bounds_.empty() &&
      bounds_.back() == std::numeric_limits<double>::infinity()) {
    bounds_.pop_back();
  }
  for (size_t i = 0; i < bounds_.size(); ++i) {
    if (std::isnan(bounds_[i])) {
      throw std::invalid_argument("histogram bound is NaN");
    }
    if (i > 0 && !(bounds_[i - 1] < bounds_[i])) {
      throw std::invalid_argument(
          "histogram bounds must be strictly increasing");
    }
  }
  buckets_ = std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1);
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    buckets_[i].store(0, std::memory_order_relaxed);
  }
}

void histogram::observe(double v) noexcept {
  // First bound >= v ("le" is inclusive); NaN and values past the last bound
  // land in +Inf.
  auto i = static_cast<size_t>(
      std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

histogram::snapshot histogram::snap() const {
  snapshot out;
  out.bounds = bounds_;
  out.bounds.push_back(std::numeric_limits<double>::infinity());
  out.cumulative.reserve(out.bounds.size());
  uint64_t total = 0;
  for (size_t i = 0; i < out.bounds.size(); ++i) {
    total += buckets_[i].load(std::memory_order_relaxed);
    out.cumulative.push_back(total);
  }
  // Derived from the buckets rather than kept apart, so that a scrape racing
  // an observe() never shows _count != the +Inf bucket.
  out.count = total;
  out.sum = sum_.load(std::memory_order_relaxed);
  return out;
}

std::vector<double> latency_buckets() {
  return {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,    0.1,    0.25,    0.5,    1.0,   2.5,    5.0,   10.0};
}

// -- text format helpers ------------------------------------------------------

namespace {

bool is_metric_name(std::string_view s) {
  if (s.empty()) {
    return false;
  }
  auto first = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           c == ':';
  };
  auto rest = [&](char c) { return first(c) || (c >= '0' && c <= '9'); };
  return first(s[0]) && std::all_of(s.begin() + 1, s.end(), rest);
}

bool is_label_name(std::string_view s) {
  if (s.empty()) {
    return false;
  }
  auto first = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  };
  auto rest = [&](char c) { return first(c) || (c >= '0' && c <= '9'); };
  return first(s[0]) && std::all_of(s.begin() + 1, s.end(), rest);
}

// Length of the valid UTF-8 sequence at s[i], or 0 when it is invalid.
size_t utf8_len(std::string_view s, size_t i) {
  auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  auto cont = [&](size_t k) {
    return i + k < s.size() && (b(k) & 0xC0) == 0x80;
  };
  auto c = b(0);
  if (c < 0x80) {
    return 1;
  }
  if (c >= 0xC2 && c <= 0xDF) {
    return cont(1) ? 2 : 0;
  }
  if (c >= 0xE0 && c <= 0xEF) {
    if (!cont(1) || !cont(2)) {
      return 0;
    }
    // Overlong forms and UTF-16 surrogates.
    if ((c == 0xE0 && b(1) < 0xA0) || (c == 0xED && b(1) > 0x9F)) {
      return 0;
    }
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) {
      return 0;
    }
    if ((c == 0xF0 && b(1) < 0x90) || (c == 0xF4 && b(1) > 0x8F)) {
      return 0;
    }
    return 4;
  }
  return 0;
}

// Appends `v` escaped: backslash and newline always, double quote only in
// label values (HELP text keeps its quotes, per the format).
void append_escaped(std::string& out, std::string_view v, bool quote) {
  for (size_t i = 0; i < v.size();) {
    char c = v[i];
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && quote) {
      out += "\\\"";
    } else if (auto n = utf8_len(v, i); n > 0) {
      out.append(v.substr(i, n));
      i += n;
      continue;
    } else {
      out += "\xEF\xBF\xBD"; // U+FFFD
    }
    ++i;
  }
}

void append_value(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
    return;
  }
  if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
    return;
  }
  if (v == 0) {
    out += '0'; // also for -0
    return;
  }
  char buf[64];
  std::to_chars_result res;
  // Whole numbers (counts, bytes) read best without an exponent; past 1e17
  // doubles no longer hold every integer, so the shortest form is as exact.
  if (v == std::trunc(v) && std::fabs(v) < 1e17) {
    res = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed);
  } else {
    // Shortest round-trip digits, %g-style: "0.0001" rather than "1e-04",
    // the same spelling as Go's client (le values are compared as strings).
    res = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::general);
  }
  out.append(buf, res.ptr);
}

void append_labels(std::string& out, const std::vector<std::string>& names,
                   const std::vector<std::string>& values,
                   const char* le = nullptr, double le_value = 0) {
  if (names.empty() && le == nullptr) {
    return;
  }
  out += '{';
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) {
      out += ',';
    }
    out += names[i];
    out += "=\"";
    append_escaped(out, values[i], true);
    out += '"';
  }
  if (le != nullptr) {
    if (!names.empty()) {
      out += ',';
    }
    out += le;
    out += "=\"";
    append_value(out, le_value);
    out += '"';
  }
  out += '}';
}

void append_header(std::string& out, const std::string& name,
                   const std::string& help, const char* type) {
  out += "# HELP ";
  out += name;
  out += ' ';
  append_escaped(out, help, false);
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

template <class T>
void render_scalar(std::string& out, const family<T>& fam, const char* type) {
  append_header(out, fam.name(), fam.help(), type);
  fam.for_each([&](const std::vector<std::string>& values, const T& child) {
    out += fam.name();
    append_labels(out, fam.label_names(), values);
    out += ' ';
    append_value(out, child.value());
    out += '\n';
  });
}

void render_histogram(std::string& out, const family<histogram>& fam) {
  append_header(out, fam.name(), fam.help(), "histogram");
  const auto& names = fam.label_names();
  fam.for_each(
      [&](const std::vector<std::string>& values, const histogram& child) {
        auto snap = child.snap();
        for (size_t i = 0; i < snap.bounds.size(); ++i) {
          out += fam.name();
          out += "_bucket";
          append_labels(out, names, values, "le", snap.bounds[i]);
          out += ' ';
          append_value(out, static_cast<double>(snap.cumulative[i]));
          out += '\n';
        }
        out += fam.name();
        out += "_sum";
        append_labels(out, names, values);
        out += ' ';
        append_value(out, snap.sum);
        out += '\n';
        out += fam.name();
        out += "_count";
        append_labels(out, names, values);
        out += ' ';
        append_value(out, static_cast<double>(snap.count));
        out += '\n';
      });
}

constexpr const char* histogram_suffixes[] = {"_bucket", "_sum", "_count"};

} // namespace

std::string escape_label_value(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  append_escaped(out, v, true);
  return out;
}

// -- registry -----------------------------------------------------------------

namespace {

// Label names must be valid, not reserved, unique, and a histogram's must
// leave `le` to its buckets.
void check_labels(bool histogram, const std::string& name,
                  const std::vector<std::string>& labels) {
  for (size_t i = 0; i < labels.size(); ++i) {
    const auto& l = labels[i];
    if (!is_label_name(l) || l.compare(0, 2, "__") == 0) {
      throw std::invalid_argument("invalid label name \"" + l +
                                  "\" for metric " + name);
    }
    if (histogram && l == "le") {
      throw std::invalid_argument("histogram " + name +
                                  " cannot have a label named le");
    }
    if (std::find(labels.begin(), labels.begin() + i, l) !=
        labels.begin() + i) {
      throw std::invalid_argument("duplicate label name \"" + l +
                                  "\" for metric " + name);
    }
  }
}

} // namespace

// A histogram owns three sample names; another family must not reuse them
// or the exposition would hold two families' samples under one name.
void registry::check_clash(kind type, const std::string& name) const {
  auto clash = [&](const std::string& other) {
    throw std::invalid_argument("metric name " + name + " clashes with " +
                                other);
  };
  for (auto suffix : histogram_suffixes) {
    std::string_view sv{suffix};
    if (name.size() > sv.size() &&
        name.compare(name.size() - sv.size(), sv.size(), sv) == 0) {
      auto base = name.substr(0, name.size() - sv.size());
      if (auto j = families_.find(base);
          j != families_.end() && j->second.type == kind::histogram) {
        clash("histogram " + base);
      }
    }
    if (type == kind::histogram && families_.count(name + suffix) > 0) {
      clash(name + suffix);
    }
  }
}

registry::entry& registry::add(kind type, std::string name,
                               std::vector<std::string> labels,
                               std::vector<double> bounds,
                               const std::string& help) {
  if (!is_metric_name(name)) {
    throw std::invalid_argument("invalid metric name: \"" + name + "\"");
  }
  check_labels(type == kind::histogram, name, labels);
  std::lock_guard<std::mutex> guard{mtx_};
  if (auto i = families_.find(name); i != families_.end()) {
    auto& e = i->second;
    if (e.type != type || e.label_names != labels ||
        (type == kind::histogram && e.bounds != bounds)) {
      throw std::logic_error("metric " + name +
                             " registered twice with different type, "
                             "labels or buckets");
    }
    return e;
  }
  check_clash(type, name);
  entry e{type, labels, bounds, nullptr};
  auto make_family = [&](auto make) {
    using child_t = typename decltype(make())::element_type;
    auto fam =
        std::make_shared<family<child_t>>(name, help, labels, std::move(make));
    // An unlabelled metric exists from registration, so it shows up (as 0)
    // before the first update.
    if (labels.empty()) {
      fam->with({});
    }
    e.fam = std::move(fam);
  };
  switch (type) {
  case kind::counter:
    make_family([] { return std::make_unique<counter>(); });
    break;
  case kind::gauge:
    make_family([] { return std::make_unique<gauge>(); });
    break;
  case kind::histogram: {
    // Bad bounds fail here, not at the first with().
    histogram probe{bounds};
    make_family(
        [b = std::move(bounds)] { return std::make_unique<histogram>(b); });
    break;
  }
  }
  return families_.emplace(std::move(name), std::move(e)).first->second;
}

family<counter>& registry::counters(std::string name, std::string help,
                                    std::vector<std::string> label_names) {
  auto& e =
      add(kind::counter, std::move(name), std::move(label_names), {}, help);
  return *std::static_pointer_cast<family<counter>>(e.fam);
}

family<gauge>& registry::gauges(std::string name, std::string help,
                                std::vector<std::string> label_names) {
  auto& e = add(kind::gauge, std::move(name), std::move(label_names), {}, help);
  return *std::static_pointer_cast<family<gauge>>(e.fam);
}

family<histogram>& registry::histograms(std::string name, std::string help,
                                        std::vector<std::string> label_names,
                                        std::vector<double> bounds) {
  auto& e = add(kind::histogram, std::move(name), std::move(label_names),
                std::move(bounds), help);
  return *std::static_pointer_cast<family<histogram>>(e.fam);
}

void registry::on_collect(std::function<void()> fn) {
  std::lock_guard<std::mutex> guard{mtx_};
  collectors_.push_back(std::move(fn));
}

std::string registry::render() const {
  std::vector<std::function<void()>> collectors;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    collectors = collectors_;
  }
  for (auto& fn : collectors) {
    fn();
  }
  // Families are never unregistered, so the shared_ptrs keep them alive while
  // we render without the registry lock (registration need not wait for a
  // scrape).
  std::vector<std::pair<kind, std::shared_ptr<void>>> fams;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    fams.reserve(families_.size());
    for (auto& [name, e] : families_) { // std::map: sorted by name
      fams.emplace_back(e.type, e.fam);
    }
  }
  std::string out;
  for (auto& [type, ptr] : fams) {
    switch (type) {
    case kind::counter:
      render_scalar(out, *std::static_pointer_cast<family<counter>>(ptr),
                    "counter");
      break;
    case kind::gauge:
      render_scalar(out, *std::static_pointer_cast<family<gauge>>(ptr),
                    "gauge");
      break;
    case kind::histogram:
      render_histogram(out, *std::static_pointer_cast<family<histogram>>(ptr));
      break;
    }
  }
  return out;
}

} // namespace shoal::metrics
