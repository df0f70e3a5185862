#!/usr/bin/env bash
# fuzz.sh runs each package:FuzzTarget pair for FUZZTIME. It first builds
# each package's instrumented test binary once, into $FUZZBIN, then fuzzes
# each target with it: `go test -fuzz` would link the binary again for
# every target, a few seconds each.
#
# Go 1.26's fuzz coordinator can fail a target with a bare "context deadline
# exceeded" at the -fuzztime boundary when the deadline reaches the parent
# context before its child (golang/go#75804, fixed in Go 1.27). That run
# fuzzed for its full time and found nothing: a crash or hang writes its input
# to testdata/fuzz/<target>/ and prints it. So a failure whose only message is
# that error and which wrote no new input counts as the end of the run, as in
# Go 1.27; every other failure fails.
#
# Environment: GO, FUZZTIME (default 6s), FUZZFLAGS (test flags without the
# "test." prefix, e.g. -parallel=1), FUZZBIN (default bin/fuzz).
set -uo pipefail

GO=${GO:-go}
FUZZTIME=${FUZZTIME:-6s}
FUZZBIN=$(realpath -m "${FUZZBIN:-bin/fuzz}")
read -r -a userflags <<<"${FUZZFLAGS:-}"
flags=()
for f in "${userflags[@]}"; do
	flags+=("-test.${f#-}")
done

# binary is the test binary of package pkg (./a/b -> $FUZZBIN/a_b.test).
binary() {
	local name=${1#./}
	echo "$FUZZBIN/${name//\//_}.test"
}

# inputs lists the files in a target's corpus directory, one per line.
inputs() { find "$1" -type f 2>/dev/null | sort; }

build() {
	mkdir -p "$FUZZBIN"
	local pkg seen=" "
	for t in "$@"; do
		pkg=${t%%:*}
		case "$seen" in *" $pkg "*) continue ;; esac
		seen+="$pkg "
		echo "fuzz build $pkg"
		"$GO" test -c -fuzz=. -o "$(binary "$pkg")" "$pkg" || return 1
	done
}

run() {
	local cache
	cache=$("$GO" env GOCACHE)/fuzz
	for t in "$@"; do
		local pkg=${t%%:*} fn=${t##*:}
		local bin importpath corpus before out rc
		bin=$(binary "$pkg")
		importpath=$("$GO" list "$pkg") || return 1
		corpus="$pkg/testdata/fuzz/$fn"
		echo "fuzz $pkg $fn ($FUZZTIME)"
		before=$(inputs "$corpus")
		out=$(mktemp)
		# In the package's directory, as go test runs it: the seed corpus
		# and any failing input are in testdata/fuzz there; the cache of
		# interesting inputs is go test's.
		(cd "$pkg" && "$bin" -test.run='^$' -test.fuzz="^$fn\$" -test.fuzztime="$FUZZTIME" \
			-test.fuzzcachedir="$cache/$importpath" "${flags[@]}") 2>&1 | tee "$out"
		rc=${PIPESTATUS[0]}
		if [ "$rc" -ne 0 ]; then
			local after msg
			after=$(inputs "$corpus")
			# The failure block: what follows "--- FAIL: <target>" up to
			# the line "FAIL", without blank lines.
			msg=$(sed -n "/^--- FAIL: $fn /,/^FAIL\$/p" "$out" | sed '1d;$d' | grep -v '^[[:space:]]*$' | sed 's/^[[:space:]]*//')
			if [ "$before" = "$after" ] && [ "$msg" = "context deadline exceeded" ]; then
				echo "fuzz $pkg $fn: the run ended with Go's fuzztime race (golang/go#75804), no failing input; counted as passed"
				rc=0
			fi
		fi
		rm -f "$out"
		if [ "$rc" -ne 0 ]; then
			echo "FAIL fuzz $pkg $fn"
			return "$rc"
		fi
	done
}

build "$@" && run "$@"
