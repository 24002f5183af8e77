// What /proc says about a process the benchmark runs.
#pragma once

#include <cstdint>

#include <sys/types.h>

namespace shoal::bench {

// VmRSS of /proc/PID/status in bytes, or 0 once the process is gone.
uint64_t rss_bytes(pid_t pid);

// User + system CPU seconds of the process so far (all its threads, the
// finished ones included), or 0 once it is gone.
double cpu_seconds(pid_t pid);

} // namespace shoal::bench
