// Command lines: the options every benchmark shares (--quick, --json FILE,
// --shoald PATH) and a table of its own, with one usage text and one set of
// errors.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <set>
#include <string>
#include <vector>

namespace shoal::bench {

struct common_options {
  bool quick = false;
  std::string json;   // --json FILE: also write the results there
  std::string shoald; // --shoald PATH, for benches that run nodes
};

// The shoald a benchmark runs by default: $SHOALD, else the one of the build
// tree it was built in, else <dir of this binary>/../shoald.
std::string default_shoald();

// shoald arguments for a --node-set value: "--set K=V" for each of its
// space-separated K=V words.
std::vector<std::string> set_args(const std::string& settings);

// Throws bench_error unless `path` is an executable file.
void require_executable(const std::string& path, const std::string& hint);

class arg_parser {
public:
  // `summary`: one line under the usage line.
  arg_parser(std::string program, std::string summary);

  // --quick (`quick_help` says what it shortens) and --json FILE; with
  // `shoald`, --shoald PATH too (default: default_shoald()).
  void add_common(common_options& o, const std::string& quick_help,
                  bool shoald);

  void flag(const std::string& name, bool& out, const std::string& help);
  void option(const std::string& name, const std::string& meta,
              std::string& out, const std::string& help);
  void option(const std::string& name, const std::string& meta, double& out,
              const std::string& help);
  void option(const std::string& name, const std::string& meta, int& out,
              const std::string& help);
  void option(const std::string& name, const std::string& meta, uint64_t& out,
              const std::string& help);

  // Parses argv: -h or --help prints the usage and exits 0; a missing or
  // bad value or an unknown argument exits 2, unless `rest` is given, which
  // then collects the unknown arguments (another library's flags).
  void parse(int argc, char** argv, std::vector<std::string>* rest = nullptr);

  // Whether `name` was on the command line: --quick changes only the
  // defaults of options that were not.
  bool given(const std::string& name) const { return given_.count(name) > 0; }

  void usage(std::FILE* out) const;

private:
  struct entry {
    std::string name, meta, help;
    std::function<void(const std::string&)> set; // null: a flag
    bool* flag = nullptr;
  };
  [[noreturn]] void fail(const std::string& why) const;
  const entry* find(const std::string& name) const;

  std::string program_, summary_;
  std::vector<entry> entries_;
  std::set<std::string> given_;
};

} // namespace shoal::bench
