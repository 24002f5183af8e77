#include "runtime/jobs/job_metrics.hpp"

namespace shoal {

namespace {

// Jobs run for seconds to minutes: buckets from 10 ms to an hour.
std::vector<double> job_buckets() {
  return {0.01, 0.05, 0.1, 0.25, 0.5, 1,    2.5,  5,   10,
          30,   60,   120, 300,  600, 1200, 1800, 3600};
}

class prometheus_job_metrics : public job_metrics {
public:
  explicit prometheus_job_metrics(metrics::registry& reg)
      : states_(reg.gauges("shoal_jobs", "Durable jobs in the store, by state.",
                           {"state"})),
        duration_(reg.histograms(
            "shoal_job_duration_seconds",
            "Time from a job's submit to its end (done or failed), by model.",
            {"model"}, job_buckets())),
        recovered_(
            reg.counters(
                   "shoal_jobs_recovered_total",
                   "Jobs queued again from the store at the head's start.")
                .with({})) {
    for (auto s : {job_state::queued, job_state::running, job_state::done,
                   job_state::failed, job_state::cancelled}) {
      states_.with({std::string{to_string(s)}});
    }
  }

  void states(const std::vector<uint64_t>& counts) override {
    for (size_t i = 0; i < counts.size() && i < 5; ++i) {
      auto s = static_cast<job_state>(i);
      states_.with({std::string{to_string(s)}})
          .set(static_cast<double>(counts[i]));
    }
  }

  void finished(const std::string& model, double seconds) override {
    duration_.with({model.empty() ? std::string{"unknown"} : model})
        .observe(seconds);
  }

  void recovered(uint64_t n) override {
    recovered_.inc(static_cast<double>(n));
  }

private:
  metrics::family<metrics::gauge>& states_;
  metrics::family<metrics::histogram>& duration_;
  metrics::counter& recovered_;
};

} // namespace

std::shared_ptr<job_metrics> make_job_metrics(metrics::registry& reg) {
  return std::make_shared<prometheus_job_metrics>(reg);
}

} // namespace shoal
