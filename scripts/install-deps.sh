#!/usr/bin/env bash
# Installs what pgtripwire's tests and demo need from the system: PostgreSQL server
# binaries (14 or newer) with pg_stat_statements. Idempotent; does nothing when they
# are already there. Debian/Ubuntu only (apt-get); elsewhere it says what is missing.
set -euo pipefail

have_server() {
	local d
	if [ -n "${PGTRIPWIRE_PG_BINDIR:-}" ] && [ -x "$PGTRIPWIRE_PG_BINDIR/postgres" ]; then
		return 0
	fi
	for d in /usr/lib/postgresql/*/bin; do
		[ -x "$d/postgres" ] && [ -x "$d/initdb" ] || continue
		v=$(basename "$(dirname "$d")")
		[ "${v%%.*}" -ge 14 ] 2>/dev/null || continue
		[ -f "/usr/share/postgresql/$v/extension/pg_stat_statements.control" ] && return 0
	done
	return 1
}

if have_server; then
	echo "install-deps: PostgreSQL server binaries present"
	exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "install-deps: PostgreSQL 14+ server binaries with pg_stat_statements are needed;" \
		"install them, or set PGTRIPWIRE_PG_BINDIR to their bin directory" >&2
	exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-deps: installing PostgreSQL server binaries (apt-get)"
$sudo apt-get update -qq
# postgresql-contrib provides pg_stat_statements on older releases; on newer ones it is
# part of the server package and the contrib package is a transitional one.
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql postgresql-contrib >/dev/null
have_server || { echo "install-deps: PostgreSQL installed but no usable server binaries found" >&2; exit 1; }
echo "install-deps: done"
