#!/usr/bin/env bash
# Install headless Chromium and its WebDriver from the OS packages, for the tests that open pages
# in a real browser. Never fails the set-up: where it cannot install, those tests skip and say why.
set -u
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: Chromium not installed (needs root and apt-get); the browser tests will skip"
  exit 0
fi
echo "setup: installing Chromium and chromium-driver for the browser tests"
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; }; then
  echo "setup: could not install Chromium; the browser tests will skip"
fi
exit 0
