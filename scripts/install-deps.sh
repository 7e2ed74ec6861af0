#!/usr/bin/env bash
# Installs what pgtripwire's tests and demo need from the system, when missing:
# - PostgreSQL server binaries (14 or newer) with pg_stat_statements, and for the
#   compatibility suite a build of every supported major version (14 to 18,
#   scripts/install-postgres.sh: into .postgresql/ of the project);
# - Prometheus' promtool (package prometheus) and Alertmanager with amtool (package
#   prometheus-alertmanager), which the delivery and alerting-rule tests run for real;
# - sqlmap (package sqlmap), which the SQL-injection end-to-end test drives against a
#   test application (`make test` sets PGTRIPWIRE_REQUIRE_SQLMAP, so it must be there).
# With --demo, only what `make demo` needs: the PostgreSQL server binaries, of the
# version $PGTRIPWIRE_PG_VERSION names when it is set (make demo PG=17).
# Idempotent; does nothing when everything is there. Debian/Ubuntu only (apt-get);
# elsewhere it says what is missing.
set -euo pipefail

demo_only=false
case "${1:-}" in
--demo) demo_only=true ;;
"") ;;
*) echo "usage: $0 [--demo]" >&2; exit 2 ;;
esac

have_server() {
	local d v
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

have_alertmanager() {
	[ -n "${PGTRIPWIRE_ALERTMANAGER:-}" ] && return 0
	command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1
}

packages=()
have_server || packages+=(postgresql postgresql-contrib)
if ! $demo_only; then
	command -v promtool >/dev/null 2>&1 || packages+=(prometheus)
	{ have_alertmanager && command -v amtool >/dev/null 2>&1; } || packages+=(prometheus-alertmanager)
	command -v sqlmap >/dev/null 2>&1 || packages+=(sqlmap)
fi

# install_versions installs the project's own server builds: every supported version
# for the tests, the one asked for for the demo. It does nothing for those present.
install_versions() {
	if $demo_only; then
		[ -z "${PGTRIPWIRE_PG_VERSION:-}" ] || "$(dirname "$0")/install-postgres.sh" "$PGTRIPWIRE_PG_VERSION"
	else
		"$(dirname "$0")/install-postgres.sh"
	fi
}

if [ ${#packages[@]} -eq 0 ]; then
	install_versions
	exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "install-deps: missing ${packages[*]}: install PostgreSQL 14+ server binaries with" \
		"pg_stat_statements (or set PGTRIPWIRE_PG_BINDIR), Prometheus' promtool, Alertmanager" \
		"and amtool (or set PGTRIPWIRE_ALERTMANAGER), sqlmap" >&2
	exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-deps: installing ${packages[*]} (apt-get)"
$sudo apt-get update -qq
# Tests start their own servers on free ports; the packages' own services (which apt may
# start on machines with an init system) are not used.
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
have_server || { echo "install-deps: PostgreSQL installed but no usable server binaries found" >&2; exit 1; }
install_versions
$demo_only && { echo "install-deps: done"; exit 0; }
command -v promtool >/dev/null 2>&1 || { echo "install-deps: promtool still missing" >&2; exit 1; }
have_alertmanager || { echo "install-deps: Alertmanager still missing" >&2; exit 1; }
command -v sqlmap >/dev/null 2>&1 || { echo "install-deps: sqlmap still missing" >&2; exit 1; }
echo "install-deps: done"
