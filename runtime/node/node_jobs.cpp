// The durable jobs of a head (or a standalone node): the SQLite job store
// and the job manager, which queues the stored open jobs again at start.
#include <filesystem>

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include "actors/jobs/job_ops.hpp"
#include "runtime/jobs/job_metrics.hpp"
#include "runtime/jobs/sqlite_job_store.hpp"
#include "runtime/node/node_impl.hpp"

namespace shoal {

caf::error node::impl::start_jobs() {
  auto& j = cfg.jobs;
  sqlite_job_store_config sc;
  sc.path =
      j.path.empty()
          ? (std::filesystem::path{cfg.models.cache_dir} / "jobs" / "jobs.db")
                .string()
          : j.path;
  sc.results_dir = j.results_dir;
  sc.max_result_bytes = j.max_result_bytes;
  auto store = open_sqlite_job_store(sc);
  if (!store) {
    return store.error();
  }
  job_manager_config jc;
  jc.result_ttl_ms = j.result_ttl_ms;
  jc.max_queued = j.max_queued;
  jc.default_wait_ms = cfg.gateway.default_timeout_ms;
  jc.tenants = tenants;
  codec_limits limits;
  limits.max_frame_bytes = cfg.gateway.max_frame_bytes;
  limits.max_bin_bytes = cfg.gateway.max_frame_bytes;
  // Detached: every store call waits for the disk.
  jobs = system->spawn<caf::detached>(job_manager_actor, jc, *store, router,
                                      sink, make_job_metrics(registry),
                                      make_job_rebuild(catalog, cache, limits));
  spdlog::info("jobs: store {}", sc.path);
  return {};
}

} // namespace shoal
