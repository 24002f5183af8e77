// shoalctl: the operator and client tool (DESIGN.md, "Commands"). Every
// subcommand is one or a few protocol v1 requests through the C++ client.
//
// Exit codes: 0 OK, 1 a non-OK status (or an unknown model), 2 a usage
// error, 3 no reply within the timeout.
#include <algorithm>
#include <bit>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <unistd.h>

#include <CLI/CLI.hpp>

#include "net/client/client.hpp"
#include "net/wire/error.hpp"
#include "runtime/shoalctl/bench_load.hpp"
#include "config/human_bytes.hpp"

using namespace shoal;
using namespace shoal::ctl;

namespace {

constexpr int exit_ok = 0;
constexpr int exit_status = 1;
constexpr int exit_usage = 2;
constexpr int exit_no_reply = 3;

struct global_options {
  std::string endpoint = "tcp://127.0.0.1:5555";
  int64_t timeout_ms = 5000;
  int retries = 0;
  bool json = false;
};

// -- talking to the gateway
// ----------------------------------------------------

std::unique_ptr<client> open_client(const global_options& g, int& rc) {
  client_options opts;
  opts.endpoint = g.endpoint;
  opts.timeout = std::chrono::milliseconds{g.timeout_ms};
  opts.retries = g.retries;
  auto c = client::connect(opts);
  if (!c) {
    std::cerr << "error: " << reason_of(c.error()) << '\n';
    rc = exit_usage;
    return nullptr;
  }
  return std::move(*c);
}

// Prints why no reply came and returns the exit code for it.
int report_client_error(const caf::error& err) {
  std::cerr << "error: " << reason_of(err) << '\n';
  return to_status(err) == status::deadline_exceeded ? exit_no_reply
                                                     : exit_status;
}

int report_status(const reply& rep) {
  if (rep.code == status::ok)
    return exit_ok;
  std::cerr << "error: " << to_string(rep.code) << ": "
            << (rep.error.empty() ? "(no reason given)" : rep.error) << '\n';
  return exit_status;
}

// -- JSON rendering of replies ------------------------------------------------

class json_object {
public:
  explicit json_object(std::string& out) : out_(out) { out_ += '{'; }
  ~json_object() { out_ += '}'; }
  json_object(const json_object&) = delete;
  json_object& operator=(const json_object&) = delete;

  std::string& key(std::string_view k) {
    if (!first_)
      out_ += ',';
    first_ = false;
    append_json_string(out_, k);
    out_ += ':';
    return out_;
  }

private:
  std::string& out_;
  bool first_ = true;
};

void append_json_id(std::string& out, const request_id& id) {
  switch (id.k) {
  case request_id::kind::nil:
    out += "null";
    break;
  case request_id::kind::num:
    out += std::to_string(id.num);
    break;
  case request_id::kind::str:
    append_json_string(out, id.str);
    break;
  }
}

template <class Range, class F>
void append_json_array(std::string& out, const Range& xs, F each) {
  out += '[';
  bool first = true;
  for (auto& x : xs) {
    if (!first)
      out += ',';
    first = false;
    each(x);
  }
  out += ']';
}

void append_json_specs(std::string& out, const std::vector<io_spec>& specs) {
  append_json_array(out, specs, [&](const io_spec& s) {
    json_object o{out};
    append_json_string(o.key("name"), s.name);
    append_json_string(o.key("dtype"), to_string(s.type));
    append_json_array(o.key("shape"), s.shape,
                      [&](int64_t d) { out += std::to_string(d); });
  });
}

std::string reply_json(const reply& rep) {
  std::string out;
  {
    json_object o{out};
    o.key("v") += std::to_string(rep.v);
    append_json_id(o.key("id"), rep.id);
    append_json_string(o.key("status"), to_string(rep.code));
    if (!rep.error.empty())
      append_json_string(o.key("error"), rep.error);
    if (rep.source != reply_source::none)
      append_json_string(o.key("source"), to_string(rep.source));
    if (!rep.model.empty())
      append_json_string(o.key("model"), rep.model);
    if (rep.version)
      o.key("version") += std::to_string(*rep.version);
    if (!rep.node.empty())
      append_json_string(o.key("node"), rep.node);
    if (rep.timing_us) {
      json_object t{o.key("timing_us")};
      t.key("queue") += std::to_string(rep.timing_us->queue_us);
      t.key("compute") += std::to_string(rep.timing_us->compute_us);
      t.key("total") += std::to_string(rep.timing_us->total_us);
    }
    if (!rep.outputs.empty()) {
      append_json_array(o.key("outputs"), rep.outputs, [&](const tensor& t) {
        json_object to{out};
        append_json_string(to.key("name"), t.name);
        append_json_string(to.key("dtype"), to_string(t.type));
        append_json_array(to.key("shape"), t.shape,
                          [&](uint64_t d) { out += std::to_string(d); });
        auto& vals = to.key("values");
        vals += '[';
        auto size = dtype_size(t.type);
        auto n = size ? t.data.size() / size : 0;
        for (size_t i = 0; i < n; ++i) {
          if (i > 0)
            vals += ',';
          append_value(vals, t, i, true);
        }
        vals += ']';
      });
    }
    if (rep.has_models) {
      append_json_array(o.key("models"), rep.models, [&](const model_info& m) {
        json_object mo{out};
        append_json_string(mo.key("name"), m.name);
        append_json_array(mo.key("versions"), m.versions,
                          [&](uint64_t v) { out += std::to_string(v); });
        append_json_string(mo.key("state"), m.state);
        append_json_specs(mo.key("inputs"), m.inputs);
        append_json_specs(mo.key("outputs"), m.outputs);
      });
    }
    if (rep.has_nodes) {
      append_json_array(o.key("nodes"), rep.nodes, [&](const node_info& n) {
        json_object no{out};
        append_json_string(no.key("name"), n.name);
        append_json_string(no.key("role"), n.role);
        append_json_string(no.key("state"), n.state);
        {
          json_object lo{no.key("labels")};
          for (auto& [k, v] : n.labels)
            append_json_string(lo.key(k), v);
        }
        {
          json_object ro{no.key("replicas")};
          for (auto& [k, v] : n.replicas)
            ro.key(k) += std::to_string(v);
        }
        append_json_array(
            no.key("devices"), n.devices, [&](const node_device& d) {
              json_object dob{out};
              append_json_string(dob.key("name"), d.name);
              append_json_string(dob.key("product"), d.product);
              dob.key("total_bytes") += std::to_string(d.total_bytes);
              dob.key("used_bytes") += std::to_string(d.used_bytes);
              json_object ro{dob.key("replicas")};
              for (auto& [k, v] : d.replicas)
                ro.key(k) += std::to_string(v);
            });
      });
    }
  }
  out += '\n';
  return out;
}

// -- text rendering
// -------------------------------------------------------------

// Left-aligned columns, two spaces apart, the first row a header.
// The rows with their columns aligned, one line each.
std::vector<std::string>
table_lines(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (auto& row : rows)
    for (size_t i = 0; i < row.size(); ++i) {
      if (width.size() <= i)
        width.push_back(0);
      width[i] = std::max(width[i], row[i].size());
    }
  std::vector<std::string> out;
  for (auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size())
        line.append(width[i] - row[i].size() + 2, ' ');
    }
    out.push_back(std::move(line));
  }
  return out;
}

void print_table(const std::vector<std::vector<std::string>>& rows) {
  for (auto& line : table_lines(rows))
    std::cout << line << '\n';
}

std::string spec_text(const std::vector<io_spec>& specs) {
  std::string out;
  for (auto& s : specs) {
    if (!out.empty())
      out += ' ';
    out += s.name;
    out += ':';
    out += to_string(s.type);
    out += '[';
    for (size_t i = 0; i < s.shape.size(); ++i) {
      if (i > 0)
        out += ',';
      out += std::to_string(s.shape[i]);
    }
    out += ']';
  }
  return out.empty() ? "-" : out;
}

std::string tensor_text(const tensor& t, size_t max_values) {
  std::string out = t.name;
  out += ' ';
  out += to_string(t.type);
  out += " [";
  for (size_t i = 0; i < t.shape.size(); ++i) {
    if (i > 0)
      out += ',';
    out += std::to_string(t.shape[i]);
  }
  out += "]:";
  auto size = dtype_size(t.type);
  auto n = size ? t.data.size() / size : 0;
  for (size_t i = 0; i < n && i < max_values; ++i) {
    out += i == 0 ? " " : ", ";
    append_value(out, t, i, false);
  }
  if (n > max_values)
    out += ", ... (" + std::to_string(n) + " values)";
  return out;
}

void print_models(const reply& rep) {
  if (rep.models.empty()) {
    std::cout << "no models\n";
    return;
  }
  std::vector<std::vector<std::string>> rows{
      {"NAME", "VERSIONS", "STATE", "INPUTS", "OUTPUTS"}};
  for (auto& m : rep.models) {
    std::string versions;
    for (auto v : m.versions) {
      if (!versions.empty())
        versions += ',';
      versions += std::to_string(v);
    }
    rows.push_back({m.name, versions.empty() ? "-" : versions,
                    m.state.empty() ? "-" : m.state, spec_text(m.inputs),
                    spec_text(m.outputs)});
  }
  print_table(rows);
}

void print_nodes(const reply& rep) {
  if (rep.nodes.empty()) {
    std::cout << "no nodes\n";
    return;
  }
  std::vector<std::vector<std::string>> rows{
      {"NAME", "ROLE", "STATE", "LABELS", "REPLICAS"}};
  for (auto& n : rep.nodes) {
    std::string labels;
    for (auto& [k, v] : n.labels) {
      if (!labels.empty())
        labels += ',';
      labels += k + '=' + v;
    }
    std::string replicas;
    for (auto& [m, count] : n.replicas) {
      if (!replicas.empty())
        replicas += ',';
      replicas += m + '=' + std::to_string(count);
    }
    rows.push_back({n.name, n.role, n.state, labels.empty() ? "-" : labels,
                    replicas.empty() ? "-" : replicas});
  }
  auto lines = table_lines(rows);
  std::cout << lines[0] << '\n';
  for (size_t i = 0; i < rep.nodes.size(); ++i) {
    std::cout << lines[i + 1] << '\n';
    // Each GPU on a line of its own under its node: a column would not
    // hold several of them.
    for (auto& d : rep.nodes[i].devices) {
      std::string replicas;
      for (auto& [m, count] : d.replicas) {
        if (!replicas.empty())
          replicas += ',';
        replicas += m + '=' + std::to_string(count);
      }
      std::cout << "  " << d.name << "  "
                << (d.product.empty() ? "-" : d.product) << "  "
                << human_bytes(d.used_bytes) << " used of "
                << human_bytes(d.total_bytes) << "  replicas "
                << (replicas.empty() ? "-" : replicas) << '\n';
    }
  }
}

void print_infer(const reply& rep, std::chrono::microseconds round_trip) {
  std::cout << "status   " << to_string(rep.code) << '\n';
  if (rep.source != reply_source::none)
    std::cout << "source   " << to_string(rep.source) << '\n';
  if (!rep.model.empty() || rep.version) {
    std::cout << "model    " << (rep.model.empty() ? "-" : rep.model);
    if (rep.version)
      std::cout << " version " << *rep.version;
    std::cout << '\n';
  }
  if (!rep.node.empty())
    std::cout << "node     " << rep.node << '\n';
  std::cout << "timing   ";
  if (rep.timing_us)
    std::cout << "queue " << rep.timing_us->queue_us << " us, compute "
              << rep.timing_us->compute_us << " us, total "
              << rep.timing_us->total_us << " us; ";
  std::cout << "round trip " << round_trip.count() << " us\n";
  for (auto& t : rep.outputs)
    std::cout << "output   " << tensor_text(t, 16) << '\n';
}

// -- parsing --input NAME:DTYPE:SHAPE:VALUES
// ------------------------------------

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  for (;;) {
    auto pos = s.find(sep);
    out.push_back(trim(s.substr(0, pos)));
    if (pos == std::string_view::npos)
      return out;
    s.remove_prefix(pos + 1);
  }
}

template <class T>
bool parse_number(std::string_view s, T& out) {
  if (!s.empty() && s.front() == '+')
    s.remove_prefix(1);
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && ptr == s.data() + s.size() && !s.empty();
}

// Writes one value of type `t` at `p`; false (with `err`) when `s` is not a
// number of that type or out of its range.
bool store_value(std::string_view s, dtype t, uint8_t* p, std::string& err) {
  auto out_of_range = [&] {
    err = "value '" + std::string{s} + "' is out of range for " +
          std::string{to_string(t)};
    return false;
  };
  auto not_a = [&](const char* what) {
    err = "value '" + std::string{s} + "' is not " + what;
    return false;
  };
  auto store = [p](auto v) { std::memcpy(p, &v, sizeof(v)); };
  switch (t) {
  case dtype::f32:
  case dtype::f64:
  case dtype::f16:
  case dtype::bf16: {
    double v;
    if (!parse_number(s, v))
      return not_a("a number");
    if (t == dtype::f64)
      store(v);
    else if (t == dtype::f32)
      store(static_cast<float>(v));
    else if (t == dtype::f16)
      store(float_to_half(static_cast<float>(v)));
    else
      store(float_to_bf16(static_cast<float>(v)));
    return true;
  }
  case dtype::boolean:
    if (s == "true" || s == "1")
      *p = 1;
    else if (s == "false" || s == "0")
      *p = 0;
    else
      return not_a("a bool (true, false, 1 or 0)");
    return true;
  case dtype::u8: {
    uint64_t v;
    if (!parse_number(s, v))
      return not_a("an unsigned integer");
    if (v > 255)
      return out_of_range();
    *p = static_cast<uint8_t>(v);
    return true;
  }
  case dtype::i8:
  case dtype::i16:
  case dtype::i32:
  case dtype::i64: {
    int64_t v;
    if (!parse_number(s, v))
      return not_a("an integer");
    auto bits = dtype_size(t) * 8;
    if (bits < 64) {
      auto hi = (int64_t{1} << (bits - 1)) - 1;
      if (v > hi || v < -hi - 1)
        return out_of_range();
    }
    if (t == dtype::i8)
      store(static_cast<int8_t>(v));
    else if (t == dtype::i16)
      store(static_cast<int16_t>(v));
    else if (t == dtype::i32)
      store(static_cast<int32_t>(v));
    else
      store(v);
    return true;
  }
  }
  err = "unsupported dtype";
  return false;
}

// NAME:DTYPE:SHAPE:VALUES, e.g. x:f32:1,4:0.5,1,2,3 (a single value fills
// the tensor; an empty SHAPE is a scalar). Splits from the right so the name
// may itself contain ':'.
bool parse_input(std::string_view spec, const codec_limits& limits, tensor& out,
                 std::string& err) {
  std::string_view parts[4];
  auto rest = spec;
  for (int i = 3; i > 0; --i) {
    auto pos = rest.rfind(':');
    if (pos == std::string_view::npos) {
      err = "expected NAME:DTYPE:SHAPE:VALUES";
      return false;
    }
    parts[i] = rest.substr(pos + 1);
    rest = rest.substr(0, pos);
  }
  parts[0] = rest;
  if (parts[0].empty()) {
    err = "empty tensor name";
    return false;
  }
  out.name = std::string{parts[0]};
  auto type = parse_dtype(trim(parts[1]));
  if (!type) {
    err = "unknown dtype '" + std::string{parts[1]} +
          "' (f32 f16 bf16 f64 i8 i16 i32 i64 u8 bool)";
    return false;
  }
  out.type = *type;
  out.shape.clear();
  uint64_t count = 1;
  if (!trim(parts[2]).empty()) {
    for (auto d : split(parts[2], ',')) {
      uint64_t dim;
      if (!parse_number(d, dim)) {
        err = "bad dimension '" + std::string{d} + "' in shape (use e.g. 1,4)";
        return false;
      }
      if (out.shape.size() == limits.max_rank) {
        err = "shape has more than " + std::to_string(limits.max_rank) +
              " dimensions";
        return false;
      }
      out.shape.push_back(dim);
      if (__builtin_mul_overflow(count, dim, &count)) {
        err = "shape is too large";
        return false;
      }
    }
  }
  auto size = dtype_size(out.type);
  if (count > limits.max_bin_bytes / size) {
    err = "shape is too large (over " + std::to_string(limits.max_bin_bytes) +
          " bytes)";
    return false;
  }
  auto values = trim(parts[3]).empty() ? std::vector<std::string_view>{}
                                       : split(parts[3], ',');
  if (values.size() != 1 && values.size() != count) {
    err = "shape holds " + std::to_string(count) + " values but " +
          std::to_string(values.size()) +
          " were given (give all or a single one)";
    return false;
  }
  out.data.assign(count * size, 0);
  for (size_t i = 0; i < count; ++i) {
    auto& v = values.size() == 1 ? values[0] : values[i];
    if (!store_value(v, out.type, out.data.data() + i * size, err))
      return false;
    // Broadcasting: parse once, copy the bytes.
    if (values.size() == 1) {
      for (size_t k = 1; k < count; ++k)
        std::memcpy(out.data.data() + k * size, out.data.data(), size);
      break;
    }
  }
  if constexpr (std::endian::native == std::endian::big)
    for (size_t i = 0; i < count; ++i)
      std::reverse(out.data.begin() + i * size,
                   out.data.begin() + (i + 1) * size);
  return true;
}

// -- subcommands
// ----------------------------------------------------------------

// Asks the gateway for its models and picks `name`; prints why not and sets
// rc when that fails.
std::optional<model_info> find_model(client& c, const std::string& name,
                                     int& rc) {
  request req;
  req.op = op_kind::models;
  auto rep = c.call(std::move(req));
  if (!rep) {
    rc = report_client_error(rep.error());
    return std::nullopt;
  }
  if (rep->code != status::ok) {
    rc = report_status(*rep);
    return std::nullopt;
  }
  for (auto& m : rep->models)
    if (m.name == name)
      return m;
  std::cerr << "error: NOT_FOUND: unknown model '" << name << "'";
  if (!rep->models.empty()) {
    std::cerr << " (known:";
    for (auto& m : rep->models)
      std::cerr << ' ' << m.name;
    std::cerr << ')';
  }
  std::cerr << '\n';
  rc = exit_status;
  return std::nullopt;
}

// A request whose reply is printed as a table (status, models) or a line.
int run_simple(const global_options& g, request req) {
  int rc = exit_ok;
  auto c = open_client(g, rc);
  if (!c)
    return rc;
  auto op = req.op;
  auto target = op == op_kind::drain ? req.node : req.model;
  auto start = clock_type::now();
  auto rep = c->call(std::move(req));
  auto took = std::chrono::duration_cast<std::chrono::microseconds>(
      clock_type::now() - start);
  if (!rep)
    return report_client_error(rep.error());
  if (g.json) {
    std::cout << reply_json(*rep);
    return report_status(*rep);
  }
  if (rep->code != status::ok)
    return report_status(*rep);
  switch (op) {
  case op_kind::status:
    print_nodes(*rep);
    break;
  case op_kind::models:
    print_models(*rep);
    break;
  case op_kind::ping:
    std::cout << "OK: " << g.endpoint << " answered in " << took.count()
              << " us\n";
    break;
  default:
    std::cout << to_string(op) << ' ' << target;
    if (rep->version)
      std::cout << " version " << *rep->version;
    std::cout << ": " << to_string(rep->code) << '\n';
    break;
  }
  return exit_ok;
}

// `load`: waits as long as the load takes (--load-timeout-s) and, on a
// terminal, draws a progress bar from the `models` op's progress while the
// model's files are fetched or verified.
int run_load(const global_options& g, request req, int64_t timeout_s) {
  int rc = exit_ok;
  auto c = open_client(g, rc);
  if (!c)
    return rc;
  auto model = req.model;
  bool tty = isatty(STDERR_FILENO) != 0 && !g.json;
  std::optional<caf::expected<reply>> result;
  c->submit(
      std::move(req), [&](caf::expected<reply> r) { result = std::move(r); },
      std::chrono::milliseconds{timeout_s * 1000}, 0);
  auto start = clock_type::now();
  auto next_poll = start;
  bool asking = false;
  size_t drawn = 0;
  uint64_t last_done = 0;
  auto last_t = start;
  double rate = 0;
  while (!result) {
    c->poll(std::chrono::milliseconds{50});
    auto now = clock_type::now();
    if (!tty || asking || now < next_poll)
      continue;
    next_poll = now + std::chrono::milliseconds{250};
    asking = true;
    request q;
    q.op = op_kind::models;
    c->submit(
        std::move(q),
        [&](caf::expected<reply> r) {
          asking = false;
          if (!r || result)
            return;
          for (auto& m : r->models) {
            if (m.name != model || !m.has_progress)
              continue;
            auto t = clock_type::now();
            auto dt = std::chrono::duration<double>(t - last_t).count();
            if (dt > 0.2 && m.bytes_done >= last_done) {
              rate = (m.bytes_done - last_done) / dt;
              last_done = m.bytes_done;
              last_t = t;
            }
            constexpr int width = 30;
            double frac = m.bytes_total > 0
                              ? static_cast<double>(m.bytes_done) /
                                    static_cast<double>(m.bytes_total)
                              : 0.0;
            auto fill = static_cast<int>(frac * width);
            char line[160];
            int n = std::snprintf(
                line, sizeof(line),
                "\rloading %s [%s%s] %3.0f%% %.1f/%.1f MB %.1f MB/s",
                model.c_str(),
                std::string(static_cast<size_t>(fill), '#').c_str(),
                std::string(static_cast<size_t>(width - fill), '.').c_str(),
                frac * 100, m.bytes_done / 1e6, m.bytes_total / 1e6,
                rate / 1e6);
            std::fputs(line, stderr);
            drawn = std::max(drawn, static_cast<size_t>(n > 0 ? n : 0));
          }
        },
        std::chrono::milliseconds{2000}, 0);
  }
  if (drawn > 0)
    std::fprintf(stderr, "\r%*s\r", static_cast<int>(drawn), "");
  auto& rep = *result;
  if (!rep)
    return report_client_error(rep.error());
  if (g.json) {
    std::cout << reply_json(*rep);
    return report_status(*rep);
  }
  if (rep->code != status::ok)
    return report_status(*rep);
  auto took = std::chrono::duration<double>(clock_type::now() - start).count();
  std::cout << "load " << model;
  if (rep->version)
    std::cout << " version " << *rep->version;
  std::cout << ": OK in " << std::fixed << std::setprecision(2) << took
            << " s\n";
  return exit_ok;
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
    if (!m.is_directory() || name.empty() || name[0] == '.')
      continue;
    for (auto& v : fs::directory_iterator{m.path(), ec}) {
      auto vname = v.path().filename().string();
      uint64_t ver = 0;
      auto [p, err] =
          std::from_chars(vname.data(), vname.data() + vname.size(), ver);
      if (err != std::errc{} || p != vname.data() + vname.size() || ver == 0 ||
          !fs::exists(v.path() / "model.toml", ec))
        continue;
      models[name].push_back(ver);
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
      std::sort(versions.begin(), versions.end());
      out << '"' << name << "\" = [";
      for (size_t i = 0; i < versions.size(); ++i)
        out << (i ? ", " : "") << versions[i];
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

int run_infer(const global_options& g, const infer_options& o) {
  request req;
  req.op = op_kind::infer;
  req.model = o.model;
  req.version = o.version;
  req.cache = parse_cache_mode(o.cache).value_or(cache_mode::use);
  if (o.priority)
    req.priority = static_cast<uint8_t>(*o.priority);
  req.timeout_ms = o.deadline_ms;
  req.tenant = o.tenant;
  client_options defaults;
  for (auto& spec : o.inputs) {
    tensor t;
    std::string err;
    if (!parse_input(spec, defaults.limits, t, err)) {
      std::cerr << "error: --input '" << spec << "': " << err << '\n';
      return exit_usage;
    }
    req.inputs.push_back(std::move(t));
  }
  int rc = exit_ok;
  auto c = open_client(g, rc);
  if (!c)
    return rc;
  if (req.inputs.empty()) {
    auto model = find_model(*c, o.model, rc);
    if (!model)
      return rc;
    auto bytes = input_bytes(model->inputs);
    if (!bytes || *bytes > defaults.limits.max_frame_bytes) {
      std::cerr << "error: the inputs of model '" << o.model
                << "' are too large to generate; pass --input\n";
      return exit_status;
    }
    // Index 0 of the seed: the same bytes as the bench's first hot input.
    req.inputs = make_inputs(model->inputs, o.seed, 0);
  }
  auto start = clock_type::now();
  auto rep = c->call(std::move(req));
  auto took = std::chrono::duration_cast<std::chrono::microseconds>(
      clock_type::now() - start);
  if (!rep)
    return report_client_error(rep.error());
  if (g.json)
    std::cout << reply_json(*rep);
  else if (rep->code == status::ok)
    print_infer(*rep, took);
  return report_status(*rep);
}

int run_bench_cmd(const global_options& g, bench_options o,
                  const std::string& cache) {
  o.cache = parse_cache_mode(cache).value_or(cache_mode::use);
  o.timeout = std::chrono::milliseconds{g.timeout_ms};
  o.progress = isatty(STDERR_FILENO) != 0;
  int rc = exit_ok;
  auto c = open_client(g, rc);
  if (!c)
    return rc;
  // The bench's own rule: an unknown model or no answer at all is exit 1,
  // even when the models query itself went unanswered.
  auto model = find_model(*c, o.model, rc);
  if (!model)
    return exit_status;
  client_options defaults;
  auto bytes = input_bytes(model->inputs);
  if (!bytes || *bytes > defaults.limits.max_frame_bytes) {
    std::cerr << "error: the inputs of model '" << o.model
              << "' are too large for a request\n";
    return exit_status;
  }
  auto res = run_bench(*c, *model, o);
  if (g.json)
    print_bench_json(std::cout, res);
  else
    print_bench_text(std::cout, o, res);
  if (res.replies == 0) {
    std::cerr << "error: no request was answered";
    if (res.timeouts > 0)
      std::cerr << " (" << res.timeouts << " timed out after " << g.timeout_ms
                << " ms)";
    std::cerr << '\n';
    return exit_status;
  }
  return exit_ok;
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"shoalctl: operator and client tool for a shoal cluster "
               "(protocol v1)"};
  // At most one; "none" is reported below with the help text, and leaving
  // the minimum out lets CLI11 name a misspelled subcommand.
  app.require_subcommand(0, 1);
  app.fallthrough();
  app.footer("Exit codes: 0 OK, 1 non-OK status or unknown model, 2 usage "
             "error, 3 no reply within --timeout-ms.");

  global_options g;
  app.add_option("--endpoint", g.endpoint, "gateway endpoint")
      ->envname("SHOAL_ENDPOINT")
      ->capture_default_str();
  app.add_option("--timeout-ms", g.timeout_ms,
                 "how long to wait for each reply")
      ->check(CLI::Range(int64_t{1}, int64_t{24} * 3600 * 1000))
      ->capture_default_str();
  app.add_option("--retries", g.retries,
                 "resends of a request (same id) after a timeout; not bench")
      ->check(CLI::Range(0, 100))
      ->capture_default_str();
  app.add_flag("--json", g.json, "machine-readable output");

  auto* status_cmd = app.add_subcommand("status", "list the cluster's nodes");
  auto* models_cmd = app.add_subcommand("models", "list the models");
  auto* ping_cmd = app.add_subcommand("ping", "check that the gateway answers");

  infer_options io;
  auto* infer_cmd = app.add_subcommand("infer", "run one inference");
  infer_cmd->add_option("model", io.model, "model name")->required();
  infer_cmd->add_option("--version", io.version, "model version");
  infer_cmd
      ->add_option("--input,-i", io.inputs,
                   "NAME:DTYPE:SHAPE:VALUES, e.g. x:f32:1,4:0.5,1,2,3 (one "
                   "value fills the tensor); repeat per input; without it, "
                   "inputs are generated from the model's spec")
      ->allow_extra_args(false);
  infer_cmd->add_option("--seed", io.seed, "seed of generated inputs")
      ->capture_default_str();
  infer_cmd->add_option("--cache", io.cache, "cache mode")
      ->check(CLI::IsMember({"use", "bypass", "refresh"}))
      ->capture_default_str();
  infer_cmd->add_option("--priority", io.priority, "0 (most urgent) .. 9")
      ->check(CLI::Range(0, 9));
  infer_cmd->add_option("--deadline-ms", io.deadline_ms,
                        "server-side deadline from receipt");
  infer_cmd->add_option("--tenant", io.tenant, "quota bucket");

  std::string admin_model;
  std::optional<uint64_t> admin_version;
  auto* load_cmd = app.add_subcommand("load", "load a model");
  auto* unload_cmd = app.add_subcommand("unload", "unload a model");
  for (auto* cmd : {load_cmd, unload_cmd}) {
    cmd->add_option("model", admin_model, "model name")->required();
    cmd->add_option("--version", admin_version, "model version");
  }
  int64_t load_timeout_s = 3600;
  load_cmd
      ->add_option("--load-timeout-s", load_timeout_s,
                   "how long to wait for the load (downloads can be slow)")
      ->capture_default_str();
  std::string index_root;
  auto* index_cmd = app.add_subcommand(
      "index", "write ROOT/index.toml so that nodes can serve ROOT over "
               "http(s):// or file://");
  index_cmd->add_option("root", index_root, "repository directory")->required();
  std::string drain_node;
  auto* drain_cmd = app.add_subcommand(
      "drain", "move a node's work elsewhere and stop placing on it");
  drain_cmd->add_option("node", drain_node, "node name")->required();

  bench_options bo;
  std::string bench_cache = "use";
  auto* bench_cmd = app.add_subcommand("bench", "generate load and report "
                                                "latency and throughput");
  bench_cmd->add_option("--model", bo.model, "model name")->required();
  bench_cmd->add_option("--version", bo.version, "model version");
  auto* conc = bench_cmd
                   ->add_option("--concurrency", bo.concurrency,
                                "closed loop: requests in flight")
                   ->check(CLI::Range(size_t{1}, size_t{100000}))
                   ->capture_default_str();
  auto* rate = bench_cmd
                   ->add_option("--rate", bo.rate,
                                "open loop: requests per second at fixed "
                                "intervals (latency from the scheduled time)")
                   ->check(CLI::Range(0.001, 1e7));
  conc->excludes(rate);
  bench_cmd->add_option("--duration", bo.duration_s, "measured seconds")
      ->check(CLI::Range(0.001, 86400.0))
      ->capture_default_str();
  bench_cmd->add_option("--warmup", bo.warmup_s, "unmeasured seconds first")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
  bench_cmd
      ->add_option("--distinct", bo.distinct,
                   "distinct inputs the --zipf ranks cover")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 62))
      ->capture_default_str();
  auto* hot = bench_cmd
                  ->add_option("--hot-ratio", bo.hot_ratio,
                               "share of requests reusing a hot input; the "
                               "rest use never-seen inputs")
                  ->check(CLI::Range(0.0, 1.0))
                  ->capture_default_str();
  bench_cmd->add_option("--hot-set", bo.hot_set, "number of hot inputs")
      ->check(CLI::Range(size_t{1}, size_t{1} << 20))
      ->capture_default_str();
  auto* zipf = bench_cmd
                   ->add_option("--zipf", bo.zipf,
                                "Zipf exponent S over --distinct inputs")
                   ->check(CLI::Range(0.0, 100.0));
  hot->excludes(zipf);
  bench_cmd->add_option("--cache", bench_cache, "cache mode")
      ->check(CLI::IsMember({"use", "bypass", "refresh"}))
      ->capture_default_str();
  bench_cmd->add_option("--seed", bo.seed, "seed of inputs and choices")
      ->capture_default_str();
  bench_cmd->add_option("--tenant", bo.tenant, "quota bucket");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    auto rc = app.exit(e);
    return rc == 0 ? exit_ok : exit_usage;
  }

  try {
    if (status_cmd->parsed()) {
      request req;
      req.op = op_kind::status;
      return run_simple(g, std::move(req));
    }
    if (models_cmd->parsed()) {
      request req;
      req.op = op_kind::models;
      return run_simple(g, std::move(req));
    }
    if (ping_cmd->parsed()) {
      request req;
      req.op = op_kind::ping;
      return run_simple(g, std::move(req));
    }
    if (infer_cmd->parsed())
      return run_infer(g, io);
    if (index_cmd->parsed())
      return run_index(index_root);
    if (load_cmd->parsed()) {
      request req;
      req.op = op_kind::load;
      req.model = admin_model;
      req.version = admin_version;
      return run_load(g, std::move(req), load_timeout_s);
    }
    if (load_cmd->parsed() || unload_cmd->parsed()) {
      request req;
      req.op = load_cmd->parsed() ? op_kind::load : op_kind::unload;
      req.model = admin_model;
      req.version = admin_version;
      return run_simple(g, std::move(req));
    }
    if (drain_cmd->parsed()) {
      request req;
      req.op = op_kind::drain;
      req.node = drain_node;
      return run_simple(g, std::move(req));
    }
    if (bench_cmd->parsed()) {
      if (rate->count() == 0)
        bo.rate = 0;
      return run_bench_cmd(g, bo, bench_cache);
    }
  } catch (const std::exception& e) {
    // ZeroMQ or allocation failures: say what happened instead of aborting.
    std::cerr << "error: " << e.what() << '\n';
    return exit_status;
  }
  std::cerr << "error: a subcommand is required\n\n" << app.help();
  return exit_usage;
}
