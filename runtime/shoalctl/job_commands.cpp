#include "runtime/shoalctl/job_commands.hpp"

#include <iomanip>
#include <iostream>
#include <memory>

#include <unistd.h>

#include "runtime/shoalctl/bench_load.hpp"
#include "runtime/shoalctl/input_spec.hpp"
#include "runtime/shoalctl/render.hpp"

namespace shoal::ctl {

namespace {

struct submit_options {
  std::string model;
  std::string job;
  std::optional<uint64_t> version;
  std::vector<std::string> inputs;
  uint64_t seed = 0;
  std::optional<int> priority;
  std::string tenant;
};

struct job_options {
  std::string job;
  std::string tenant;
  int64_t timeout_ms = 3'600'000;
  uint64_t limit = 20;
  std::string after;
};

// The job line every command prints: id, state and progress.
void print_job(const reply& rep) {
  std::cout << "job " << rep.job.job << ": " << rep.job.state;
  if (rep.job.has_progress) {
    std::cout << " (" << rep.job.done << "/" << rep.job.total << ")";
  }
  std::cout << '\n';
}

// A reply as --json or text; the exit code for it. A done job's outputs
// are shown like an infer reply's.
int show_job(const global_options& g, const reply& rep) {
  if (g.json) {
    std::cout << reply_json(rep);
    return report_status(rep);
  }
  if (!rep.job.job.empty()) {
    print_job(rep);
  }
  if (rep.code != status::ok) {
    return report_status(rep);
  }
  if (!rep.outputs.empty()) {
    print_infer(rep, std::chrono::microseconds{0});
  }
  return exit_ok;
}

int call_and_show(const global_options& g, request req) {
  int rc = exit_ok;
  auto c = open_client(g, rc);
  if (!c) {
    return rc;
  }
  auto rep = c->call(std::move(req));
  if (!rep) {
    return report_client_error(rep.error());
  }
  return show_job(g, *rep);
}

bool submit_inputs(client& c, const submit_options& o, request& req, int& rc) {
  client_options defaults;
  for (auto& spec : o.inputs) {
    tensor t;
    std::string err;
    if (!parse_input(spec, defaults.limits, t, err)) {
      std::cerr << "error: --input '" << spec << "': " << err << '\n';
      rc = exit_usage;
      return false;
    }
    req.inputs.push_back(std::move(t));
  }
  if (!req.inputs.empty()) {
    return true;
  }
  auto model = find_model(c, o.model, rc);
  if (!model) {
    return false;
  }
  req.inputs = make_inputs(model->inputs, o.seed, 0);
  return true;
}

int run_submit(const global_options& g, const submit_options& o) {
  int rc = exit_ok;
  auto c = open_client(g, rc);
  if (!c) {
    return rc;
  }
  request req;
  req.op = op_kind::submit;
  req.model = o.model;
  req.version = o.version;
  req.job = o.job;
  req.tenant = o.tenant;
  if (o.priority) {
    req.priority = static_cast<uint8_t>(*o.priority);
  }
  if (!submit_inputs(*c, o, req, rc)) {
    return rc;
  }
  auto rep = c->call(std::move(req));
  if (!rep) {
    return report_client_error(rep.error());
  }
  return show_job(g, *rep);
}

// A progress bar on stderr: [#####.....] done/total.
void draw_bar(const reply& frame) {
  constexpr int width = 30;
  auto total = std::max<uint64_t>(frame.job.total, 1);
  auto filled = static_cast<int>(frame.job.done * width / total);
  std::cerr << "\r" << frame.job.job << " [" << std::string(filled, '#')
            << std::string(width - std::min(filled, width), '.') << "] "
            << frame.job.done << "/" << frame.job.total << std::flush;
}

int run_wait(const global_options& g, const job_options& o) {
  int rc = exit_ok;
  auto c = open_client(g, rc);
  if (!c) {
    return rc;
  }
  bool bar = isatty(STDERR_FILENO) != 0 && !g.json;
  request req;
  req.op = op_kind::wait;
  req.job = o.job;
  req.tenant = o.tenant;
  req.timeout_ms = static_cast<uint64_t>(o.timeout_ms);
  req.progress = bar;
  bool drawn = false;
  c->on_progress([&](const reply& frame) {
    draw_bar(frame);
    drawn = true;
  });
  std::optional<caf::expected<reply>> result;
  // The server answers when the job ends or the wait times out; the
  // client waits a little longer than that.
  c->submit(
      std::move(req), [&](caf::expected<reply> r) { result = std::move(r); },
      std::chrono::milliseconds{o.timeout_ms + 5000}, 0);
  while (!result) {
    c->poll(std::chrono::milliseconds{100});
  }
  if (drawn) {
    std::cerr << "\n";
  }
  if (!*result) {
    return report_client_error(result->error());
  }
  return show_job(g, **result);
}

void print_jobs(const reply& rep) {
  std::cout << std::left << std::setw(34) << "JOB" << std::setw(11) << "STATE"
            << std::setw(16) << "MODEL"
            << "PROGRESS\n";
  for (auto& j : rep.jobs) {
    std::cout << std::setw(34) << j.job << std::setw(11) << j.state
              << std::setw(16) << j.model;
    if (j.has_progress) {
      std::cout << j.done << "/" << j.total;
    }
    std::cout << '\n';
  }
}

int run_jobs(const global_options& g, const job_options& o) {
  int rc = exit_ok;
  auto c = open_client(g, rc);
  if (!c) {
    return rc;
  }
  request req;
  req.op = op_kind::jobs;
  req.tenant = o.tenant;
  req.limit = o.limit;
  req.after = o.after;
  auto rep = c->call(std::move(req));
  if (!rep) {
    return report_client_error(rep.error());
  }
  if (g.json || rep->code != status::ok) {
    return show_job(g, *rep);
  }
  print_jobs(*rep);
  return exit_ok;
}

void add_submit(CLI::App& app, const global_options& g, int& rc) {
  auto o = std::make_shared<submit_options>();
  auto* cmd = app.add_subcommand("submit", "submit a durable job");
  cmd->add_option("model", o->model, "model name")->required();
  cmd->add_option("--job", o->job,
                  "job id (the idempotency key; default: the node picks one)");
  cmd->add_option("--version", o->version, "model version");
  cmd->add_option("--input,-i", o->inputs,
                  "NAME:DTYPE:SHAPE:VALUES as for infer; without it, inputs "
                  "are generated from the model's spec")
      ->allow_extra_args(false);
  cmd->add_option("--seed", o->seed, "seed of generated inputs");
  cmd->add_option("--priority", o->priority, "0 (most urgent) .. 9")
      ->check(CLI::Range(0, 9));
  cmd->add_option("--tenant", o->tenant, "quota bucket");
  cmd->callback([&g, &rc, o] { rc = run_submit(g, *o); });
}

CLI::App* add_job_cmd(CLI::App& app, job_options& o, const char* name,
                      const char* what) {
  auto* cmd = app.add_subcommand(name, what);
  cmd->add_option("job", o.job, "job id")->required();
  cmd->add_option("--tenant", o.tenant, "quota bucket");
  return cmd;
}

} // namespace

void add_job_commands(CLI::App& app, const global_options& g, int& rc) {
  add_submit(app, g, rc);
  auto o = std::make_shared<job_options>();
  add_job_cmd(app, *o, "job", "show a job")->callback([&g, &rc, o] {
    request req;
    req.op = op_kind::job;
    req.job = o->job;
    req.tenant = o->tenant;
    rc = call_and_show(g, std::move(req));
  });
  auto* wait = add_job_cmd(app, *o, "wait", "wait for a job to end");
  wait->add_option("--timeout-ms", o->timeout_ms, "how long to wait")
      ->capture_default_str();
  wait->callback([&g, &rc, o] { rc = run_wait(g, *o); });
  add_job_cmd(app, *o, "cancel", "cancel a job")->callback([&g, &rc, o] {
    request req;
    req.op = op_kind::cancel;
    req.job = o->job;
    req.tenant = o->tenant;
    rc = call_and_show(g, std::move(req));
  });
  auto* list = app.add_subcommand("jobs", "list the tenant's jobs, newest "
                                          "first");
  list->add_option("--limit", o->limit, "jobs per page")->capture_default_str();
  list->add_option("--after", o->after, "the page after this job id");
  list->add_option("--tenant", o->tenant, "quota bucket");
  list->callback([&g, &rc, o] { rc = run_jobs(g, *o); });
}

} // namespace shoal::ctl
