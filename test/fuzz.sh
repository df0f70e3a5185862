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
# "test." prefix, e.g. -parallel=1), FUZZJOBS (targets fuzzed at once,
# default 1), FUZZBIN (default bin/fuzz).
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

# fuzz_one fuzzes target t (pkg:FuzzX) with its package's binary, cache
# being go test's fuzz cache.
fuzz_one() {
	local cache=$1 t=$2
	local pkg=${t%%:*} fn=${t##*:}
	local bin importpath corpus before out rc
	bin=$(binary "$pkg")
	importpath=$("$GO" list "$pkg") || return 1
	corpus="$pkg/testdata/fuzz/$fn"
	echo "fuzz $pkg $fn ($FUZZTIME)"
	before=$(inputs "$corpus")
	out=$(mktemp)
	# In the package's directory, as go test runs it: the seed corpus and
	# any failing input are in testdata/fuzz there; the cache of
	# interesting inputs is go test's.
	(cd "$pkg" && "$bin" -test.run='^$' -test.fuzz="^$fn\$" -test.fuzztime="$FUZZTIME" \
		-test.fuzzcachedir="$cache/$importpath" "${flags[@]}") 2>&1 | tee "$out"
	rc=${PIPESTATUS[0]}
	if [ "$rc" -ne 0 ]; then
		local after msg
		after=$(inputs "$corpus")
		# The failure block: what follows "--- FAIL: <target>" up to the
		# line "FAIL", without blank lines.
		msg=$(sed -n "/^--- FAIL: $fn /,/^FAIL\$/p" "$out" | sed '1d;$d' | grep -v '^[[:space:]]*$' | sed 's/^[[:space:]]*//')
		if [ "$before" = "$after" ] && [ "$msg" = "context deadline exceeded" ]; then
			echo "fuzz $pkg $fn: the run ended with Go's fuzztime race (golang/go#75804), no failing input; counted as passed"
			rc=0
		fi
	fi
	rm -f "$out"
	if [ "$rc" -ne 0 ]; then
		echo "FAIL fuzz $pkg $fn"
	fi
	return "$rc"
}

# run fuzzes the targets, FUZZJOBS at a time (default 1), printing each
# one's output when it ends, in order; after a failure it starts no more.
run() {
	local cache logs failed=0 i=0
	cache=$("$GO" env GOCACHE)/fuzz
	logs=$(mktemp -d)
	local -a pids=() outs=()
	for t in "$@"; do
		[ "$failed" -eq 0 ] || break
		fuzz_one "$cache" "$t" >"$logs/$i" 2>&1 &
		pids+=("$!")
		outs+=("$logs/$i")
		i=$((i + 1))
		while [ "${#pids[@]}" -ge "${FUZZJOBS:-1}" ]; do
			wait "${pids[0]}" || failed=1
			cat "${outs[0]}"
			pids=("${pids[@]:1}")
			outs=("${outs[@]:1}")
		done
	done
	for j in "${!pids[@]}"; do
		wait "${pids[$j]}" || failed=1
		cat "${outs[$j]}"
	done
	rm -rf "$logs"
	return "$failed"
}

build "$@" && run "$@"
