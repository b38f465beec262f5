#!/bin/sh
# The pod runner's stand-in for the official MySQL and MariaDB images' entrypoint (docker-library's
# docker-entrypoint.sh), as documented for users of those images:
#   - an empty data folder is initialised; one that holds a database is never touched again;
#   - the root password comes from MYSQL_ROOT_PASSWORD (MariaDB: MARIADB_ROOT_PASSWORD, or the MYSQL_ name), and
#     root may log in from MYSQL_ROOT_HOST / MARIADB_ROOT_HOST (default '%');
#   - MYSQL_DATABASE, MYSQL_USER and MYSQL_PASSWORD (MariaDB: the MARIADB_ names too) create a database and a user;
#   - /docker-entrypoint-initdb.d/*.sh (run when executable, sourced otherwise) and *.sql run once, against a
#     temporary server that listens on its socket only, without writing the binary log;
#   - then the server is exec'd: it is the container's PID 1 and gets the kubelet's SIGTERM.
# Runs as whatever user the pod says (the images support any uid). Usage: db-entrypoint.sh mysql|mariadb [args]
set -eu

flavour=$1
shift
case "$flavour" in
  mysql)
    server=mysqld client=mysql admin=mysqladmin
    root_password=${MYSQL_ROOT_PASSWORD:-}
    allow_empty=${MYSQL_ALLOW_EMPTY_PASSWORD:-}
    root_host=${MYSQL_ROOT_HOST:-%}
    database=${MYSQL_DATABASE:-} user=${MYSQL_USER:-} password=${MYSQL_PASSWORD:-}
    ;;
  mariadb)
    server=mariadbd client=mariadb admin=mariadb-admin
    root_password=${MARIADB_ROOT_PASSWORD:-${MYSQL_ROOT_PASSWORD:-}}
    allow_empty=${MARIADB_ALLOW_EMPTY_ROOT_PASSWORD:-${MYSQL_ALLOW_EMPTY_PASSWORD:-}}
    root_host=${MARIADB_ROOT_HOST:-${MYSQL_ROOT_HOST:-%}}
    database=${MARIADB_DATABASE:-${MYSQL_DATABASE:-}}
    user=${MARIADB_USER:-${MYSQL_USER:-}} password=${MARIADB_PASSWORD:-${MYSQL_PASSWORD:-}}
    ;;
  *) echo "db-entrypoint: unknown flavour $flavour" >&2; exit 2 ;;
esac
# The image's CMD is the server's name; a pod may also give only options.
[ "${1:-}" = "$server" ] && shift

cnf=/etc/mysql/my.cnf
datadir=/var/lib/mysql
socket=/var/run/mysqld/mysqld.sock

escape() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/''/g"; }

if [ ! -d "$datadir/mysql" ]; then
  if [ -z "$root_password" ] && [ -z "$allow_empty" ]; then
    echo "error: database is uninitialized and password option is not specified" >&2
    echo "  You need to specify one of the root password options (see the image's documentation)" >&2
    exit 1
  fi
  echo "db-entrypoint: initializing database files"
  case "$flavour" in
    mysql) "$server" --defaults-file="$cnf" --initialize-insecure ;;
    mariadb) mariadb-install-db --defaults-file="$cnf" --skip-test-db --auth-root-authentication-method=normal >/dev/null ;;
  esac
  echo "db-entrypoint: starting a temporary server"
  "$server" --defaults-file="$cnf" --skip-networking --socket="$socket" &
  temporary=$!
  tries=0
  until "$admin" --no-defaults --socket="$socket" -uroot ping >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -gt 300 ] || ! kill -0 "$temporary" 2>/dev/null; then
      echo "error: the temporary server did not start" >&2
      exit 1
    fi
    sleep 0.2
  done
  root_sql=$(escape "$root_password")
  {
    echo "SET @@SESSION.SQL_LOG_BIN=0;"
    # mariadb-install-db also makes root@127.0.0.1, root@::1 and root@<hostname> without a password; the image
    # removes them (they would win over root@'%' for local TCP clients).
    if [ "$flavour" = mariadb ]; then
      echo "DROP USER IF EXISTS root@'127.0.0.1', root@'::1';"
      echo "EXECUTE IMMEDIATE CONCAT('DROP USER IF EXISTS root@\'', @@hostname, '\'');"
    fi
    echo "ALTER USER 'root'@'localhost' IDENTIFIED BY '$root_sql';"
    if [ "$root_host" != localhost ]; then
      echo "CREATE USER 'root'@'$root_host' IDENTIFIED BY '$root_sql';"
      echo "GRANT ALL ON *.* TO 'root'@'$root_host' WITH GRANT OPTION;"
    fi
    if [ -n "$database" ]; then echo "CREATE DATABASE IF NOT EXISTS \`$database\`;"; fi
    if [ -n "$user" ] && [ -n "$password" ]; then
      echo "CREATE USER '$user'@'%' IDENTIFIED BY '$(escape "$password")';"
      if [ -n "$database" ]; then echo "GRANT ALL ON \`$database\`.* TO '$user'@'%';"; fi
    fi
  } | "$client" --no-defaults --protocol=socket --socket="$socket" -uroot
  # From here on root has its password: scripts and .sql files use it, as in the images.
  secret_cnf=$(mktemp)
  chmod 600 "$secret_cnf"
  printf '[client]\nuser=root\npassword="%s"\nsocket=%s\n' "$root_password" "$socket" >"$secret_cnf"
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh)
        echo "db-entrypoint: running $f"
        if [ -x "$f" ]; then "$f"; else . "$f"; fi
        ;;
      *.sql)
        echo "db-entrypoint: running $f"
        "$client" --defaults-extra-file="$secret_cnf" --protocol=socket ${database:+"$database"} <"$f"
        ;;
      *) [ -e "$f" ] && echo "db-entrypoint: ignoring $f" ;;
    esac
  done
  "$admin" --defaults-extra-file="$secret_cnf" --protocol=socket shutdown
  rm -f "$secret_cnf"
  wait "$temporary" || true
  echo "db-entrypoint: initialization finished"
fi
exec "$server" --defaults-file="$cnf" "$@"
