#!/usr/bin/env bash
# PostgreSQL and Redis from Debian's packages, for the distributed (CeleryExecutor) test, and
# Chromium for the UI plugin's browser test. The tests start their own instances on 127.0.0.1 in
# temporary folders; nothing here starts a service.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v redis-server >/dev/null \
  && [[ -x /usr/bin/chromium ]]; then
  exit 0
fi
SUDO=""
[[ $(id -u) == 0 ]] || SUDO="sudo"
echo "installing postgresql, redis-server and chromium from Debian's packages ..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql redis-server chromium >/dev/null
