package helper

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/signetid/signet/internal/logtest"
)

func TestPIDSignalerWaitsForPIDFile(t *testing.T) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGUSR1)
	defer signal.Stop(sigs)

	pidFile := filepath.Join(t.TempDir(), "run", "app.pid") // dir too appears later
	p := &PIDSignaler{PIDFile: pidFile, Signal: syscall.SIGUSR1}
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() { done <- p.Reload(ctx, Event{}) }()

	select {
	case <-sigs:
		t.Fatal("signalled before the pid file existed")
	case err := <-done:
		t.Fatalf("Reload returned before the pid file existed: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := os.MkdirAll(filepath.Dir(pidFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	select {
	case <-sigs:
	case <-ctx.Done():
		t.Fatal("no SIGUSR1 received")
	}
}

func TestPIDSignalerGivesUpWithContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := (&PIDSignaler{PIDFile: filepath.Join(t.TempDir(), "none.pid"), Signal: syscall.SIGUSR1}).Reload(ctx, Event{})
	if err == nil || !strings.Contains(err.Error(), "pid file") {
		t.Fatalf("err = %v", err)
	}
}

func TestCommandRunner(t *testing.T) {
	out := filepath.Join(t.TempDir(), "ran")
	c := &CommandRunner{Args: []string{"sh", "-c", `echo "$1" >> "$2"`, "sh", "reloaded", out}}
	for range 2 {
		if err := c.Reload(context.Background(), Event{}); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(out)
	if string(b) != "reloaded\nreloaded\n" {
		t.Errorf("command output = %q", b)
	}
	err := (&CommandRunner{Args: []string{"sh", "-c", "echo boom; exit 3"}}).Reload(context.Background(), Event{})
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("failing command: err = %v", err)
	}
}

func TestProcessExitStatusAndSignals(t *testing.T) {
	dir := t.TempDir()
	hups := filepath.Join(dir, "hups")
	// The child counts SIGHUPs and exits 7 on SIGTERM.
	script := `trap 'echo hup >> "$1"' HUP; trap 'exit 7' TERM; echo started > "$1.ready"; while :; do sleep 0.05; done`
	p := &Process{Args: []string{"sh", "-c", script, "sh", hups}, Signal: syscall.SIGHUP, Stdout: os.Stdout, Stderr: os.Stderr}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, err := os.Stat(hups + ".ready"); return err == nil })
	if err := p.Reload(context.Background(), Event{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { b, _ := os.ReadFile(hups); return string(b) == "hup\n" })
	if err := p.SendSignal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("child did not exit on SIGTERM")
	}
	if p.ExitCode() != 7 {
		t.Errorf("exit code = %d, want 7", p.ExitCode())
	}
	// spiffe-helper's cmd semantics: a reload after exit starts it again.
	q := &Process{Args: []string{"sh", "-c", "exit 3"}}
	for range 2 {
		if err := q.Reload(context.Background(), Event{}); err != nil {
			t.Fatal(err)
		}
		<-q.Done()
		if q.ExitCode() != 3 {
			t.Errorf("exit code = %d, want 3", q.ExitCode())
		}
	}
}

type countReloader struct{ n atomic.Int32 }

func (c *countReloader) Reload(context.Context, Event) error { c.n.Add(1); return nil }

func TestReloadQueueDebounces(t *testing.T) {
	q := newReloadQueue()
	r := &countReloader{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go q.run(ctx, r, 200*time.Millisecond, slog.New(slog.DiscardHandler))
	for i := range 5 {
		q.push(Event{Serial: strconv.Itoa(i)})
	}
	waitFor(t, func() bool { return r.n.Load() >= 1 })
	time.Sleep(400 * time.Millisecond)
	if n := r.n.Load(); n != 1 {
		t.Errorf("%d reloads for one burst, want 1", n)
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A reload that races the helper's shutdown must not start spiffe-helper's
// cmd: it would outlive the helper.
func TestProcessReloadAfterCancelStartsNothing(t *testing.T) {
	p := &Process{Args: []string{"sh", "-c", "exit 0"}}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Reload(ctx, Event{}); err == nil {
		t.Error("Reload after cancel reported success")
	}
	if p.Done() != nil {
		t.Fatal("Reload after cancel started the process")
	}
}

// blockingReloader waits for ctx, like a PIDSignaler whose pid file never
// appears.
type blockingReloader struct{ calls atomic.Int32 }

func (b *blockingReloader) Reload(ctx context.Context, _ Event) error {
	b.calls.Add(1)
	<-ctx.Done()
	return ctx.Err()
}

type failingReloader struct{ calls atomic.Int32 }

func (f *failingReloader) Reload(context.Context, Event) error {
	f.calls.Add(1)
	return errors.New("reload boom")
}

// Each reloader runs on its own: one that waits does not hold the others
// back, and one that fails does not skip them and is logged.
func TestReloadersRunIndependently(t *testing.T) {
	blocking, failing, counting := &blockingReloader{}, &failingReloader{}, &countReloader{}
	var logs logtest.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	reloads := startReloaders(ctx, []Reloader{blocking, failing, counting}, time.Millisecond, logs.Logger())
	for i := range 3 {
		reloads.push(Event{Serial: strconv.Itoa(i)})
		waitUntil(t, "reload "+strconv.Itoa(i+1)+" of the counting reloader", func() bool { return counting.n.Load() == int32(i+1) })
	}
	waitUntil(t, "the failure in the log", func() bool { return strings.Contains(logs.String(), "reload boom") })
	if n := blocking.calls.Load(); n != 1 {
		t.Errorf("blocking reloader called %d times, want 1 (still waiting)", n)
	}
	cancel()
	reloads.wait() // the waiting reloader gives up with ctx
}

// The supervised child is only ever signalled: a reload that comes after it
// exited (racing its exit) starts nothing, where spiffe-helper's cmd would be
// started again.
func TestChildSignalerNeverRestarts(t *testing.T) {
	p := &Process{Args: []string{"true"}, Signal: syscall.SIGHUP}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	exited := p.Done()
	<-exited
	if err := (childSignaler{p}).Reload(t.Context(), Event{}); err != nil {
		t.Fatalf("reload after exit: %v", err)
	}
	if p.Done() != exited {
		t.Fatal("the child was started again by a reload")
	}
	// The same reload through cmd's semantics does start it: the check
	// above can tell.
	if err := p.Reload(t.Context(), Event{}); err != nil {
		t.Fatal(err)
	}
	if p.Done() == exited {
		t.Fatal("Process.Reload did not start the exited cmd")
	}
	<-p.Done()
}

// A reload command that fails once (the app busy) is retried for the same
// set until it succeeds, and each failure is logged.
func TestFailedReloadIsRetried(t *testing.T) {
	dir := t.TempDir()
	flag, ok := filepath.Join(dir, "failed-once"), filepath.Join(dir, "reloaded")
	cmd := &CommandRunner{Args: []string{"sh", "-c", `if [ -e "$1" ]; then echo "$3" >> "$2"; else touch "$1"; echo busy; exit 1; fi`, "sh", flag, ok, "ok"}}
	var logs logtest.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	reloads := startReloaders(ctx, []Reloader{cmd}, time.Millisecond, logs.Logger())
	defer reloads.wait()
	defer cancel()
	reloads.push(Event{Serial: "1"})
	waitUntil(t, "the retried reload", func() bool { b, _ := os.ReadFile(ok); return string(b) == "ok\n" })
	if !strings.Contains(logs.String(), "busy") {
		t.Errorf("the failure is not in the log:\n%s", logs.String())
	}
}

// serialReloader fails for one serial and records the others.
type serialReloader struct {
	fail  string
	calls chan string
}

func (s *serialReloader) Reload(_ context.Context, ev Event) error {
	s.calls <- ev.Serial
	if ev.Serial == s.fail {
		return errors.New("reload boom")
	}
	return nil
}

// A newer set supersedes a failing one: it is reloaded, and the failing one
// is not tried again.
func TestNewerEventSupersedesFailingReload(t *testing.T) {
	r := &serialReloader{fail: "1", calls: make(chan string, 100)}
	ctx, cancel := context.WithCancel(context.Background())
	reloads := startReloaders(ctx, []Reloader{r}, time.Millisecond, slog.New(slog.DiscardHandler))
	defer reloads.wait()
	defer cancel()
	reloads.push(Event{Serial: "1"})
	if got := <-r.calls; got != "1" {
		t.Fatalf("first reload for serial %s", got)
	}
	reloads.push(Event{Serial: "2"})
	timeout := time.After(30 * time.Second)
	for got := ""; got != "2"; {
		select {
		case got = <-r.calls:
		case <-timeout:
			t.Fatal("the newer set was not reloaded within 30s")
		}
	}
	time.Sleep(2 * time.Second) // several retry intervals
	if len(r.calls) != 0 {
		t.Errorf("%d more reloads after the newer set succeeded (%q...)", len(r.calls), <-r.calls)
	}
}
