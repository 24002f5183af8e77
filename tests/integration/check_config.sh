# shoald --check-config reads every file that starting the node would
# read, without starting or binding anything: a missing or world-readable
# cluster.secret_file, a missing security.curve_secret_key_file, a missing
# or broken security.clients_file and a missing cluster.workers_file each
# exit 2 with the setting and the file named (and the secret itself never
# printed); with every file in place it says "configuration OK".
source "$(dirname "$0")/lib.sh"

scratch_dir WORK shoal-check-config
umask 077
for k in gateway head; do
  "$SHOALCTL" keygen "$WORK/$k" >/dev/null
done
printf '[[client]]\nname = "ops"\npublic_key = "%s"\nrole = "admin"\n' \
  "$(cat "$WORK/gateway.pub")" >"$WORK/clients.toml"
secret_text=check-config-secret-d41d8cd9
printf '%s\n' "$secret_text" >"$WORK/secret"
cat "$WORK/gateway.pub" >"$WORK/workers"
# Ports that are taken would fail a start, never a check.
common=(--set gateway.endpoint=tcp://127.0.0.1:1 --set http.listen=)

# expect_refused WORDS... -- ARGS...: exit 2, every word in the output,
# and not the secret.
expect_refused() {
  local words=() out rc
  while [[ $1 != -- ]]; do
    words+=("$1")
    shift
  done
  shift
  set +e
  out=$("$SHOALD" --check-config "${common[@]}" "$@" 2>&1)
  rc=$?
  set -e
  [[ $rc == 2 ]] || { echo "check-config $* exited $rc: $out"; exit 1; }
  for w in "${words[@]}"; do
    grep -qF -- "$w" <<<"$out" || { echo "expected '$w' in: $out"; exit 1; }
  done
  if grep -qF -- "$secret_text" <<<"$out"; then
    echo "check-config printed the secret: $out"; exit 1
  fi
  echo "refused: $out"
}

expect_ok() {
  local out
  out=$("$SHOALD" --check-config "${common[@]}" "$@" 2>&1) ||
    { echo "check-config $* failed: $out"; exit 1; }
  grep -q "configuration OK" <<<"$out" || { echo "not OK: $out"; exit 1; }
  if grep -qF -- "$secret_text" <<<"$out"; then
    echo "check-config printed the secret: $out"; exit 1
  fi
}

head=(--role head --set cluster.listen=tcp://127.0.0.1:1)
worker=(--join tcp://127.0.0.1:1)

# The cluster secret: missing, then readable by others.
expect_refused cluster.secret_file "$WORK/nope" -- \
  "${head[@]}" --set "cluster.secret_file=$WORK/nope"
chmod 644 "$WORK/secret"
expect_refused cluster.secret_file "$WORK/secret" "group or others" -- \
  "${worker[@]}" --set "cluster.secret_file=$WORK/secret"
chmod 600 "$WORK/secret"
expect_ok "${worker[@]}" --set "cluster.secret_file=$WORK/secret"
expect_ok "${head[@]}" --set "cluster.secret_file=$WORK/secret"

# The gateway's CURVE key and its clients.
gw_key=(--set "security.curve_secret_key_file=$WORK/gateway.key")
expect_refused security.curve_secret_key_file "$WORK/nope.key" -- \
  --set "security.curve_secret_key_file=$WORK/nope.key" \
  --set "security.clients_file=$WORK/clients.toml"
expect_refused security.clients_file "$WORK/nope.toml" -- \
  "${gw_key[@]}" --set "security.clients_file=$WORK/nope.toml"
printf '[[client]]\nname = "x"\npublic_key = "not a key"\n' >"$WORK/bad.toml"
expect_refused security.clients_file "$WORK/bad.toml" "#1 (x)" -- \
  "${gw_key[@]}" --set "security.clients_file=$WORK/bad.toml"
expect_ok "${gw_key[@]}" --set "security.clients_file=$WORK/clients.toml"

# The node link's CURVE keys: a head's workers file.
link_key=(--set "cluster.curve_secret_key_file=$WORK/head.key")
expect_refused cluster.workers_file "$WORK/nope.workers" -- \
  "${head[@]}" "${link_key[@]}" --set "cluster.workers_file=$WORK/nope.workers"
expect_ok "${head[@]}" "${link_key[@]}" --set "cluster.workers_file=$WORK/workers"
echo "check-config OK"
