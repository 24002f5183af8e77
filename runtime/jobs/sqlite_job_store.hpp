// The job store as one embedded SQLite file (WAL journal, synchronous
// FULL: a commit is on disk when it returns). Results larger than
// max_result_bytes go to files under results_dir, written and synced
// before the row that names them is committed.
#pragma once

#include <cstdint>
#include <string>

#include <caf/expected.hpp>

#include "actors/jobs/job_store.hpp"

namespace shoal {

struct sqlite_job_store_config {
  std::string path;        // the database file (created when absent)
  std::string results_dir; // empty: beside the database, "<path>.results"
  uint64_t max_result_bytes = 1u << 20;
};

// Opens (or creates) the store and checks it. A file that is not a
// database, is damaged or cannot be read fails with errc::io_error and a
// message naming it: the node must not start with jobs silently lost.
caf::expected<job_store_ptr>
open_sqlite_job_store(const sqlite_job_store_config& cfg);

} // namespace shoal
