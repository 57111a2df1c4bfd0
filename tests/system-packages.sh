#!/usr/bin/env bash
# The Debian packages the test suite drives, installed before any test starts (`make test`, hence `.ci/run`).
# As root: apt-get. With sudo: asks once. Otherwise: stops at once with the one command to run.
# `make demo` needs none of them (it falls back and says so).
set -euo pipefail

# package | why the tests need it | how to tell it is there
PACKAGES=(
  "chromium|the widget's browser tests (Playwright drives the system Chromium, never downloads one)|command -v chromium || test -x /usr/bin/chromium"
  "prometheus|promtool checks the alert rules; a real Prometheus scrapes the test stack|command -v promtool && command -v prometheus"
  "festival|Russian speech: the local festival voice speaks Russian replies and makes the Russian test recordings|command -v text2wave"
  "festvox-ru|the Russian voice of festival (msu_ru_nsh_clunits)|test -d /usr/share/festival/voices/russian/msu_ru_nsh_clunits"
  "curl|the deployment guide's shell blocks are run as written, and they use curl|command -v curl"
)

missing=()
for entry in "${PACKAGES[@]}"; do
  IFS='|' read -r package _why probe <<<"$entry"
  bash -c "$probe" >/dev/null 2>&1 || missing+=("$package")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

install=(apt-get install -y -qq "${missing[@]}")
if [ "$(id -u)" = 0 ]; then
  runner=()
elif command -v sudo >/dev/null 2>&1 && [ -t 0 ]; then
  echo "==> the tests need Debian packages: ${missing[*]} (sudo asks for your password once)"
  sudo -v
  runner=(sudo)
else
  echo "error: the tests need Debian packages ${missing[*]}; install them first: sudo apt-get update && sudo ${install[*]}" >&2
  exit 1
fi
echo "==> apt-get install ${missing[*]}"
DEBIAN_FRONTEND=noninteractive "${runner[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${runner[@]}" "${install[@]}" >/dev/null
