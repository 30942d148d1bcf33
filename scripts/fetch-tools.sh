#!/usr/bin/env bash
# System tools some tests drive for real, unpacked from Debian packages into .tools/
# (apt-get download + dpkg -x: no service is installed or started).
#   prometheus-alertmanager  the alert tests push to a real Alertmanager
#   prometheus               promtool: the deploy tests check and unit-test rules and dashboards
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive  # an install must never stop at a prompt
mkdir -p .tools/debs
packages=(prometheus-alertmanager prometheus)
for package in "${packages[@]}"; do
  if ! ls .tools/debs/"${package}"_*.deb >/dev/null 2>&1; then
    (cd .tools/debs && apt-get download "$package")
  fi
  dpkg -x .tools/debs/"${package}"_*.deb .tools
done
# Debian's Alertmanager loads its default template from this absolute path.
template=/usr/share/prometheus/alertmanager/default.tmpl
if [ ! -f "$template" ]; then
  if [ -w /usr/share ]; then
    mkdir -p "$(dirname "$template")"
    cp .tools/usr/share/prometheus/alertmanager/*.tmpl "$(dirname "$template")/"
  else
    echo "note: $template is missing and /usr/share is not writable;" \
         "the Alertmanager test will be skipped (run as root, or install the package)" >&2
  fi
fi
# The page tests drive a real headless Chromium. It is installed, not unpacked: it needs
# dozens of shared libraries (nss, gtk, mesa, fonts ...) that only apt resolves, and
# Playwright cannot download a browser build of its own here.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" -eq 0 ]; then
    # A fresh machine may have no package lists yet.
    apt-get install -y --no-install-recommends chromium \
      || { apt-get update -qq && apt-get install -y --no-install-recommends chromium; }
  else
    echo "note: /usr/bin/chromium is missing; the page tests will be skipped" \
         "(run as root, or apt-get install chromium)" >&2
  fi
fi
# systemd-analyze checks the systemd unit (verify, security). Installed, not unpacked: it
# loads libsystemd-shared from an absolute RUNPATH under /usr/lib. Nothing is started.
if ! command -v systemd-analyze >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get install -y --no-install-recommends systemd \
      || { apt-get update -qq && apt-get install -y --no-install-recommends systemd; }
  else
    echo "note: systemd-analyze is missing; the systemd unit tests will be skipped" \
         "(run as root, or apt-get install systemd)" >&2
  fi
fi
echo "tools in .tools/usr/bin: $(ls .tools/usr/bin | tr '\n' ' ')"
