#!/usr/bin/env bash
# System tools some tests drive for real. Safe to run again: what is in place is kept.
#   prometheus-alertmanager  the alert tests push to a real Alertmanager; amtool checks configs
#   prometheus               promtool: the deploy tests check and unit-test rules and dashboards
#   chromium                 the page tests drive a real headless browser
#   systemd-analyze          checks and scores the systemd unit
# The first two are unpacked from Debian's packages into .tools/ (apt-get download +
# dpkg -x: nothing is installed or started); the last two are installed with apt-get,
# which needs root.
#
# Usage: scripts/fetch-tools.sh [--best-effort]
#   --best-effort  (what `make test` uses) a tool that cannot be had is reported, with
#                  the reason, and the script goes on and exits 0: the tests that need
#                  it skip, naming it (under CI=true they fail).
#   without it     (`make tools`) any tool missing at the end is an error (exit 1).
# Once every tool is in place it writes .tools/.fetched-stamp, so `make test` does not
# run it again until this script changes.
set -uo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive  # an install must never stop at a prompt

best_effort=false
if [ "${1:-}" = --best-effort ]; then best_effort=true; fi
stamp=.tools/.fetched-stamp
missing=()
note() { echo "fetch-tools: $*" >&2; }
is_root() { [ "$(id -u)" -eq 0 ]; }
# A download must not hang a test run on a machine without network: fail fast instead.
apt_options=(-o Acquire::Retries=1 -o Acquire::http::Timeout=20 -o Acquire::https::Timeout=20)
lists_updated=false
apt_update_once() {
  # A fresh machine may have no package lists yet; updating needs root.
  if ! $lists_updated && is_root; then
    lists_updated=true
    apt-get "${apt_options[@]}" update -qq
  fi
}

rm -f "$stamp"
mkdir -p .tools/debs

if ! command -v apt-get >/dev/null || ! command -v dpkg >/dev/null; then
  note "apt-get and dpkg are missing (not a Debian-based machine): no tool can be fetched"
  missing+=(prometheus-alertmanager amtool promtool chromium systemd-analyze)
else
  # package: the binaries it must leave in .tools/usr/bin
  for entry in "prometheus-alertmanager:prometheus-alertmanager amtool" "prometheus:promtool"; do
    package=${entry%%:*}
    binaries=${entry#*:}
    present=true
    for binary in $binaries; do [ -x ".tools/usr/bin/$binary" ] || present=false; done
    if $present; then continue; fi
    if ! ls .tools/debs/"${package}"_*.deb >/dev/null 2>&1; then
      (cd .tools/debs && apt-get "${apt_options[@]}" download "$package" 2>/dev/null) \
        || { apt_update_once && (cd .tools/debs && apt-get "${apt_options[@]}" download "$package"); } \
        || note "cannot download Debian's $package (offline, or no package lists: apt-get update)"
    fi
    if ls .tools/debs/"${package}"_*.deb >/dev/null 2>&1; then
      dpkg -x .tools/debs/"${package}"_*.deb .tools || note "cannot unpack $package"
    fi
    for binary in $binaries; do [ -x ".tools/usr/bin/$binary" ] || missing+=("$binary"); done
  done

  # Debian's Alertmanager loads its default template from this absolute path.
  template=/usr/share/prometheus/alertmanager/default.tmpl
  if [ ! -f "$template" ] && ls .tools/usr/share/prometheus/alertmanager/*.tmpl >/dev/null 2>&1; then
    if [ -w /usr/share ]; then
      mkdir -p "$(dirname "$template")"
      cp .tools/usr/share/prometheus/alertmanager/*.tmpl "$(dirname "$template")/"
    fi
  fi
  if [ ! -f "$template" ]; then
    note "$template is missing and /usr/share is not writable: the Alertmanager test" \
         "will be skipped (run as root, or install prometheus-alertmanager)"
    missing+=(alertmanager-template)
  fi

  # Installed, not unpacked. Chromium needs dozens of shared libraries (nss, gtk, mesa,
  # fonts ...) that only apt resolves, and Playwright cannot download a browser build of
  # its own here. systemd-analyze loads libsystemd-shared from an absolute RUNPATH under
  # /usr/lib. Nothing is started.
  for entry in "chromium:/usr/bin/chromium" "systemd:systemd-analyze"; do
    package=${entry%%:*}
    tool=${entry#*:}
    if command -v "$tool" >/dev/null; then continue; fi
    if is_root; then
      apt-get "${apt_options[@]}" install -y -qq --no-install-recommends "$package" >/dev/null \
        || { apt_update_once \
             && apt-get "${apt_options[@]}" install -y -qq --no-install-recommends "$package" >/dev/null; } \
        || note "cannot install $package with apt-get (offline?)"
    else
      note "$tool is missing and installing $package needs root (sudo apt-get install $package)"
    fi
    command -v "$tool" >/dev/null || missing+=("$(basename "$tool")")
  done
fi

if [ ${#missing[@]} -eq 0 ]; then
  touch "$stamp"
  echo "fetch-tools: all in place (.tools/usr/bin: $(ls .tools/usr/bin | tr '\n' ' '))"
  exit 0
fi
note "missing: ${missing[*]}; the tests that need them skip, naming the tool (under CI=true they fail)"
if $best_effort; then exit 0; fi
exit 1
