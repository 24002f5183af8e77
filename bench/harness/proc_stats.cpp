#include "bench/harness/proc_stats.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

namespace shoal::bench {

uint64_t rss_bytes(pid_t pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/status"};
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, 6, "VmRSS:") == 0) {
      return std::strtoull(line.c_str() + 6, nullptr, 10) * 1024;
    }
  }
  return 0;
}

double cpu_seconds(pid_t pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
  std::string stat{std::istreambuf_iterator<char>{in}, {}};
  // The command name may hold spaces: fields are counted after its ')'.
  auto pos = stat.rfind(')');
  if (pos == std::string::npos) {
    return 0;
  }
  std::istringstream fields{stat.substr(pos + 2)};
  std::vector<std::string> f{std::istream_iterator<std::string>{fields}, {}};
  // utime and stime, fields 14 and 15 of proc(5), counting from the state
  // (field 3).
  if (f.size() < 13) {
    return 0;
  }
  auto ticks = std::stod(f[11]) + std::stod(f[12]);
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

} // namespace shoal::bench
