#!/usr/bin/env bash
# Make the Dockerfile's FROM image locally, for CI machines that reach no image registry:
# a Debian rootfs from debootstrap, slimmed the way the official `-slim` images are, imported
# into podman's own store under the public image's name. Skipped when that tag exists, so it
# is built at most once per machine (podman's store persists between CI runs).
#
# Machine-specific settings go into this local stand-in only, never into the shipped
# Dockerfile: the machine's local CA certificates (HTTPS here goes through an inspecting proxy),
# put where the Dockerfile's own `apt-get install ca-certificates` picks them up, and the
# package indexes pip and npm use here, if not the public ones.
#
# Usage: stand_in_base.sh IMAGE   (e.g. debian:bookworm-slim); needs root, debootstrap, podman.
set -euo pipefail

image=${1:?usage: $0 IMAGE (e.g. debian:bookworm-slim)}
case $image in
  */*) ref=$image ;;
  *) ref=docker.io/library/$image ;;
esac
if podman image exists "$ref"; then
  echo "stand-in base: $ref already in podman's store"
  exit 0
fi
case $image in
  debian:bookworm*) suite=bookworm ;;
  *) echo "stand-in base: only debian:bookworm images can be made locally, not $image" >&2
     exit 1 ;;
esac

# The Debian mirror apt already uses on this machine (deb822 .sources or one-line lists),
# read at run time so that no mirror is ever named in the repository.
mirror_from_apt() {
  local file
  for file in /etc/apt/sources.list.d/*.sources; do
    [ -f "$file" ] || continue
    awk -v suite="$suite" '
      function found() { return uris && suites ~ "(^| )" suite "( |$)" }
      /^[[:space:]]*$/ { if (found()) { print uris; uris = ""; exit } uris = ""; suites = "" }
      /^URIs:/ { uris = $2 }
      /^Suites:/ { $1 = ""; suites = $0 " " }
      END { if (found()) print uris }' "$file"
  done
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$file" ] || continue
    # `deb [options] URI suite ...`: the URI follows the option block when there is one.
    awk -v suite="$suite" '$1 == "deb" {
      i = 2
      if ($2 ~ /^\[/) while (i <= NF && $i !~ /\]$/) i++
      if ($2 ~ /^\[/) i++
      if ($(i + 1) == suite) print $i
    }' "$file"
  done
}
mirror=$(mirror_from_apt | head -n 1)
if [ -z "$mirror" ]; then
  echo "stand-in base: no apt source for Debian $suite in /etc/apt; cannot debootstrap" >&2
  exit 1
fi

root=$(mktemp -d /var/tmp/fleet-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "stand-in base: debootstrap $suite from the machine's apt mirror into $root"
debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$root.log" 2>&1 \
  || { tail -n 30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"

# What the official -slim images leave out (debuerreotype-slimify), so sizes compare.
cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
# And the apt settings they ship: no package archives or caches left behind in layers.
clean='rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb'
clean+=' /var/cache/apt/*.bin || true'
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<CFG
DPkg::Post-Invoke { "$clean"; };
APT::Update::Post-Invoke { "$clean"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
echo 'Apt::AutoRemove::SuggestsImportant "false";' \
  >"$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
find "$root/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root"/usr/share/{man,groff,info,lintian,linda}/* "$root"/var/cache/apt/*.bin \
  "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +

# Local trust, for this machine's builds only (see above). Debian's pip and npm both verify
# against the system bundle, which the Dockerfile's ca-certificates builds from these.
shopt -s nullglob
certs=(/usr/local/share/ca-certificates/*.crt)
if [ ${#certs[@]} -gt 0 ]; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp "${certs[@]}" "$root/usr/local/share/ca-certificates/"
fi
# The package indexes the host's pip and npm use, when they are not the public defaults the
# Dockerfile relies on (file:// indexes do not exist inside a build).
pip_index=${PIP_INDEX_URL:-$(pip3 config get global.index-url 2>/dev/null || true)}
case $pip_index in
  "" | file:*) ;;
  *) printf '[global]\nindex-url = %s\n' "$pip_index" >"$root/etc/pip.conf" ;;
esac
npm_registry=$(npm config get registry 2>/dev/null || true)
case $npm_registry in
  "" | https://registry.npmjs.org/) ;;
  *) echo "registry=$npm_registry" >"$root/etc/npmrc" ;;
esac

tar -C "$root" -c . | podman import --quiet - "$ref" >/dev/null
echo "stand-in base: imported $ref ($(du -sh "$root" | cut -f1) rootfs) in ${SECONDS} s"
