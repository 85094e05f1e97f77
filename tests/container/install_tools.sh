#!/usr/bin/env bash
# What `make container-test` needs from Debian, installed when missing: podman with runc (the
# default crun fails on setrlimit and cgroups on this kind of machine), debootstrap (makes the
# FROM image locally), docker-compose (validates compose.yaml without an engine; its
# recommends would pull in a whole Docker engine, hence --no-install-recommends).
set -euo pipefail
need=()
for tool in podman runc debootstrap; do
  command -v "$tool" >/dev/null || need+=("$tool")
done
compose=()
command -v docker-compose >/dev/null || compose=(docker-compose)
[ ${#need[@]} -eq 0 ] && [ ${#compose[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "container-test: missing ${need[*]} ${compose[*]}; as root run:" >&2
  echo "  apt-get install -y podman runc debootstrap" \
    "&& apt-get install -y --no-install-recommends docker-compose" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
[ ${#need[@]} -eq 0 ] || apt-get install -y -qq "${need[@]}" >/dev/null
[ ${#compose[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${compose[@]}" >/dev/null
echo "container-test: installed ${need[*]} ${compose[*]}"
