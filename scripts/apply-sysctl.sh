#!/usr/bin/env bash
# Install and apply ringway's kernel profile (sysctl/99-ringway.conf) and limits
# (sysctl/ringway-limits.conf); with --unit also the systemd unit. Idempotent: files
# are only copied when they differ, and sysctl values only written when they differ.
#
#   usage: scripts/apply-sysctl.sh [--dry-run] [--unit]
#
# --dry-run prints what would change and changes nothing. Keys the running kernel
# does not have (e.g. nf_conntrack when conntrack is not loaded) are skipped with a
# note. Values are compared as the kernel prints them (a port list "7400,8080,8081"
# reads back as "7400,8080-8081"), so a second run reports nothing to change. Needs
# root unless --dry-run. PROC_SYS (default /proc/sys) is where live values are read;
# tests point it at a directory of their own (with --dry-run only).
set -euo pipefail
cd "$(dirname "$0")/.."
proc_sys="${PROC_SYS:-/proc/sys}"

DRY=0; UNIT=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --unit) UNIT=1 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "apply-sysctl: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done
if [ "$DRY" -eq 0 ] && [ "$proc_sys" != /proc/sys ]; then
  echo "apply-sysctl: PROC_SYS=$proc_sys is for --dry-run tests; unset it to apply the profile" >&2
  exit 2
fi
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

# A value as the kernel prints it, so that equal values compare equal. Port lists
# (ip_local_reserved_ports) print sorted, with neighbours merged into ranges:
# "8081,7400,8080" is "7400,8080-8081". Everything else: whitespace collapsed.
normalise() { # key value
  case "$1" in
    *_ports)
      printf '%s' "$2" | tr -d '[:space:]' | tr ',' '\n' | awk -F- '
        NF == 0 || $1 == "" { next }
        { print $1, (NF > 1 ? $2 : $1) }' | sort -n -k1,1 -k2,2 | awk '
        function flush() { if (have) out = out (out == "" ? "" : ",") (lo == hi ? lo : lo "-" hi) }
        { if (have && $1 <= hi + 1) { if ($2 > hi) hi = $2; next }
          flush(); lo = $1; hi = $2; have = 1 }
        END { flush(); printf "%s", out }' ;;
    *) printf '%s' "$2" | tr -s '[:space:]' ' ' | sed 's/^ //; s/ $//' ;;
  esac
}

# Apply each key now, only where the live value differs.
while IFS= read -r line; do
  line=${line%%#*}
  [[ "$line" =~ ^[[:space:]]*([a-z0-9_.-]+)[[:space:]]*=[[:space:]]*(.*[^[:space:]])[[:space:]]*$ ]] || continue
  key=${BASH_REMATCH[1]}; want=${BASH_REMATCH[2]}
  path=$proc_sys/${key//.//}
  if [ ! -e "$path" ]; then
    say "skipped    $key (not in this kernel; module not loaded?)"
    continue
  fi
  have=$(normalise "$key" "$(cat "$path")")
  want_norm=$(normalise "$key" "$want")
  if [ "$have" = "$want_norm" ]; then
    say "ok         $key = $have"
  elif [ "$DRY" -eq 1 ]; then
    say "would set  $key: ${have:-(empty)} -> $want_norm"; changed=1
  else
    if sysctl -q -w "$key=$want_norm" >/dev/null 2>&1; then
      say "set        $key: ${have:-(empty)} -> $want_norm"; changed=1
    else
      say "FAILED     $key = $want_norm (read-only here? a container cannot change host sysctls)"
    fi
  fi
done < sysctl/99-ringway.conf

if [ "$changed" -eq 0 ]; then say "nothing to change"; fi
say "next: ringway check --connections N"
