#!/usr/bin/env bash
# Install ringway on this host as the systemd service sysctl/ringway.service
# describes. Idempotent: what is already in place is left alone, and an existing
# /etc/ringway/ringway.toml or ringway.env is never overwritten.
#
#   usage: scripts/install.sh [--dry-run]
#
# Creates the system user ringway (no login shell, no home); /etc/ringway/ringway.toml
# from ops/ringway.example.toml and /etc/ringway/ringway.env (secrets) from
# ops/ringway.env.example, both readable by root and group ringway only; the binary
# /usr/local/bin/ringway from ${CARGO_TARGET_DIR:-target}/release/ringway (built with
# `cargo build --release` if missing); /var/lib/ringway owned by ringway. Then runs
# scripts/apply-sysctl.sh --unit (kernel profile, limits, unit) and
# `ringway check --config /etc/ringway/ringway.toml`, and prints its verdict. Exits
# 1 when the config is invalid; a host that does not fit the connection target yet
# is reported, not fatal. --dry-run prints every action and changes nothing. Needs
# root unless --dry-run.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "install: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done
if [ "$DRY" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  echo "install: run as root (sudo scripts/install.sh), or with --dry-run to see what it would do" >&2
  exit 1
fi

say() { printf '%s\n' "$*"; }
group() { id -gn "$user" 2>/dev/null || echo "$user"; } # the user's group, once it exists
die() { printf 'install: %s\n' "$*" >&2; exit 1; }

user=ringway
etc=/etc/ringway
config=$etc/ringway.toml
envfile=$etc/ringway.env
bin=/usr/local/bin/ringway
state=/var/lib/ringway
built="${CARGO_TARGET_DIR:-target}/release/ringway"

# 1. The binary, built if missing.
if [ ! -x "$built" ]; then
  if [ "$DRY" -eq 1 ]; then
    say "would build $built (cargo build --release)"
  else
    command -v cargo >/dev/null ||
      die "$built is missing and cargo is not on root's PATH: build it as your user (cargo build --release), then run this again with the same CARGO_TARGET_DIR"
    say "building   $built (cargo build --release)"
    cargo build --release
    [ -x "$built" ] ||
      die "cargo build --release did not produce $built: set CARGO_TARGET_DIR to the target directory the build used"
  fi
fi

# 2. The user the unit runs as.
if getent passwd "$user" >/dev/null; then
  say "unchanged  user $user"
elif [ "$DRY" -eq 1 ]; then
  say "would add  system user $user (no login shell, no home)"
else
  useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell "$(command -v nologin || echo /usr/sbin/nologin)" --comment "ringway service" "$user"
  say "added      system user $user (no login shell, no home)"
fi

# 3. Config and secrets: created once, never overwritten.
if [ -d "$etc" ]; then
  say "unchanged  $etc"
elif [ "$DRY" -eq 1 ]; then
  say "would create $etc"
else
  install -d -m 0755 "$etc"; say "created    $etc"
fi
install_once() { # src dst what
  if [ -e "$2" ]; then
    say "kept       $2 (exists: never overwritten; the current example is $1)"
  elif [ "$DRY" -eq 1 ]; then
    say "would create $2 from $1 ($3; mode 0640, root:$(group))"
  else
    install -m 0640 -o root -g "$(group)" "$1" "$2"; say "created    $2 from $1 ($3)"
  fi
}
install_once ops/ringway.example.toml "$config" "the node's configuration: edit it"
install_once ops/ringway.env.example "$envfile" "secrets: RINGWAY_API_KEY, RINGWAY_TOKEN_SECRET, RINGWAY_MESH_SECRET"

# 4. The binary in place.
bin_changed=0
if [ -f "$bin" ] && [ -f "$built" ] && cmp -s "$built" "$bin"; then
  say "unchanged  $bin"
elif [ "$DRY" -eq 1 ]; then
  say "would copy $built -> $bin"
else
  install -m 0755 "$built" "$bin"; say "installed  $bin"; bin_changed=1
fi

# 5. The state directory (StateDirectory=ringway in the unit creates it too).
if [ -d "$state" ] && [ "$(stat -c %U:%G "$state")" = "$user:$(group)" ]; then
  say "unchanged  $state"
elif [ "$DRY" -eq 1 ]; then
  say "would create $state (owner $user, mode 0750)"
else
  install -d -o "$user" -g "$(group)" -m 0750 "$state"; say "created    $state (owner $user, mode 0750)"
fi

# 6. Kernel profile, limits and the unit.
say "kernel profile, limits and unit (scripts/apply-sysctl.sh --unit):"
sysctl_args=(--unit)
[ "$DRY" -eq 0 ] || sysctl_args+=(--dry-run)
scripts/apply-sysctl.sh "${sysctl_args[@]}" | sed '/^next: /d; s/^/  /'

# 7. The check, on the config the service will read, with its environment and, where
# the kernel allows it, its open-file limit.
if [ "$DRY" -eq 1 ]; then
  check_bin=$built
  check_config=$config
  [ -e "$config" ] || check_config=ops/ringway.example.toml
  check_env=$envfile
  [ -e "$envfile" ] || check_env=ops/ringway.env.example
else
  check_bin=$bin check_config=$config check_env=$envfile
fi
if [ ! -x "$check_bin" ]; then
  say "would run  ringway check --config $config (after the build)"
else
  say "ringway check --config $check_config:"
  nofile=$(sed -n 's/^LimitNOFILE=//p' sysctl/ringway.service)
  set +e
  out=$(
    while IFS= read -r line; do
      if [[ "$line" =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]]; then
        name=${BASH_REMATCH[1]} value=${BASH_REMATCH[2]}
        if [[ "$value" =~ ^\"(.*)\"$ || "$value" =~ ^\'(.*)\'$ ]]; then
          value=${BASH_REMATCH[1]}
        fi
        export "$name=$value"
      fi
    done < <(cat "$check_env" 2>/dev/null)
    if ! ulimit -n "$nofile" 2>/dev/null; then
      echo "(open files: this shell's limit $(ulimit -Hn), not the unit's LimitNOFILE=$nofile, which needs fs.nr_open >= $nofile)"
    fi
    RINGWAY_LOG=warn RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 "$check_bin" check --config "$check_config" 2>&1
  )
  status=$?
  set -e
  printf '%s\n' "$out" | sed 's/^/  /'
  if ! grep -q '^config: valid' <<<"$out"; then
    die "$check_config is invalid (above): fix it, then run this again; the service would not start with it"
  elif [ "$status" -eq 0 ]; then
    say "verdict    config valid; the host fits its connection target"
  else
    say "verdict    config valid; the host does NOT fit its connection target yet: fix the FAIL lines above, then run ringway check --config $config"
  fi
fi

if [ "$bin_changed" -eq 1 ] && systemctl is-active --quiet ringway 2>/dev/null; then
  say "note       ringway is running the previous binary: systemctl restart ringway (it drains first)"
fi
if [ "$DRY" -eq 1 ]; then
  say "dry run: nothing was changed"
fi
say "next: edit $config (secrets in $envfile), then systemctl enable --now ringway"
