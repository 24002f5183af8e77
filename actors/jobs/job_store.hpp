// The durable job store: what the job manager keeps of every job, and the
// only part of it that outlives the process. The job manager talks to it
// through this interface alone; the node injects the implementation (an
// embedded SQLite file, runtime/jobs/sqlite_job_store.hpp). A store shared
// by several heads would be a second implementation (docs/architecture.md,
// "Durable jobs").
//
// Every call that changes a job returns once the change is durable: a job
// is acknowledged only after insert() returned, and told done only after
// finish() did.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

namespace shoal {

enum class job_state : uint8_t { queued, running, done, failed, cancelled };

std::string_view to_string(job_state s) noexcept;

inline bool is_final(job_state s) noexcept {
  return s == job_state::done || s == job_state::failed ||
         s == job_state::cancelled;
}

struct job_record {
  std::string tenant;
  std::string id; // unique per tenant: the client's idempotency key
  job_state state = job_state::queued;
  uint8_t priority = 5;
  std::string model;
  uint64_t version = 0;
  uint64_t seq = 0;       // submit order, set by the store
  int64_t created_ms = 0; // Unix time
  int64_t updated_ms = 0;
  uint64_t done = 0; // progress; total 0: none reported
  uint64_t total = 0;
  // The submit frame as the client sent it, replayed after a restart.
  std::string request;
  // Once final: the status, its reason, and the encoded reply (a msgpack
  // map with the keys of an infer reply).
  uint8_t code = 0;
  std::string error;
  std::string result;
};

// One job's progress, as the job manager flushes it (coalesced).
struct job_progress {
  std::string tenant;
  std::string id;
  uint64_t done = 0;
  uint64_t total = 0;
  int64_t updated_ms = 0;
};

class job_store {
public:
  virtual ~job_store() = default;

  // Adds `rec` (queued) unless the tenant has a job with its id. Returns
  // the job as stored (the existing one, without request and result) and
  // whether it was added.
  virtual caf::expected<std::pair<job_record, bool>> insert(job_record rec) = 0;

  // insert() of several jobs in one transaction (one commit, one sync):
  // all or none. Results in order.
  virtual caf::expected<std::vector<std::pair<job_record, bool>>>
  insert_all(std::vector<job_record> recs) = 0;

  // The job, or nullopt. The request and result are read only when asked
  // for (a large result lives in a file).
  virtual caf::expected<std::optional<job_record>>
  get(const std::string& tenant, const std::string& id, bool with_result) = 0;

  // Progress of several jobs in one transaction (coalesced by the caller);
  // a queued job becomes running, jobs that ended meanwhile are left alone.
  virtual caf::error set_progress(const std::vector<job_progress>& p) = 0;

  // Records a final state (done, failed, cancelled) with its outcome.
  // False when the job had ended already (a late second result), or is
  // gone: the first outcome stands.
  virtual caf::expected<bool> finish(const job_record& outcome) = 0;

  // The tenant's jobs, newest first, at most `limit`, those submitted
  // before job `after` when it is given; without request and result.
  virtual caf::expected<std::vector<job_record>>
  list(const std::string& tenant, uint64_t limit, const std::string& after) = 0;

  // Every queued and running job, by priority then submit order, with its
  // request: what a restarted head queues again.
  virtual caf::expected<std::vector<job_record>> open_jobs() = 0;

  // Removes the jobs that ended before `before_ms` (and their result
  // files). Returns how many.
  virtual caf::expected<uint64_t> expire(int64_t before_ms) = 0;

  // How many jobs are in each state (index: job_state).
  virtual caf::expected<std::vector<uint64_t>> counts() = 0;
};

using job_store_ptr = std::shared_ptr<job_store>;

} // namespace shoal
