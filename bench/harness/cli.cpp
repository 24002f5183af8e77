#include "bench/harness/cli.hpp"

#include <cstdlib>
#include <sstream>
#include <stdexcept>

#include <sys/stat.h>
#include <unistd.h>

#include "bench/harness/run.hpp"

#ifndef SHOAL_BENCH_SHOALD
#define SHOAL_BENCH_SHOALD ""
#endif

namespace shoal::bench {

std::vector<std::string> set_args(const std::string& settings) {
  std::vector<std::string> args;
  std::istringstream words{settings};
  for (std::string kv; words >> kv;) {
    args.insert(args.end(), {"--set", kv});
  }
  return args;
}

std::string default_shoald() {
  if (const char* env = std::getenv("SHOALD"); env != nullptr && *env != 0) {
    return env;
  }
  if (std::string built = SHOAL_BENCH_SHOALD; !built.empty()) {
    return built;
  }
  // <build>/bench/bench_x -> <build>/shoald.
  char buf[4096];
  auto n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) {
    return "shoald";
  }
  std::string self{buf, static_cast<size_t>(n)};
  auto dir = self.substr(0, self.rfind('/'));
  return dir.substr(0, dir.rfind('/')) + "/shoald";
}

void require_executable(const std::string& path, const std::string& hint) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) ||
      (st.st_mode & S_IXUSR) == 0) {
    throw bench_error{"no executable at '" + path + "' (" + hint + ")"};
  }
}

arg_parser::arg_parser(std::string program, std::string summary)
    : program_(std::move(program)), summary_(std::move(summary)) {}

void arg_parser::add_common(common_options& o, const std::string& quick_help,
                            bool shoald) {
  flag("--quick", o.quick, quick_help);
  option("--json", "FILE", o.json, "also write the results as JSON");
  if (shoald) {
    o.shoald = default_shoald();
    option("--shoald", "PATH", o.shoald,
           "node binary ($SHOALD, else the build tree's: " + o.shoald + ")");
  }
}

void arg_parser::flag(const std::string& name, bool& out,
                      const std::string& help) {
  entries_.push_back({name, "", help, nullptr, &out});
}

void arg_parser::option(const std::string& name, const std::string& meta,
                        std::string& out, const std::string& help) {
  entries_.push_back({name, meta, help, [&out](auto& v) { out = v; }});
}

void arg_parser::option(const std::string& name, const std::string& meta,
                        double& out, const std::string& help) {
  entries_.push_back(
      {name, meta, help, [&out](auto& v) { out = std::stod(v); }});
}

void arg_parser::option(const std::string& name, const std::string& meta,
                        int& out, const std::string& help) {
  entries_.push_back(
      {name, meta, help, [&out](auto& v) { out = std::stoi(v); }});
}

void arg_parser::option(const std::string& name, const std::string& meta,
                        uint64_t& out, const std::string& help) {
  entries_.push_back({name, meta, help, [&out](auto& v) {
                        if (v.find('-') != std::string::npos) {
                          throw std::invalid_argument{v};
                        }
                        out = std::stoull(v);
                      }});
}

const arg_parser::entry* arg_parser::find(const std::string& name) const {
  for (const auto& e : entries_) {
    if (e.name == name) {
      return &e;
    }
  }
  return nullptr;
}

void arg_parser::parse(int argc, char** argv, std::vector<std::string>* rest) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      usage(stdout);
      std::exit(0);
    }
    const auto* e = find(a);
    if (e == nullptr && rest != nullptr) {
      rest->push_back(a);
      continue;
    }
    if (e == nullptr) {
      fail("unknown argument: " + a);
    }
    given_.insert(a);
    if (e->flag != nullptr) {
      *e->flag = true;
      continue;
    }
    if (i + 1 >= argc) {
      fail(a + " needs a value");
    }
    try {
      e->set(argv[++i]);
    } catch (const std::logic_error&) { // stod and friends
      fail("bad value for " + a + ": " + argv[i]);
    }
  }
}

void arg_parser::fail(const std::string& why) const {
  std::fprintf(stderr, "%s: %s\n", program_.c_str(), why.c_str());
  usage(stderr);
  std::exit(2);
}

void arg_parser::usage(std::FILE* out) const {
  std::fprintf(out, "usage: %s [options]\n%s\n", program_.c_str(),
               summary_.c_str());
  for (const auto& e : entries_) {
    auto left = e.name + (e.meta.empty() ? "" : " " + e.meta);
    std::fprintf(out, "  %-22s %s\n", left.c_str(), e.help.c_str());
  }
}

} // namespace shoal::bench
