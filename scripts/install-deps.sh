#!/usr/bin/env bash
# Installs what dcroll's tests and demo need on a fresh Debian machine:
# the real ZooKeeper server (Debian's zookeeper package, Java 17 is assumed)
# aria2 (a standard BitTorrent client for the interop test) and promtool
# (from Debian's prometheus package: the daemons' /metrics are checked with
# `promtool check metrics`), Chromium (dashboard tests) and opentracker (a
# stock BitTorrent tracker, for the benchmark's aria2c mode).
# Idempotent: it installs only what is missing.
set -euo pipefail
need=()
[ -e /usr/share/java/zookeeper.jar ] || ls /usr/share/java/zookeeper-*.jar >/dev/null 2>&1 || need+=(zookeeper)
command -v aria2c >/dev/null 2>&1 || need+=(aria2)
command -v java >/dev/null 2>&1 || need+=(default-jre-headless)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# systemd-analyze verifies the unit files in deploy/systemd.
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# The dashboard is tested in headless Chromium (coordinator/dashboard_test).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# opentracker anchors the distribution benchmark (bench/distrib -modes aria2c)
# and the stock-swarm interop test.
command -v opentracker >/dev/null 2>&1 || need+=(opentracker)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
