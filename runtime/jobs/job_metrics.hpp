// The job manager's metrics as Prometheus families: shoal_jobs{state},
// shoal_job_duration_seconds{model} (submit to end) and
// shoal_jobs_recovered_total.
#pragma once

#include <memory>

#include "actors/jobs/job_manager.hpp"
#include "runtime/metrics/registry.hpp"

namespace shoal {

std::shared_ptr<job_metrics> make_job_metrics(metrics::registry& reg);

} // namespace shoal
