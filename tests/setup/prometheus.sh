#!/usr/bin/env bash
# Installs Prometheus and Alertmanager (Debian packages) for the alert integration tests
# (idempotent). The tests start both themselves on loopback; the packaged services are not used.
set -euo pipefail
if command -v prometheus >/dev/null && command -v prometheus-alertmanager >/dev/null; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Debian starts the services on install where it can; the tests do not use them.
$SUDO apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null
