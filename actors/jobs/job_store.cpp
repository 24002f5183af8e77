#include "actors/jobs/job_store.hpp"

namespace shoal {

std::string_view to_string(job_state s) noexcept {
  switch (s) {
  case job_state::queued:
    return "queued";
  case job_state::running:
    return "running";
  case job_state::done:
    return "done";
  case job_state::failed:
    return "failed";
  case job_state::cancelled:
    return "cancelled";
  }
  return "unknown";
}

} // namespace shoal
