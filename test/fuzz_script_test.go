package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeGo stands in for the go command fuzz.sh calls: `go env GOCACHE`,
// `go list`, and `go test -c -fuzz=. -o BIN PKG`, which installs
// fakeTestBinary as BIN (or fails as a build does, for a package named in
// the file buildfail). Each build is recorded in builds.log.
const fakeGo = `#!/usr/bin/env bash
case "$1" in
env) echo "$FAKE_DIR/cache"; exit 0;;
list) echo "example.com/${2#./}"; exit 0;;
esac
pkg=${@: -1}
bin=$(printf '%s\n' "$@" | sed -n '/^-o$/{n;p}')
echo "$*" >>"$FAKE_DIR/builds.log"
if grep -qx "$pkg" "$FAKE_DIR/buildfail" 2>/dev/null; then
	echo "./x.go:1:1: syntax error"; echo "FAIL	$pkg [build failed]"; exit 1
fi
cp "$FAKE_DIR/fake.test" "$bin"
`

// fakeTestBinary stands in for a package's instrumented test binary, run
// in the package's directory: it prints what the case says for its target,
// writes a failing input when asked, and exits with the case's code. Each
// run is recorded in calls.log and args.log.
const fakeTestBinary = `#!/usr/bin/env bash
pkg=./$(basename "$PWD")
fn=$(printf '%s\n' "$@" | sed -n 's/^-test.fuzz=^\(.*\)\$$/\1/p')
echo "$pkg $fn" >>"$FAKE_DIR/calls.log"
echo "$*" >>"$FAKE_DIR/args.log"
mode=$(cat "$FAKE_DIR/mode.$fn" 2>/dev/null || echo pass)
case $mode in
pass)
	echo "fuzz: elapsed: 6s, execs: 100 (16/sec)"; echo PASS; exit 0;;
race|race-with-input)
	echo "fuzz: elapsed: 7s, execs: 11423 (0/sec), new interesting: 1 (total: 133)"
	printf -- '--- FAIL: %s (6.53s)\n    context deadline exceeded\nFAIL\n' "$fn"
	if [ "$mode" = race-with-input ]; then mkdir -p "testdata/fuzz/$fn"; echo x >"testdata/fuzz/$fn/abc"; fi
	exit 1;;
crash)
	printf -- '--- FAIL: %s (1.20s)\n    --- FAIL: %s (0.00s)\n        panic: index out of range\n\n    Failing input written to testdata/fuzz/%s/abc\nFAIL\n' "$fn" "$fn" "$fn"
	mkdir -p "testdata/fuzz/$fn"; echo x >"testdata/fuzz/$fn/abc"
	exit 1;;
race-and-more)
	printf -- '--- FAIL: %s (6.53s)\n    context deadline exceeded\n    fuzzing process hung or terminated unexpectedly: exit status 2\nFAIL\n' "$fn"
	exit 1;;
esac
`

// TestFuzzScript checks how test/fuzz.sh (make fuzz) builds each package's
// binary once, runs every target from it in the package's directory (one
// or two at once, each target's output whole and in order), and
// reads a run's outcome: only Go 1.26's fuzztime race (golang/go#75804),
// which prints a bare "context deadline exceeded" and writes no input, is
// taken as a pass.
func TestFuzzScript(t *testing.T) {
	script, err := filepath.Abs("fuzz.sh")
	if err != nil {
		t.Fatal(err)
	}
	targets := []string{"./a:FuzzA", "./a:FuzzA2", "./b:FuzzB"}
	tests := []struct {
		name      string
		modes     map[string]string // target -> fake outcome
		buildFail string            // a package whose build fails
		jobs      string            // FUZZJOBS
		wantOK    bool
		wantCalls []string
		wantOut   string
	}{
		{"all pass", nil, "", "", true, []string{"./a FuzzA", "./a FuzzA2", "./b FuzzB"}, "fuzz ./b FuzzB (6s)"},
		{"all pass, two at once", nil, "", "2", true, []string{"./a FuzzA", "./a FuzzA2", "./b FuzzB"}, "fuzz ./a FuzzA (6s)\nfuzz: elapsed: 6s, execs: 100 (16/sec)\nPASS\nfuzz ./a FuzzA2 (6s)"},
		{"deadline race without input", map[string]string{"FuzzA": "race"}, "", "", true,
			[]string{"./a FuzzA", "./a FuzzA2", "./b FuzzB"}, "golang/go#75804"},
		{"deadline race that wrote an input", map[string]string{"FuzzA": "race-with-input"}, "", "", false,
			[]string{"./a FuzzA"}, "context deadline exceeded"},
		{"crash", map[string]string{"FuzzA2": "crash"}, "", "", false, []string{"./a FuzzA", "./a FuzzA2"}, "Failing input written"},
		{"crash, two at once", map[string]string{"FuzzA": "crash"}, "", "2", false, []string{"./a FuzzA", "./a FuzzA2"}, "FAIL fuzz ./a FuzzA"},
		{"deadline and a hang", map[string]string{"FuzzB": "race-and-more"}, "", "", false,
			[]string{"./a FuzzA", "./a FuzzA2", "./b FuzzB"}, "hung or terminated"},
		{"build failure", nil, "./b", "", false, nil, "build failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range map[string]string{"go": fakeGo, "fake.test": fakeTestBinary} {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for _, pkg := range []string{"a", "b"} {
				if err := os.Mkdir(filepath.Join(dir, pkg), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for fn, mode := range tt.modes {
				if err := os.WriteFile(filepath.Join(dir, "mode."+fn), []byte(mode), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if tt.buildFail != "" {
				if err := os.WriteFile(filepath.Join(dir, "buildfail"), []byte(tt.buildFail+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			cmd := exec.Command("bash", append([]string{script}, targets...)...)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "GO="+filepath.Join(dir, "go"), "FAKE_DIR="+dir, "FUZZTIME=6s", "FUZZFLAGS=-parallel=1", "FUZZJOBS="+tt.jobs)
			out, err := cmd.CombinedOutput()
			if ok := err == nil; ok != tt.wantOK {
				t.Fatalf("fuzz.sh succeeded = %v, want %v (err %v)\n%s", ok, tt.wantOK, err, out)
			}
			if !strings.Contains(string(out), tt.wantOut) {
				t.Errorf("output lacks %q:\n%s", tt.wantOut, out)
			}
			// One build per package, with the instrumentation, before any run.
			builds := lines(t, filepath.Join(dir, "builds.log"))
			wantBuilds := []string{"test -c -fuzz=. -o " + filepath.Join(dir, "bin/fuzz/a.test") + " ./a", "test -c -fuzz=. -o " + filepath.Join(dir, "bin/fuzz/b.test") + " ./b"}
			if strings.Join(builds, "|") != strings.Join(wantBuilds, "|") {
				t.Errorf("builds: %q, want %q", builds, wantBuilds)
			}
			// Targets run at once start in any order.
			if got := lines(t, filepath.Join(dir, "calls.log")); strings.Join(sorted(got), "|") != strings.Join(tt.wantCalls, "|") {
				t.Errorf("targets run: %q, want %q", got, tt.wantCalls)
			}
			for _, line := range lines(t, filepath.Join(dir, "args.log")) {
				if !strings.HasPrefix(line, "-test.run=^$ -test.fuzz=^Fuzz") || !strings.Contains(line, " -test.fuzztime=6s -test.fuzzcachedir="+dir+"/cache/fuzz/example.com/") ||
					!strings.HasSuffix(line, " -test.parallel=1") {
					t.Errorf("test binary called as %q", line)
				}
			}
		})
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// lines returns the lines of the file at path; none if it does not exist.
func lines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}
