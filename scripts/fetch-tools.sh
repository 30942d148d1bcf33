#!/usr/bin/env bash
# System tools some tests drive for real, unpacked from Debian packages into .tools/
# (apt-get download + dpkg -x: no service is installed or started).
#   prometheus-alertmanager  the alert tests push to a real Alertmanager
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .tools/debs
packages=(prometheus-alertmanager)
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
echo "tools in .tools/usr/bin: $(ls .tools/usr/bin | tr '\n' ' ')"
