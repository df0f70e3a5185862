package helper

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/fsnotify/fsnotify"
)

// Event describes the file set just written.
type Event struct {
	SPIFFEID string
	Serial   string
	NotAfter time.Time
	JWTOnly  bool // only JWT-SVIDs or JWT bundles changed
	// first marks the first set written, which the supervised child,
	// started after it, reads without being told.
	first bool
}

// Reloader tells an application that a new file set is in place.
type Reloader interface {
	Reload(ctx context.Context, ev Event) error
}

// PIDSignaler sends Signal to the PID in PIDFile, read afresh on every
// reload; while the file is absent (or names no live process) it waits for
// it to change, watching its directory.
type PIDSignaler struct {
	PIDFile string
	Signal  syscall.Signal
}

// Reload blocks until the signal is sent or ctx ends.
func (p *PIDSignaler) Reload(ctx context.Context, _ Event) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch pid file: %w", err)
	}
	defer w.Close()
	watching := false
	var lastErr error
	for {
		if !watching {
			// The directory may not exist yet either; polling covers that.
			watching = w.Add(filepath.Dir(p.PIDFile)) == nil
		}
		pid, err := readPID(p.PIDFile)
		if err == nil {
			err = syscall.Kill(pid, p.Signal)
			if err == nil {
				return nil
			}
			err = fmt.Errorf("signal pid %d from %s: %w", pid, p.PIDFile, err)
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up: %v)", lastErr, ctx.Err())
		case <-w.Events:
		case <-w.Errors:
		case <-time.After(time.Second):
		}
	}
}

func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read pid file: %w", err)
	}
	// The PID is the first line (postmaster.pid holds more after it).
	first, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s holds no pid", path)
	}
	return pid, nil
}

// CommandRunner runs a command after every rotation (nginx -s reload,
// pg_ctl reload) and fails the reload if it exits non-zero.
type CommandRunner struct {
	Args []string
	Env  []string // added to the helper's environment

	reaper *reaper // set when the helper is PID 1
}

// Reload runs the command to completion.
func (c *CommandRunner) Reload(ctx context.Context, _ Event) error {
	if len(c.Args) == 0 {
		return errors.New("empty reload command")
	}
	cmd := exec.CommandContext(ctx, c.Args[0], c.Args[1:]...)
	cmd.Env = append(os.Environ(), c.Env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// A command that leaves a background process holding its output pipe
	// (sleep 30 &) must not hold the reload, and shutdown, hostage.
	cmd.WaitDelay = 5 * time.Second
	wait, err := startCmd(cmd, c.reaper)
	if err == nil {
		_, err = wait()
	}
	if err != nil {
		return fmt.Errorf("reload command %s: %w: %s", c.Args[0], err, strings.TrimSpace(lastBytes(out.String(), 512)))
	}
	return nil
}

func lastBytes(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// Process is a child process the helper starts: spiffe-helper's cmd, or the
// supervised `signet helper -- cmd args`. As spiffe-helper's cmd, Reload
// starts it when it is not running and sends it Signal (if any) when it is;
// the supervised child is only ever signalled (see [Run]).
type Process struct {
	Args   []string
	Signal syscall.Signal // 0: do not signal a running process
	Stdout *os.File
	Stderr *os.File

	reaper *reaper // set when the helper is PID 1

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	code int
}

// Start starts the process if it is not running.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.startLocked()
}

func (p *Process) startLocked() error {
	if p.cmd != nil && !closed(p.done) {
		return nil
	}
	if len(p.Args) == 0 {
		return errors.New("empty command")
	}
	cmd := exec.Command(p.Args[0], p.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, p.Stdout, p.Stderr
	wait, err := startCmd(cmd, p.reaper)
	if err != nil {
		return fmt.Errorf("start %s: %w", p.Args[0], err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() {
		code, _ := wait()
		p.mu.Lock()
		p.code = code
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// Reload starts the process if needed, else signals it. Once ctx has ended
// (the helper is stopping) it starts nothing.
func (p *Process) Reload(ctx context.Context, _ Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || closed(p.done) {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("not starting %s: %w", p.Args[0], err)
		}
		return p.startLocked()
	}
	if p.Signal == 0 {
		return nil
	}
	if err := p.cmd.Process.Signal(p.Signal); err != nil {
		return fmt.Errorf("signal %s: %w", p.Args[0], err)
	}
	return nil
}

// SendSignal sends sig to the process if it is running.
func (p *Process) SendSignal(sig os.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || closed(p.done) {
		return nil
	}
	return p.cmd.Process.Signal(sig)
}

// Done is closed when the process started last has exited; nil before Start.
func (p *Process) Done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// ExitCode is the exit status of the last run (128+n when killed by signal n).
func (p *Process) ExitCode() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.code
}

// childSignaler reloads the supervised child by signalling it. Unlike
// spiffe-helper's cmd, the child is never started again: its exit ends the
// helper, and a reload racing that exit must not leave an orphan behind.
type childSignaler struct{ p *Process }

func (c childSignaler) Reload(_ context.Context, ev Event) error {
	if c.p.Signal == 0 || ev.first {
		return nil
	}
	if err := c.p.SendSignal(c.p.Signal); err != nil {
		return fmt.Errorf("signal %s: %w", c.p.Args[0], err)
	}
	return nil
}

// startCmd starts cmd and returns a function that waits for it and returns
// its exit status (128+n when killed by signal n) and, when it did not exit
// 0, an error saying how it ended.
func startCmd(cmd *exec.Cmd, rp *reaper) (func() (int, error), error) {
	if rp == nil {
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		return func() (int, error) {
			err := cmd.Wait()
			return exitStatus(cmd.ProcessState, err), err
		}, nil
	}
	status, err := rp.start(cmd)
	if err != nil {
		return nil, err
	}
	return func() (int, error) {
		ws := <-status
		// The reaper has collected the process, so Wait fails (ECHILD);
		// it is still what closes the pipes and ends the output copying.
		_ = cmd.Wait()
		code := waitStatusCode(ws)
		switch {
		case ws.Signaled():
			return code, fmt.Errorf("signal: %v", ws.Signal())
		case code != 0:
			return code, fmt.Errorf("exit status %d", code)
		}
		return 0, nil
	}, nil
}

func exitStatus(ps *os.ProcessState, err error) int {
	if ps == nil {
		if err != nil {
			return 1
		}
		return 0
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

func closed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// reloadQueue debounces reload requests: a burst of writes (X.509 rotation
// and JWT renewal together) produces one reload, for the latest set.
type reloadQueue struct {
	mu     sync.Mutex
	latest Event
	ch     chan struct{}
}

func newReloadQueue() *reloadQueue { return &reloadQueue{ch: make(chan struct{}, 1)} }

func (q *reloadQueue) push(ev Event) {
	q.mu.Lock()
	q.latest = ev
	q.mu.Unlock()
	select {
	case q.ch <- struct{}{}:
	default:
	}
}

// run calls r.Reload for the latest event, at most once per delay, until ctx
// ends. A failed reload is retried with backoff until it succeeds or a newer
// event supersedes it: dropping it would leave the app serving the previous
// certificate, perhaps until it expires.
func (q *reloadQueue) run(ctx context.Context, r Reloader, delay time.Duration, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-q.ch:
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		// select picks at random when both are ready: no reload once the
		// helper is stopping.
		if ctx.Err() != nil {
			return
		}
		select { // requests that arrived while we waited are covered
		case <-q.ch:
		default:
		}
		q.mu.Lock()
		ev := q.latest
		q.mu.Unlock()
		q.reload(ctx, r, ev, log)
	}
}

// reload calls r.Reload for ev until it succeeds, ctx ends, or a newer event
// arrives (left signalled for run, which debounces it).
func (q *reloadQueue) reload(ctx context.Context, r Reloader, ev Event, log *slog.Logger) {
	bo := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(500*time.Millisecond),
		backoff.WithMaxInterval(30*time.Second),
		backoff.WithMaxElapsedTime(0),
	)
	for {
		err := r.Reload(ctx, ev)
		if err == nil {
			log.Info("reloaded application", "via", reloaderName(r), "spiffe_id", ev.SPIFFEID, "serial", ev.Serial, "not_after", ev.NotAfter.UTC().Format(time.RFC3339))
			return
		}
		if ctx.Err() != nil {
			return
		}
		wait := bo.NextBackOff()
		log.Error("reload failed", "via", reloaderName(r), "serial", ev.Serial, "not_after", ev.NotAfter, "retry_in", wait.Round(time.Millisecond), "error", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-q.ch:
			t.Stop()
			select { // put the signal back for run (unless push just did)
			case q.ch <- struct{}{}:
			default:
			}
			return
		case <-t.C:
		}
	}
}

// reloadFanOut runs each reloader on its own queue, so one that waits (a pid
// file not written yet) or fails neither delays nor skips the others.
type reloadFanOut struct {
	queues []*reloadQueue
	wg     sync.WaitGroup
}

// startReloaders runs rs until ctx ends; wait returns once they have.
func startReloaders(ctx context.Context, rs []Reloader, delay time.Duration, log *slog.Logger) *reloadFanOut {
	f := &reloadFanOut{}
	for _, r := range rs {
		q := newReloadQueue()
		f.queues = append(f.queues, q)
		f.wg.Go(func() { q.run(ctx, r, delay, log) })
	}
	return f
}

func (f *reloadFanOut) push(ev Event) {
	for _, q := range f.queues {
		q.push(ev)
	}
}

func (f *reloadFanOut) wait() { f.wg.Wait() }

func reloaderName(r Reloader) string {
	switch r := r.(type) {
	case *PIDSignaler:
		return "pid file " + r.PIDFile
	case *Process:
		return "cmd " + r.Args[0]
	case *CommandRunner:
		return "reload command " + r.Args[0]
	case childSignaler:
		return "child " + r.p.Args[0]
	}
	return fmt.Sprintf("%T", r)
}
