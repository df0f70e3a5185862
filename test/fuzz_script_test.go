package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeGo stands in for `go test -fuzz`: it prints what the case says, writes
// a failing input when asked, and exits with the case's code. Each call is
// recorded in calls.log.
const fakeGo = `#!/usr/bin/env bash
pkg=${@: -1}
fn=$(printf '%s\n' "$@" | sed -n 's/^-fuzz=^\(.*\)\$$/\1/p')
echo "$pkg $fn" >>"$FAKE_DIR/calls.log"
echo "$*" >>"$FAKE_DIR/args.log"
mode=$(cat "$FAKE_DIR/mode.$fn" 2>/dev/null || echo pass)
case $mode in
pass)
	echo "fuzz: elapsed: 6s, execs: 100 (16/sec)"; echo PASS; echo "ok  	$pkg	6.0s"; exit 0;;
race|race-with-input)
	echo "fuzz: elapsed: 7s, execs: 11423 (0/sec), new interesting: 1 (total: 133)"
	printf -- '--- FAIL: %s (6.53s)\n    context deadline exceeded\nFAIL\nexit status 1\nFAIL	%s	6.561s\n' "$fn" "$pkg"
	if [ "$mode" = race-with-input ]; then mkdir -p "$pkg/testdata/fuzz/$fn"; echo x >"$pkg/testdata/fuzz/$fn/abc"; fi
	exit 1;;
crash)
	printf -- '--- FAIL: %s (1.20s)\n    --- FAIL: %s (0.00s)\n        panic: index out of range\n\n    Failing input written to testdata/fuzz/%s/abc\nFAIL\n' "$fn" "$fn" "$fn"
	mkdir -p "$pkg/testdata/fuzz/$fn"; echo x >"$pkg/testdata/fuzz/$fn/abc"
	exit 1;;
race-and-more)
	printf -- '--- FAIL: %s (6.53s)\n    context deadline exceeded\n    fuzzing process hung or terminated unexpectedly: exit status 2\nFAIL\n' "$fn"
	exit 1;;
build)
	echo "./x.go:1:1: syntax error"; echo "FAIL	$pkg [build failed]"; exit 1;;
esac
`

// TestFuzzScript checks how test/fuzz.sh (make fuzz) reads a fuzz run's
// outcome: only Go 1.26's fuzztime race (golang/go#75804), which prints a bare
// "context deadline exceeded" and writes no input, is taken as a pass.
func TestFuzzScript(t *testing.T) {
	script, err := filepath.Abs("fuzz.sh")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		modes     map[string]string // target -> fake outcome
		wantOK    bool
		wantCalls []string
		wantOut   string
	}{
		{"all pass", nil, true, []string{"./a FuzzA", "./b FuzzB"}, "ok  \t./b"},
		{"deadline race without input", map[string]string{"FuzzA": "race"}, true,
			[]string{"./a FuzzA", "./b FuzzB"}, "golang/go#75804"},
		{"deadline race that wrote an input", map[string]string{"FuzzA": "race-with-input"}, false,
			[]string{"./a FuzzA"}, "context deadline exceeded"},
		{"crash", map[string]string{"FuzzA": "crash"}, false, []string{"./a FuzzA"}, "Failing input written"},
		{"deadline and a hang", map[string]string{"FuzzB": "race-and-more"}, false,
			[]string{"./a FuzzA", "./b FuzzB"}, "hung or terminated"},
		{"build failure", map[string]string{"FuzzA": "build"}, false, []string{"./a FuzzA"}, "build failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			goBin := filepath.Join(dir, "go")
			if err := os.WriteFile(goBin, []byte(fakeGo), 0o755); err != nil {
				t.Fatal(err)
			}
			for fn, mode := range tt.modes {
				if err := os.WriteFile(filepath.Join(dir, "mode."+fn), []byte(mode), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			cmd := exec.Command("bash", script, "./a:FuzzA", "./b:FuzzB")
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "GO="+goBin, "FAKE_DIR="+dir, "FUZZTIME=6s", "FUZZFLAGS=-parallel=1")
			out, err := cmd.CombinedOutput()
			if ok := err == nil; ok != tt.wantOK {
				t.Fatalf("fuzz.sh succeeded = %v, want %v (err %v)\n%s", ok, tt.wantOK, err, out)
			}
			if !strings.Contains(string(out), tt.wantOut) {
				t.Errorf("output lacks %q:\n%s", tt.wantOut, out)
			}
			calls, err := os.ReadFile(filepath.Join(dir, "calls.log"))
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Split(strings.TrimSpace(string(calls)), "\n"); strings.Join(got, "|") != strings.Join(tt.wantCalls, "|") {
				t.Errorf("targets run: %q, want %q", got, tt.wantCalls)
			}
			args, err := os.ReadFile(filepath.Join(dir, "args.log"))
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(strings.TrimSpace(string(args)), "\n") {
				if !strings.HasPrefix(line, "test -run=^$ -fuzz=^Fuzz") || !strings.Contains(line, " -fuzztime=6s -parallel=1 ./") {
					t.Errorf("go called as %q", line)
				}
			}
		})
	}
}
