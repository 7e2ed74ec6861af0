#!/usr/bin/env bash
# Runs the compatibility suite (scripts/compat-tests.txt) on each supported PostgreSQL
# major version, or on those named:
#
#   scripts/compat-test.sh            # 14 15 16 17 18
#   scripts/compat-test.sh 17 18
#
# The servers come from scripts/install-postgres.sh (the harness selects one with
# PGTRIPWIRE_PG_VERSION); nothing is downloaded here. The test binaries are built once,
# with the race detector as in the full suite (whose build cache they share), and each
# runs in its package's directory once per version, COMPAT_JOBS packages at a time
# (default 3: the tests mostly wait on the server and on poll intervals, so three share
# two cores well). Every listed test must pass or skip with its reason; one that did not run
# at all (renamed, removed) fails the run. Prints one line per version with its time.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
list="$root/scripts/compat-tests.txt"
jobs="${COMPAT_JOBS:-3}"
go="${GO:-go}"

versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(14 15 16 17 18)

# package -> space-separated test names, in list order.
declare -A tests
packages=()
while read -r pkg name rest; do
	case "$pkg" in "" | "#"*) continue ;; esac
	[ -n "$name" ] && [ -z "$rest" ] || { echo "compat-test: $list: bad line: $pkg $name $rest" >&2; exit 2; }
	[ -n "${tests[$pkg]+x}" ] || packages+=("$pkg")
	tests[$pkg]="${tests[$pkg]:-} $name"
done <"$list"

work=$(mktemp -d "${TMPDIR:-/tmp}/pgtripwire-compat.XXXXXX")
# COMPAT_KEEP=1 keeps the test binaries and every package's output there.
if [ -n "${COMPAT_KEEP:-}" ]; then
	echo "compat-test: output kept in $work"
else
	trap 'rm -rf "$work"' EXIT
fi

started=$(date +%s)
# One binary per package, named after its whole path.
for pkg in "${packages[@]}"; do
	bin="$work/bin/$(echo "${pkg#./}" | tr / _).test"
	echo "$pkg $bin"
done >"$work/binaries"
mkdir -p "$work/bin"
# One go test -c per package: -o with a directory would name two packages' binaries
# alike (detector/canary and detector/source/canary are both canary.test).
while read -r pkg bin; do
	echo "$go test -race -c -o '$bin' '$pkg'"
done <"$work/binaries" | xargs -P "$jobs" -I{} sh -c '{}' || { echo "compat-test: build failed" >&2; exit 1; }
echo "compat-test: built $(wc -l <"$work/binaries") test binaries in $(($(date +%s) - started))s"

# run_package VERSION PKG BIN: runs PKG's listed tests on VERSION, log in $work/VERSION/.
run_package() {
	local v=$1 pkg=$2 bin=$3 names regex log t0 status=ok
	t0=$(date +%s)
	names="${tests[$pkg]}"
	regex="^($(echo $names | tr ' ' '|'))\$"
	log="$work/$v/$(echo "${pkg#./}" | tr / _).log"
	(cd "$root/$pkg" && PGTRIPWIRE_PG_VERSION=$v "$bin" -test.run "$regex" -test.count=1 -test.v -test.timeout 10m) >"$log" 2>&1 || status=fail
	echo "$status" >"$log.status"
	echo "$(($(date +%s) - t0))s ${pkg#./}" >"$log.time"
}
export -f run_package
export work root

failed=()
for v in "${versions[@]}"; do
	mkdir -p "$work/$v"
	t0=$(date +%s)
	while read -r pkg bin; do
		printf '%s\0%s\0%s\0' "$v" "$pkg" "$bin"
	done <"$work/binaries" | TESTS_DECL="$(declare -p tests)" xargs -0 -n 3 -P "$jobs" bash -c 'eval "$TESTS_DECL"; run_package "$@"' _
	elapsed=$(($(date +%s) - t0))

	passed=0 skipped=() problems=()
	while read -r pkg bin; do
		log="$work/$v/$(echo "${pkg#./}" | tr / _).log"
		for name in ${tests[$pkg]}; do
			if grep -q -- "^--- PASS: $name (" "$log"; then
				passed=$((passed + 1))
			elif grep -q -- "^--- SKIP: $name (" "$log"; then
				# -v prints the reason before the verdict, and the test's cleanups may log
				# after it: the last line of a test file (not the harness's logger) before it.
				reason=$(grep -B30 -- "^--- SKIP: $name (" "$log" | grep -E '^ +[A-Za-z0-9_]+\.go:[0-9]+: ' |
					grep -v '^ *logger\.go:' | tail -1 | sed 's/^ *//')
				skipped+=("$pkg $name: $reason")
			elif grep -q -- "^--- FAIL: $name (" "$log"; then
				problems+=("$pkg $name: FAIL")
			else
				problems+=("$pkg $name: did not run (renamed or removed? see $list)")
			fi
		done
		if [ "$(cat "$log.status")" != ok ] && [ ${#problems[@]} -eq 0 ]; then
			problems+=("$pkg: test binary failed")
		fi
	done <"$work/binaries"

	echo "compat-test: PostgreSQL $v: ${passed} passed, ${#skipped[@]} skipped, ${#problems[@]} failed in ${elapsed}s"
	echo "    slowest: $(cat "$work/$v"/*.time | sort -rn | head -n 4 | paste -sd, - | sed 's/,/, /g')"
	for s in "${skipped[@]}"; do echo "    skipped: $s"; done
	if [ ${#problems[@]} -gt 0 ]; then
		failed+=("$v")
		for p in "${problems[@]}"; do echo "    $p"; done
		# The failing packages' output, for the CI log.
		while read -r pkg bin; do
			log="$work/$v/$(echo "${pkg#./}" | tr / _).log"
			if [ "$(cat "$log.status")" != ok ]; then
				echo "---- PostgreSQL $v, $pkg:"
				cat "$log"
			fi
		done <"$work/binaries"
	fi
done

echo "compat-test: ${#versions[@]} version(s) in $(($(date +%s) - started))s"
if [ ${#failed[@]} -gt 0 ]; then
	echo "compat-test: failed on PostgreSQL ${failed[*]}" >&2
	exit 1
fi
