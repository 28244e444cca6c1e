#!/usr/bin/env bash
# Install and apply ringway's kernel profile (sysctl/99-ringway.conf) and limits
# (sysctl/ringway-limits.conf); with --unit also the systemd unit. Idempotent: files
# are only copied when they differ, and sysctl values only written when they differ.
#
#   usage: scripts/apply-sysctl.sh [--dry-run] [--unit]
#
# --dry-run prints what would change and changes nothing. Keys the running kernel
# does not have (e.g. nf_conntrack when conntrack is not loaded) are skipped with a
# note. Needs root unless --dry-run.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0; UNIT=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --unit) UNIT=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "apply-sysctl: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done
if [ "$DRY" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  echo "apply-sysctl: run as root (or with --dry-run to see what would change)" >&2
  exit 1
fi

say() { printf '%s\n' "$*"; }
changed=0

install_file() { # src dst
  if [ -f "$2" ] && cmp -s "$1" "$2"; then
    say "unchanged  $2"
  elif [ "$DRY" -eq 1 ]; then
    say "would copy $1 -> $2"; changed=1
  else
    install -D -m 0644 "$1" "$2"; say "installed  $2"; changed=1
  fi
}

install_file sysctl/99-ringway.conf /etc/sysctl.d/99-ringway.conf
install_file sysctl/ringway-limits.conf /etc/security/limits.d/ringway.conf
if [ "$UNIT" -eq 1 ]; then
  install_file sysctl/ringway.service /etc/systemd/system/ringway.service
  [ "$DRY" -eq 1 ] || systemctl daemon-reload 2>/dev/null || true
fi

# Apply each key now, only where the live value differs.
while IFS= read -r line; do
  line=${line%%#*}
  [[ "$line" =~ ^[[:space:]]*([a-z0-9_.-]+)[[:space:]]*=[[:space:]]*(.*[^[:space:]])[[:space:]]*$ ]] || continue
  key=${BASH_REMATCH[1]}; want=${BASH_REMATCH[2]}
  path=/proc/sys/${key//.//}
  if [ ! -e "$path" ]; then
    say "skipped    $key (not in this kernel; module not loaded?)"
    continue
  fi
  have=$(tr -s '[:space:]' ' ' <"$path" | sed 's/ $//')
  want_norm=$(printf '%s' "$want" | tr -s '[:space:]' ' ')
  if [ "$have" = "$want_norm" ]; then
    say "ok         $key = $have"
  elif [ "$DRY" -eq 1 ]; then
    say "would set  $key: $have -> $want_norm"; changed=1
  else
    if sysctl -q -w "$key=$want_norm" >/dev/null 2>&1; then
      say "set        $key: $have -> $want_norm"; changed=1
    else
      say "FAILED     $key = $want_norm (read-only here? a container cannot change host sysctls)"
    fi
  fi
done < sysctl/99-ringway.conf

if [ "$changed" -eq 0 ]; then say "nothing to change"; fi
say "next: ringway check --connections N"
