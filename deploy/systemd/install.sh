#!/bin/sh
# Installs pmon as systemd services: the binary, /etc/pmon/pmon.toml (kept if present),
# /etc/default/pmon (kept if present) and the units, then enables pmon.target.
#
#   sudo deploy/systemd/install.sh [path/to/pmon]     # default: target/release/pmon
#
# DESTDIR=/some/root installs below that directory and touches no running system (packaging,
# tests). docs/deploy.md explains each step.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
binary="${1:-$repo/target/release/pmon}"
root="${DESTDIR:-}"

if [ ! -x "$binary" ]; then
  echo "install.sh: $binary not found: build it first (cargo build --release --locked -p pmon)" >&2
  exit 1
fi
install -D -m 0755 "$binary" "$root/usr/local/bin/pmon"
install -d -m 0755 "$root/etc/pmon"
[ -e "$root/etc/pmon/pmon.toml" ] || install -m 0644 "$repo/deploy/pmon.toml" "$root/etc/pmon/pmon.toml"
[ -e "$root/etc/default/pmon" ] || install -D -m 0644 "$here/pmon.default" "$root/etc/default/pmon"
for unit in pmon.target pmon-broker.service pmon-acquire.service pmon-historian.service pmon-web.service; do
  install -D -m 0644 "$here/$unit" "$root/etc/systemd/system/$unit"
done

if [ -n "$root" ]; then
  echo "installed below $root; not enabling anything"
  exit 0
fi
if ! getent group i2c >/dev/null; then
  echo "install.sh: creating the i2c group and its udev rule (Raspberry Pi OS has both)"
  groupadd --system i2c
  echo 'SUBSYSTEM=="i2c-dev", GROUP="i2c", MODE="0660"' > /etc/udev/rules.d/99-i2c.rules
  udevadm control --reload-rules && udevadm trigger --subsystem-match=i2c-dev || true
fi
systemctl daemon-reload
systemctl enable pmon.target pmon-broker.service pmon-acquire.service pmon-historian.service
echo "Edit /etc/pmon/pmon.toml (your I2C buses), check with 'pmon doctor --config /etc/pmon/pmon.toml',"
echo "then start everything: sudo systemctl start pmon.target"
