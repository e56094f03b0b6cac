#!/usr/bin/env bash
# Create a MariaDB/MySQL database and a password user for teamgram, and print the
# database URL to put in the configuration.
#
# A fresh Debian/Ubuntu MariaDB lets root in only through the Unix socket
# (unix_socket authentication), so the server, which connects over TCP, needs a user
# of its own. Run this as root (or with sudo) on the database machine:
#
#   sudo tools/create_mysql_user.sh                      # user and database "teamgram"
#   sudo tools/create_mysql_user.sh --user tg --database tg_prod --from 10.0.0.%
#
# Options:
#   --user NAME        database user to create (default: teamgram)
#   --database NAME    database to create (default: teamgram)
#   --password PASS    its password (default: 24 random characters); letters, digits
#                      and . _ ~ - only, so it needs no quoting in SQL or in a URL
#   --from HOST        also let the user in from HOST (a MySQL host pattern, e.g. % or
#                      10.0.0.%) when teamgram runs on another machine; always allowed:
#                      localhost and 127.0.0.1
#   --host HOST        host to print in the URL (default: 127.0.0.1)
#   --port PORT        port to print in the URL and to test with (default: 3306)
#
# Environment: MYSQL, the client command that reaches the server as an administrator
# (default: "mariadb" if installed, else "mysql"; e.g. MYSQL="mysql -uroot -p").
#
# Running it again for the same user sets a new password (printed again); the
# database and its data are kept. The database is created with the utf8mb4 charset
# and the utf8mb4_bin collation, which teamgram expects (docs/database.md).
set -euo pipefail

user=teamgram
database=teamgram
password=""
from_hosts=()
url_host=127.0.0.1
port=3306

die() {
    echo "create_mysql_user: $*" >&2
    exit 1
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --user) user=${2:?--user needs a value}; shift 2 ;;
        --database) database=${2:?--database needs a value}; shift 2 ;;
        --password) password=${2:?--password needs a value}; shift 2 ;;
        --from) from_hosts+=("${2:?--from needs a value}"); shift 2 ;;
        --host) url_host=${2:?--host needs a value}; shift 2 ;;
        --port) port=${2:?--port needs a value}; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

[[ $user =~ ^[A-Za-z0-9_]{1,32}$ ]] || die "--user: letters, digits and _ only (at most 32)"
[[ $database =~ ^[A-Za-z0-9_]{1,64}$ ]] || die "--database: letters, digits and _ only"
[[ $port =~ ^[0-9]+$ ]] || die "--port: a number"
for h in "${from_hosts[@]}"; do
    [[ $h =~ ^[A-Za-z0-9._%:-]+$ ]] || die "--from: not a host pattern: $h"
done
if [[ -z $password ]]; then
    password=$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 24) || true
    [[ ${#password} -eq 24 ]] || die "could not generate a password"
fi
[[ $password =~ ^[A-Za-z0-9._~-]{8,}$ ]] ||
    die "--password: at least 8 of letters, digits and . _ ~ -"

if [[ -z ${MYSQL:-} ]]; then
    if command -v mariadb >/dev/null 2>&1; then
        MYSQL=mariadb
    elif command -v mysql >/dev/null 2>&1; then
        MYSQL=mysql
    else
        die "no mariadb or mysql client found (apt-get install mariadb-client)"
    fi
fi
read -r -a admin <<<"$MYSQL"

hosts=(localhost 127.0.0.1 "${from_hosts[@]}")
sql="CREATE DATABASE IF NOT EXISTS \`$database\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;"
for h in "${hosts[@]}"; do
    account="'$user'@'$h'"
    sql+="
CREATE USER IF NOT EXISTS $account IDENTIFIED BY '$password';
ALTER USER $account IDENTIFIED BY '$password';
GRANT ALL PRIVILEGES ON \`$database\`.* TO $account;"
done

# The SQL (with the password) goes through standard input, not the command line.
if ! "${admin[@]}" --batch <<<"$sql"; then
    die "the statements failed; is this root (sudo), or does MYSQL=\"$MYSQL\" reach the server as an administrator?"
fi

# Check what teamgram will do: log in over TCP with the password.
if ! MYSQL_PWD=$password "${admin[0]}" --protocol=TCP -h 127.0.0.1 -P "$port" -u "$user" \
    --batch -e "SELECT 1" "$database" >/dev/null; then
    echo "create_mysql_user: warning: the user was created, but logging in over TCP" \
        "at 127.0.0.1:$port failed (is the server listening there?)" >&2
fi

url="mysql+asyncmy://$user:$password@$url_host:$port/$database"
cat <<EOF
Created database '$database' and user '$user' (from: ${hosts[*]}).

Database URL (keep it secret, it holds the password):

    $url

Put it in the configuration file:

    database:
      url: "$url"

or in the environment:

    TEAMGRAM_DATABASE_URL='$url'
EOF
