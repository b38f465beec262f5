#!/usr/bin/env bash
# Installs Oracle MySQL (the server and client of Debian's unstable suite, MySQL 9.x) into one folder, without
# touching the system's packages: Debian 12 ships no MySQL server, and the unstable suite's packages are built
# against a newer glibc, so every program runs through the folder's own loader. The tests find it through
# APPDB_MYSQL_ROOT (default /opt/appdb-mysql); `bin/mysqld`, `bin/mysql` and the like are wrappers.
#
# The downloaded .debs are cached in $APPDB_MYSQL_CACHE (default ~/.cache/appdb-mysql) between runs.
# Usage: scripts/install-mysql.sh [--force]
set -euo pipefail

root=${APPDB_MYSQL_ROOT:-/opt/appdb-mysql}
cache=${APPDB_MYSQL_CACHE:-$HOME/.cache/appdb-mysql}

if [ "${1:-}" != --force ] && [ -x "$root/bin/mysqld" ] && "$root/bin/mysqld" --version >/dev/null 2>&1; then
  exit 0
fi

mkdir -p "$cache/empty" "$cache/debs" "$cache/lists/partial" "$cache/archives/partial"
: >"$cache/status"
cat >"$cache/sources.list" <<'EOF'
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian unstable main
EOF

# A private apt: its own lists, cache and an empty dpkg status, so that it resolves the whole closure and never
# looks at (or changes) what the system has installed.
apt_private=(
  -o "Dir::Etc::SourceList=$cache/sources.list"
  -o "Dir::Etc::SourceParts=$cache/empty"
  -o "Dir::Etc::Preferences=/dev/null"
  -o "Dir::Etc::PreferencesParts=$cache/empty"
  -o "APT::Sandbox::User=root"
  -o "Dir::State::Lists=$cache/lists"
  -o "Dir::State::Status=$cache/status"
  -o "Dir::Cache=$cache"
  -o "Dir::Cache::Archives=$cache/archives"
  -o "APT::Architecture=amd64"
  -o "APT::Architectures=amd64"
  -o "Debug::NoLocking=1"
)

packages=(mysql-server-core mysql-client-core)
if ! ls "$cache"/debs/mysql-server-core_*.deb >/dev/null 2>&1; then
  echo "install-mysql: fetching MySQL from Debian's unstable suite into $cache" >&2
  apt-get "${apt_private[@]}" -qq update
  # The closure minus what a server started by hand never loads (perl and its databases, locale data).
  # Lines read 'URL' FILE SIZE HASH; the package name is FILE up to its first underscore.
  mapfile -t names < <(apt-get "${apt_private[@]}" -qq install --print-uris -y "${packages[@]}" |
    awk '/^'"'"'/ { split($2, f, "_"); print f[1] }' |
    grep -Ev '^(perl|perl-base|perl-modules-.*|libperl.*|libdb5.*|libgdbm.*|gconv-extra)$')
  ((${#names[@]})) || { echo "install-mysql: apt found no packages to download" >&2; exit 1; }
  (cd "$cache/debs" && apt-get "${apt_private[@]}" -qq download "${names[@]}")
fi

tmp=$(mktemp -d "${root%/*}/.appdb-mysql.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
for deb in "$cache"/debs/*.deb; do
  dpkg-deb -x "$deb" "$tmp"
done
mkdir -p "$tmp/bin"
loader=$(ls "$tmp"/usr/lib64/ld-linux-x86-64.so.2 "$tmp"/lib64/ld-linux-x86-64.so.2 2>/dev/null | head -n1 || true)
[ -n "$loader" ] || { echo "install-mysql: no loader in the extracted packages" >&2; exit 1; }
loader=${loader#"$tmp"}
libs="$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu"
# The wrappers never read option files (/etc/mysql/my.cnf may be MariaDB's, with options MySQL refuses): they pass
# --no-defaults first, where MySQL requires it, unless the caller names its own option file.
cat >"$tmp/bin/mysqld" <<EOF
#!/bin/sh
# A caller's own option file (the operator's appdb.cnf) is kept, and must come first.
case "\$1" in
  --defaults-file=*|--defaults-extra-file=*|--no-defaults) first=\$1; shift ;;
  *) first=--no-defaults ;;
esac
exec "$root$loader" --library-path "$libs" "$root/usr/sbin/mysqld" "\$first" --basedir="$root/usr" \\
  --lc-messages-dir="$root/usr/share/mysql" --character-sets-dir="$root/usr/share/mysql/charsets" \\
  --plugin-dir="$root/usr/lib/mysql/plugin" "\$@"
EOF
for tool in mysql mysqldump mysqladmin; do
  cat >"$tmp/bin/$tool" <<EOF
#!/bin/sh
# A caller's own option file (the first-start script's credentials) is kept, and must come first.
case "\$1" in
  --defaults-file=*|--defaults-extra-file=*|--no-defaults) first=\$1; shift ;;
  *) first=--no-defaults ;;
esac
exec "$root$loader" --library-path "$libs" "$root/usr/bin/$tool" "\$first" --character-sets-dir="$root/usr/share/mysql/charsets" "\$@"
EOF
done
chmod +x "$tmp"/bin/*
rm -rf "$root"
mv "$tmp" "$root"
trap - EXIT
"$root/bin/mysqld" --version
