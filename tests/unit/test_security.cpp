// Keys, the clients file and the admin rule: key files round-trip and are
// refused when others may read them; a clients file is parsed with errors
// naming the file and entry, and a bad re-read keeps the previous list;
// admin ops need an admin key (CURVE) or a loopback peer (no CURVE).
#include <sys/stat.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "net/gateway/access.hpp"
#include "net/gateway/client_socket.hpp"
#include "net/security/client_registry.hpp"
#include "net/security/curve_keys.hpp"
#include "net/security/zap_handler.hpp"
#include "net/wire/error.hpp"

using namespace shoal;
namespace fs = std::filesystem;

namespace {

struct scratch {
  fs::path dir;
  scratch() {
    char tmpl[] = "/tmp/shoal-security-XXXXXX";
    dir = ::mkdtemp(tmpl);
  }
  ~scratch() { fs::remove_all(dir); }
  std::string write(const std::string& name, const std::string& text,
                    mode_t mode = 0600) {
    auto p = (dir / name).string();
    auto tmp = p + ".tmp";
    std::ofstream{tmp} << text;
    ::chmod(tmp.c_str(), mode);
    fs::rename(tmp, p);
    return p;
  }
};

std::string client_toml(const std::string& name, const curve_key& key,
                        const std::string& role = "client") {
  return "[[client]]\nname = \"" + name + "\"\npublic_key = \"" + z85_of(key) +
         "\"\ntenant = \"t-" + name + "\"\nrole = \"" + role + "\"\n\n";
}

std::string reason(const caf::error& e) {
  return reason_of(e);
}

} // namespace

TEST(curve_keys, keygen_writes_a_private_pair_that_reads_back) {
  scratch s;
  auto pair = generate_key_pair();
  ASSERT_TRUE(pair);
  auto prefix = (s.dir / "node").string();
  ASSERT_FALSE(write_key_pair(prefix, *pair));
  struct stat st {};
  ASSERT_EQ(::stat((prefix + ".key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto back = read_secret_key_file(prefix + ".key", "test");
  ASSERT_TRUE(back) << reason(back.error());
  EXPECT_EQ(back->secret_key, pair->secret_key);
  EXPECT_EQ(back->public_key, pair->public_key);
  auto pub = read_public_key(prefix + ".pub", "test");
  ASSERT_TRUE(pub);
  EXPECT_EQ(*pub, pair->public_key);
  // Z85 text works wherever a file does.
  auto z = read_public_key(z85_of(pair->public_key), "test");
  ASSERT_TRUE(z);
  EXPECT_EQ(*z, pair->public_key);
  // Never overwrites.
  EXPECT_TRUE(write_key_pair(prefix, *pair));
}

TEST(curve_keys, readable_by_others_is_refused_naming_the_file) {
  scratch s;
  auto pair = generate_key_pair();
  ASSERT_TRUE(pair);
  auto secret_text = z85_of(pair->secret_key);
  auto path = s.write("open.key", secret_text + "\n", 0644);
  auto r = read_secret_key_file(path, "security.curve_secret_key_file");
  ASSERT_FALSE(r);
  auto why = reason(r.error());
  EXPECT_NE(why.find(path), std::string::npos) << why;
  EXPECT_NE(why.find("security.curve_secret_key_file"), std::string::npos);
  // The key itself is never part of an error.
  EXPECT_EQ(why.find(secret_text), std::string::npos) << why;
  auto bad = s.write("bad.key", "not-a-key\n");
  auto r2 = read_secret_key_file(bad, "k");
  ASSERT_FALSE(r2);
  EXPECT_EQ(reason(r2.error()).find("not-a-key"), std::string::npos);
}

TEST(curve_keys, derived_pairs_are_stable_and_distinct) {
  auto a = derive_key_pair("secret", "hub");
  auto b = derive_key_pair("secret", "hub");
  auto c = derive_key_pair("secret", "member");
  auto d = derive_key_pair("other", "hub");
  EXPECT_EQ(a.secret_key, b.secret_key);
  EXPECT_EQ(a.public_key, b.public_key);
  EXPECT_NE(a.public_key, c.public_key);
  EXPECT_NE(a.public_key, d.public_key);
}

TEST(clients_file, parses_and_names_what_is_wrong) {
  scratch s;
  auto k1 = generate_key_pair();
  auto k2 = generate_key_pair();
  ASSERT_TRUE(k1 && k2);
  auto path =
      s.write("clients.toml", client_toml("alice", k1->public_key) +
                                  client_toml("root", k2->public_key, "admin"));
  auto list = load_clients_file(path);
  ASSERT_TRUE(list) << reason(list.error());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].tenant, "t-alice");
  EXPECT_EQ((*list)[1].role, client_role::admin);

  auto bad_role = s.write("r.toml", client_toml("x", k1->public_key, "root"));
  auto r = load_clients_file(bad_role);
  ASSERT_FALSE(r);
  EXPECT_NE(reason(r.error()).find("#1 (x): role"), std::string::npos)
      << reason(r.error());

  auto twice = s.write("t.toml", client_toml("a", k1->public_key) +
                                     client_toml("b", k1->public_key));
  EXPECT_FALSE(load_clients_file(twice));
  auto open = s.write("o.toml", client_toml("a", k1->public_key), 0644);
  auto o = load_clients_file(open);
  ASSERT_FALSE(o);
  EXPECT_NE(reason(o.error()).find(open), std::string::npos);
}

TEST(clients_file, a_bad_reread_keeps_the_previous_list) {
  scratch s;
  auto k1 = generate_key_pair();
  auto k2 = generate_key_pair();
  ASSERT_TRUE(k1 && k2);
  auto path = s.write("clients.toml", client_toml("alice", k1->public_key));
  auto reg = client_registry::open(path);
  ASSERT_TRUE(reg) << reason(reg.error());
  auto& r = **reg;
  EXPECT_TRUE(r.find(k1->public_key));
  EXPECT_FALSE(r.find(k2->public_key));
  s.write("clients.toml", "[[client]\nbroken");
  r.reload_if_changed();
  EXPECT_TRUE(r.find(k1->public_key)) << "a bad file keeps the old list";
  s.write("clients.toml", client_toml("bob", k2->public_key));
  r.reload_if_changed();
  EXPECT_FALSE(r.find(k1->public_key)) << "alice was revoked";
  ASSERT_TRUE(r.find(k2->public_key));
  EXPECT_EQ(r.find(k2->public_key)->name, "bob");
  EXPECT_TRUE(r.has_name("bob"));
  EXPECT_FALSE(r.has_name("alice"));
}

TEST(access, admin_ops_need_an_admin) {
  for (auto op :
       {op_kind::load, op_kind::unload, op_kind::drain, op_kind::reload}) {
    EXPECT_TRUE(is_admin_op(op));
  }
  for (auto op :
       {op_kind::infer, op_kind::ping, op_kind::models, op_kind::status}) {
    EXPECT_FALSE(is_admin_op(op));
    EXPECT_EQ(access_refusal(op, client_peer{}, access_policy{}), "");
  }
  client_peer remote;
  client_peer local;
  local.local = true;
  // Without CURVE: loopback only, unless admin_from = "any".
  EXPECT_NE(access_refusal(op_kind::drain, remote, {}), "");
  EXPECT_EQ(access_refusal(op_kind::drain, local, {}), "");
  EXPECT_EQ(access_refusal(op_kind::drain, remote, {false, true}), "");
  // With CURVE: the key's role, wherever the peer is.
  client_peer key_client{"alice", "t", false, true};
  client_peer key_admin{"root", "ops", true, false};
  EXPECT_NE(access_refusal(op_kind::load, key_client, {true, true}), "");
  EXPECT_EQ(access_refusal(op_kind::load, key_admin, {true, false}), "");
}

TEST(access, loopback_addresses) {
  EXPECT_TRUE(is_loopback_address("127.0.0.1"));
  EXPECT_TRUE(is_loopback_address("127.0.0.2"));
  EXPECT_TRUE(is_loopback_address("::1"));
  EXPECT_TRUE(is_loopback_address("::ffff:127.0.0.1"));
  EXPECT_FALSE(is_loopback_address("192.0.2.2"));
  EXPECT_FALSE(is_loopback_address("::ffff:10.0.0.1"));
}

TEST(zap, metadata_encoding) {
  auto m = encode_zap_metadata({{"tenant", "ab"}});
  EXPECT_EQ(m, std::string("\x06tenant\x00\x00\x00\x02"
                           "ab",
                           13));
}
