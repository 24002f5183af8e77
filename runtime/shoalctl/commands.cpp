#include "runtime/shoalctl/commands.hpp"

#include <charconv>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>

#include <unistd.h>

#include "net/security/curve_keys.hpp"
#include "net/wire/error.hpp"
#include "runtime/shoalctl/bench_load.hpp"
#include "runtime/shoalctl/input_spec.hpp"
#include "runtime/shoalctl/job_commands.hpp"
#include "runtime/shoalctl/load_progress_bar.hpp"
#include "runtime/shoalctl/render.hpp"

namespace shoal::ctl {

namespace {

// Prints a reply the way --json or the op asks; the exit code for it.
int show(const global_options& g, const reply& rep, op_kind op,
         const std::string& target, std::chrono::microseconds took) {
  if (g.json) {
    std::cout << reply_json(rep);
    return report_status(rep);
  }
  if (rep.code != status::ok) {
    return report_status(rep);
  }
  switch (op) {
  case op_kind::status:
    print_nodes(rep);
    break;
  case op_kind::models:
    print_models(rep);
    break;
  case op_kind::ping:
    std::cout << "OK: " << g.endpoint << " answered in " << took.count()
              << " us\n";
    break;
  case op_kind::infer:
    print_infer(rep, took);
    break;
  case op_kind::reload:
    print_changes(rep);
    // A refused manifest is an operator's mistake to look at.
    return rep.refused.empty() ? exit_ok : exit_status;
  case op_kind::submit:
  case op_kind::job:
  case op_kind::wait:
  case op_kind::cancel:
  case op_kind::jobs:
  case op_kind::load:
  case op_kind::unload:
  case op_kind::drain:
    std::cout << to_string(op) << ' ' << target;
    if (rep.version) {
      std::cout << " version " << *rep.version;
    }
    std::cout << ": " << to_string(rep.code) << '\n';
    break;
  }
  return exit_ok;
}

// One request, its reply shown as a table (status, models) or a line.
int run_simple(const global_options& g, request req) {
  int rc = exit_ok;
  auto c = open_client(g, rc);
  if (!c) {
    return rc;
  }
  auto op = req.op;
  auto target = op == op_kind::drain ? req.node : req.model;
  auto start = clock_type::now();
  auto rep = c->call(std::move(req));
  auto took = std::chrono::duration_cast<std::chrono::microseconds>(
      clock_type::now() - start);
  if (!rep) {
    return report_client_error(rep.error());
  }
  return show(g, *rep, op, target, took);
}

void add_simple(CLI::App& app, const global_options& g, int& rc,
                const char* name, const char* what, op_kind op) {
  app.add_subcommand(name, what)->callback([&g, &rc, op] {
    request req;
    req.op = op;
    rc = run_simple(g, std::move(req));
  });
}

// `load`: waits as long as the load takes (--load-timeout-s) and, on a
// terminal, draws a progress bar from the `models` op's progress while the
// model's files are fetched or verified.
int run_load(const global_options& g, request req, int64_t timeout_s) {
  int rc = exit_ok;
  auto c = open_client(g, rc);
  if (!c) {
    return rc;
  }
  auto model = req.model;
  std::optional<caf::expected<reply>> result;
  c->submit(
      std::move(req), [&](caf::expected<reply> r) { result = std::move(r); },
      std::chrono::milliseconds{timeout_s * 1000}, 0);
  auto start = clock_type::now();
  load_progress_bar bar{*c, model, isatty(STDERR_FILENO) != 0 && !g.json};
  while (!result) {
    c->poll(std::chrono::milliseconds{50});
    bar.tick([&] { return result.has_value(); });
  }
  bar.clear();
  auto& rep = *result;
  if (!rep) {
    return report_client_error(rep.error());
  }
  if (g.json || rep->code != status::ok) {
    return show(g, *rep, op_kind::load, model, {});
  }
  auto took = std::chrono::duration<double>(clock_type::now() - start).count();
  std::cout << "load " << model;
  if (rep->version) {
    std::cout << " version " << *rep->version;
  }
  std::cout << ": OK in " << std::fixed << std::setprecision(2) << took
            << " s\n";
  return exit_ok;
}

struct admin_options {
  std::string model;
  std::optional<uint64_t> version;
  int64_t load_timeout_s = 3600;
};

void add_load_unload(CLI::App& app, const global_options& g, int& rc) {
  auto o = std::make_shared<admin_options>();
  auto* load = app.add_subcommand("load", "load a model");
  auto* unload = app.add_subcommand("unload", "unload a model");
  for (auto* cmd : {load, unload}) {
    cmd->add_option("model", o->model, "model name")->required();
    cmd->add_option("--version", o->version, "model version");
  }
  load->add_option("--load-timeout-s", o->load_timeout_s,
                   "how long to wait for the load (downloads can be slow)")
      ->capture_default_str();
  load->callback([&g, &rc, o] {
    request req;
    req.op = op_kind::load;
    req.model = o->model;
    req.version = o->version;
    rc = run_load(g, std::move(req), o->load_timeout_s);
  });
  unload->callback([&g, &rc, o] {
    request req;
    req.op = op_kind::unload;
    req.model = o->model;
    req.version = o->version;
    rc = run_simple(g, std::move(req));
  });
}

void add_drain(CLI::App& app, const global_options& g, int& rc) {
  auto node = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand(
      "drain", "move a node's work elsewhere and stop placing on it");
  cmd->add_option("node", *node, "node name")->required();
  cmd->callback([&g, &rc, node] {
    request req;
    req.op = op_kind::drain;
    req.node = *node;
    rc = run_simple(g, std::move(req));
  });
}

// The versions under one model directory that hold a model.toml.
std::vector<uint64_t> versions_in(const std::filesystem::path& dir) {
  std::vector<uint64_t> out;
  std::error_code ec;
  for (auto& v : std::filesystem::directory_iterator{dir, ec}) {
    auto name = v.path().filename().string();
    uint64_t ver = 0;
    auto [p, err] =
        std::from_chars(name.data(), name.data() + name.size(), ver);
    if (err == std::errc{} && p == name.data() + name.size() && ver > 0 &&
        std::filesystem::exists(v.path() / "model.toml", ec)) {
      out.push_back(ver);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

// `index ROOT`: writes ROOT/index.toml, the listing a node reads from a
// file:// or http(s):// repository (a web server cannot list directories
// in a way we could rely on).
int run_index(const std::string& root) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    std::cerr << "error: " << root << " is not a directory\n";
    return exit_usage;
  }
  std::map<std::string, std::vector<uint64_t>> models;
  for (auto& m : fs::directory_iterator{root, ec}) {
    auto name = m.path().filename().string();
    if (m.is_directory() && !name.empty() && name[0] != '.') {
      if (auto versions = versions_in(m.path()); !versions.empty()) {
        models[name] = std::move(versions);
      }
    }
  }
  auto path = fs::path{root} / "index.toml";
  auto tmp = path.string() + ".tmp";
  {
    std::ofstream out{tmp, std::ios::trunc};
    out << "# Model repository index, written by `shoalctl index`: the models "
           "and versions\n# a node serves from a file:// or http(s):// "
           "repository.\n[models]\n";
    for (auto& [name, versions] : models) {
      out << '"' << name << "\" = [";
      for (size_t i = 0; i < versions.size(); ++i) {
        out << (i ? ", " : "") << versions[i];
      }
      out << "]\n";
    }
    if (!out) {
      std::cerr << "error: cannot write " << tmp << '\n';
      return exit_status;
    }
  }
  fs::rename(tmp, path, ec);
  if (ec) {
    std::cerr << "error: rename " << tmp << ": " << ec.message() << '\n';
    return exit_status;
  }
  std::cout << path.string() << ": " << models.size() << " model(s)\n";
  return exit_ok;
}

void add_index(CLI::App& app, int& rc) {
  auto root = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand(
      "index", "write ROOT/index.toml so that nodes can serve ROOT over "
               "http(s):// or file://");
  cmd->add_option("root", *root, "repository directory")->required();
  cmd->callback([&rc, root] { rc = run_index(*root); });
}

struct infer_options {
  std::string model;
  std::optional<uint64_t> version;
  std::vector<std::string> inputs;
  uint64_t seed = 0;
  std::string cache = "use";
  std::optional<int> priority;
  std::optional<uint64_t> deadline_ms;
  std::string tenant;
};

// The request `infer` sends; false (having said why) on a bad --input.
bool infer_request(const infer_options& o, request& req) {
  req.op = op_kind::infer;
  req.model = o.model;
  req.version = o.version;
  req.cache = parse_cache_mode(o.cache).value_or(cache_mode::use);
  if (o.priority) {
    req.priority = static_cast<uint8_t>(*o.priority);
  }
  req.timeout_ms = o.deadline_ms;
  req.tenant = o.tenant;
  client_options defaults;
  for (auto& spec : o.inputs) {
    tensor t;
    std::string err;
    if (!parse_input(spec, defaults.limits, t, err)) {
      std::cerr << "error: --input '" << spec << "': " << err << '\n';
      return false;
    }
    req.inputs.push_back(std::move(t));
  }
  return true;
}

// Inputs generated from the model's spec, the same bytes as the bench's
// first hot input of the seed; nullopt (having said why) when they cannot
// be.
std::optional<std::vector<tensor>>
generated_inputs(client& c, const infer_options& o, int& rc) {
  auto model = find_model(c, o.model, rc);
  if (!model) {
    return std::nullopt;
  }
  client_options defaults;
  auto bytes = input_bytes(model->inputs);
  if (!bytes || *bytes > defaults.limits.max_frame_bytes) {
    std::cerr << "error: the inputs of model '" << o.model
              << "' are too large to generate; pass --input\n";
    rc = exit_status;
    return std::nullopt;
  }
  return make_inputs(model->inputs, o.seed, 0);
}

int run_infer(const global_options& g, const infer_options& o) {
  request req;
  if (!infer_request(o, req)) {
    return exit_usage;
  }
  int rc = exit_ok;
  auto c = open_client(g, rc);
  if (!c) {
    return rc;
  }
  if (req.inputs.empty()) {
    auto inputs = generated_inputs(*c, o, rc);
    if (!inputs) {
      return rc;
    }
    req.inputs = std::move(*inputs);
  }
  auto start = clock_type::now();
  auto rep = c->call(std::move(req));
  auto took = std::chrono::duration_cast<std::chrono::microseconds>(
      clock_type::now() - start);
  if (!rep) {
    return report_client_error(rep.error());
  }
  return show(g, *rep, op_kind::infer, o.model, took);
}

void add_infer(CLI::App& app, const global_options& g, int& rc) {
  auto o = std::make_shared<infer_options>();
  auto* cmd = app.add_subcommand("infer", "run one inference");
  cmd->add_option("model", o->model, "model name")->required();
  cmd->add_option("--version", o->version, "model version");
  cmd->add_option("--input,-i", o->inputs,
                  "NAME:DTYPE:SHAPE:VALUES, e.g. x:f32:1,4:0.5,1,2,3 (one "
                  "value fills the tensor); repeat per input; without it, "
                  "inputs are generated from the model's spec")
      ->allow_extra_args(false);
  cmd->add_option("--seed", o->seed, "seed of generated inputs")
      ->capture_default_str();
  cmd->add_option("--cache", o->cache, "cache mode")
      ->check(CLI::IsMember({"use", "bypass", "refresh"}))
      ->capture_default_str();
  cmd->add_option("--priority", o->priority, "0 (most urgent) .. 9")
      ->check(CLI::Range(0, 9));
  cmd->add_option("--deadline-ms", o->deadline_ms,
                  "server-side deadline from receipt");
  cmd->add_option("--tenant", o->tenant, "quota bucket");
  cmd->callback([&g, &rc, o] { rc = run_infer(g, *o); });
}

int run_bench_cmd(const global_options& g, bench_options o) {
  o.timeout = std::chrono::milliseconds{g.timeout_ms};
  o.progress = isatty(STDERR_FILENO) != 0;
  int rc = exit_ok;
  auto c = open_client(g, rc);
  if (!c) {
    return rc;
  }
  // The bench's own rule: an unknown model or no answer at all is exit 1,
  // even when the models query itself went unanswered.
  auto model = find_model(*c, o.model, rc);
  if (!model) {
    return exit_status;
  }
  client_options defaults;
  auto bytes = input_bytes(model->inputs);
  if (!bytes || *bytes > defaults.limits.max_frame_bytes) {
    std::cerr << "error: the inputs of model '" << o.model
              << "' are too large for a request\n";
    return exit_status;
  }
  auto res = run_bench(*c, *model, o);
  if (g.json) {
    print_bench_json(std::cout, res);
  } else {
    print_bench_text(std::cout, o, res);
  }
  if (res.replies > 0) {
    return exit_ok;
  }
  std::cerr << "error: no request was answered";
  if (res.timeouts > 0) {
    std::cerr << " (" << res.timeouts << " timed out after " << g.timeout_ms
              << " ms)";
  }
  std::cerr << '\n';
  return exit_status;
}

struct bench_command {
  bench_options o;
  std::string cache = "use";
  CLI::Option* rate = nullptr;
};

// The load shape: closed loop (--concurrency) or open loop (--rate), and
// how long.
void add_bench_shape(CLI::App* cmd, bench_command& b) {
  auto& o = b.o;
  auto* conc = cmd->add_option("--concurrency", o.concurrency,
                               "closed loop: requests in flight")
                   ->check(CLI::Range(size_t{1}, size_t{100000}))
                   ->capture_default_str();
  b.rate = cmd->add_option("--rate", o.rate,
                           "open loop: requests per second at fixed "
                           "intervals (latency from the scheduled time)")
               ->check(CLI::Range(0.001, 1e7));
  conc->excludes(b.rate);
  cmd->add_option("--duration", o.duration_s, "measured seconds")
      ->check(CLI::Range(0.001, 86400.0))
      ->capture_default_str();
  cmd->add_option("--warmup", o.warmup_s, "unmeasured seconds first")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
}

// Which inputs: a hot/cold mix or Zipf ranks over distinct inputs.
void add_bench_inputs(CLI::App* cmd, bench_command& b) {
  auto& o = b.o;
  cmd->add_option("--distinct", o.distinct,
                  "distinct inputs the --zipf ranks cover")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 62))
      ->capture_default_str();
  auto* hot = cmd->add_option("--hot-ratio", o.hot_ratio,
                              "share of requests reusing a hot input; the "
                              "rest use never-seen inputs")
                  ->check(CLI::Range(0.0, 1.0))
                  ->capture_default_str();
  cmd->add_option("--hot-set", o.hot_set, "number of hot inputs")
      ->check(CLI::Range(size_t{1}, size_t{1} << 20))
      ->capture_default_str();
  auto* zipf = cmd->add_option("--zipf", o.zipf,
                               "Zipf exponent S over --distinct inputs")
                   ->check(CLI::Range(0.0, 100.0));
  hot->excludes(zipf);
  cmd->add_option("--seed", o.seed, "seed of inputs and choices")
      ->capture_default_str();
}

void add_bench(CLI::App& app, const global_options& g, int& rc) {
  auto b = std::make_shared<bench_command>();
  auto* cmd = app.add_subcommand("bench", "generate load and report "
                                          "latency and throughput");
  cmd->add_option("--model", b->o.model, "model name")->required();
  cmd->add_option("--version", b->o.version, "model version");
  add_bench_shape(cmd, *b);
  add_bench_inputs(cmd, *b);
  cmd->add_option("--cache", b->cache, "cache mode")
      ->check(CLI::IsMember({"use", "bypass", "refresh"}))
      ->capture_default_str();
  cmd->add_option("--tenant", b->o.tenant, "quota bucket");
  cmd->callback([&g, &rc, b] {
    auto o = b->o;
    if (b->rate->count() == 0) {
      o.rate = 0;
    }
    o.cache = parse_cache_mode(b->cache).value_or(cache_mode::use);
    rc = run_bench_cmd(g, std::move(o));
  });
}

} // namespace

// keygen PREFIX: a CURVE key pair for a gateway, a node or a client.
void add_keygen(CLI::App& app, int& rc) {
  auto prefix = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand(
      "keygen", "write a CURVE key pair: PREFIX.key (secret, mode 0600) and "
                "PREFIX.pub");
  cmd->add_option("prefix", *prefix, "path prefix of the two files")
      ->required();
  cmd->callback([&rc, prefix] {
    auto pair = generate_key_pair();
    caf::error err = pair ? write_key_pair(*prefix, *pair) : pair.error();
    if (err) {
      std::cerr << "error: " << reason_of(err) << '\n';
      rc = exit_status;
      return;
    }
    std::cout << *prefix << ".key (secret) and " << *prefix
              << ".pub (public: " << z85_of(pair->public_key) << ")\n";
    rc = exit_ok;
  });
}

void add_commands(CLI::App& app, const global_options& g, int& rc) {
  add_simple(app, g, rc, "status", "list the cluster's nodes", op_kind::status);
  add_simple(app, g, rc, "models", "list the models", op_kind::models);
  add_simple(app, g, rc, "ping", "check that the gateway answers",
             op_kind::ping);
  add_infer(app, g, rc);
  add_load_unload(app, g, rc);
  add_index(app, rc);
  add_drain(app, g, rc);
  add_simple(app, g, rc, "reload",
             "re-read the model repository: serve new model versions, "
             "retire removed ones",
             op_kind::reload);
  add_bench(app, g, rc);
  add_keygen(app, rc);
  add_job_commands(app, g, rc);
}

} // namespace shoal::ctl
