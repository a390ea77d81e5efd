#!/usr/bin/env bash
# Installs what building and testing the Debian package needs on Debian 12 (idempotent):
# debhelper, dpkg-dev, lintian, mandoc, debootstrap and systemd-nspawn. Not part of
# scripts/setup.sh: the plain `swift test` needs none of this.
set -euo pipefail
exec "$(dirname "$0")/../scripts/setup.sh" debhelper dpkg-dev fakeroot lintian mandoc man-db debootstrap systemd-container
