package helper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"golang.org/x/sys/unix"
)

// ChildExitError is returned by [Run] when the supervised child exited; the
// helper exits with the child's status.
type ChildExitError struct{ Code int }

func (e *ChildExitError) Error() string { return fmt.Sprintf("child exited with status %d", e.Code) }

// SignalError is returned by [Run] when SIGTERM or SIGINT stopped it before
// it had done its job: in init mode before the identity was written, or
// before the supervised child started. signet exits 128+n for signal n.
type SignalError struct {
	Signal syscall.Signal
	Reason string // what had not happened, e.g. "while waiting for ..."
}

func (e *SignalError) Error() string { return unix.SignalName(e.Signal) + " " + e.Reason }

// ExitCode is 128+n, a shell's status for signal n.
func (e *SignalError) ExitCode() int { return 128 + int(e.Signal) }

// Option configures [Run].
type Option func(*runOptions)

type runOptions struct {
	log     *slog.Logger
	onWrite func(Event)
	stdout  *os.File
	stderr  *os.File
	env     func(string) string
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *runOptions) { o.log = l } }

// WithOnWrite is called after every file set is published (tests, metrics).
func WithOnWrite(f func(Event)) Option { return func(o *runOptions) { o.onWrite = f } }

// WithEnv replaces os.Getenv for SPIFFE_ENDPOINT_SOCKET lookups.
func WithEnv(env func(string) string) Option { return func(o *runOptions) { o.env = env } }

// Run runs the helper until ctx ends (daemon), the identity is written (init
// mode), or the supervised child exits (then a *ChildExitError).
//
// In init mode, and with a supervised child, Run watches SIGTERM and SIGINT
// itself to tell a signal from a timeout or an exit (see [SignalError]); a
// supervisor also forwards every signal meant for the child to it.
func Run(ctx context.Context, cfg Config, opts ...Option) error {
	o := runOptions{log: slog.Default(), stdout: os.Stdout, stderr: os.Stderr, env: os.Getenv}
	for _, opt := range opts {
		opt(&o)
	}
	if err := cfg.Validate(o.env); err != nil {
		return err
	}
	addr, err := addrURL(cfg.AgentAddress)
	if err != nil {
		return err
	}
	r := &runner{cfg: cfg, addr: addr, o: o, log: o.log, writer: NewWriter(cfg.CertDir, cfg.UID, cfg.GID), health: NewHealth(cfg.LiveThreshold)}
	if !cfg.DaemonMode {
		return r.once(ctx)
	}
	return r.daemon(ctx)
}

type runner struct {
	cfg    Config
	addr   string
	o      runOptions
	log    *slog.Logger
	writer *Writer
	health *Health

	mu         sync.Mutex
	x509       *workloadapi.X509Context
	jwts       map[string]*jwtsvid.SVID
	jwtBundles *jwtbundle.Set
	// writtenJWTs are the JWT-SVIDs of the last set written: a renewal
	// that brings the same tokens is not written (nor reloaded) again.
	writtenJWTs map[string]*jwtsvid.SVID
	// x509Dirty: X.509 material changed since the last published set, so
	// the next set must reload the app even if JWT material completes it.
	x509Dirty bool
	// published: a set has been written; the first always reloads (it is
	// what starts cmd), even in a JWT-only configuration.
	published bool
}

// once is init mode: wait for the socket and an identity, write, exit.
func (r *runner) once(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	// SIGTERM or SIGINT ends the wait: report the signal, not a timeout.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, stopSignals...)
	defer signal.Stop(sigs)
	ctx, unwatch := cancelOnSignal(ctx, sigs)
	defer unwatch()
	stopped := func(waitingFor string, timeout error) error {
		return stopReason(ctx, unwatch(), sigs, "while waiting for "+waitingFor, timeout)
	}

	sock, _ := SocketPath(r.cfg.AgentAddress)
	// Debug: a failed init container's output is its one-line reason.
	r.log.Debug("waiting for the Workload API socket", "socket", sock, "timeout", r.cfg.Timeout.String())
	if err := waitForFile(ctx, sock); err != nil {
		if ctx.Err() == nil {
			return err
		}
		return stopped("the Workload API socket "+sock+" to appear", fmt.Errorf("timed out after %s waiting for the Workload API socket %s to appear", r.cfg.Timeout, sock))
	}
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(r.addr))
	if err != nil {
		return fmt.Errorf("workload API client: %w", err)
	}
	defer client.Close()
	var lastErr error
	what := "an X509-SVID"
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 2*time.Second) {
		// PermissionDenied (no entry yet) and Unavailable (agent starting)
		// are retried alike: both may clear while we wait.
		lastErr = r.fetchAll(ctx, client, &what)
		if lastErr == nil {
			break
		}
		r.log.Debug("waiting for identity", "what", what, "error", lastErr)
		select {
		case <-ctx.Done():
			return stopped(what+" from "+r.addr, fmt.Errorf("timed out after %s waiting for %s from %s (last error: %s)", r.cfg.Timeout, what, r.addr, oneLine(lastErr)))
		case <-time.After(delay):
		}
	}
	ev, err := r.write(false)
	if err != nil {
		return err
	}
	r.log.Info("identity written; exiting (init mode)", "spiffe_id", ev.SPIFFEID, "serial", ev.Serial, "not_after", ev.NotAfter.UTC().Format(time.RFC3339), "dir", r.cfg.CertDir)
	return nil
}

// stopSignals stop the helper; signet's main cancels ctx on them too.
var stopSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT}

// forwardSignals are passed on to the supervised child, as tini does: the
// catchable signals an app may act on. Not SIGCHLD (about the helper's own
// children), SIGURG (the Go runtime's), SIGPIPE or the fault signals.
var forwardSignals = []os.Signal{
	syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGALRM,
	syscall.SIGCONT, syscall.SIGTSTP,
}

func isStopSignal(s os.Signal) bool { return s == syscall.SIGTERM || s == syscall.SIGINT }

// cancelOnSignal returns ctx, cancelled when a signal arrives on sigs. stop
// ends the watch and returns the signal it caught (0: none); after it, sigs
// has no other reader.
func cancelOnSignal(ctx context.Context, sigs <-chan os.Signal) (context.Context, func() syscall.Signal) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	var caught syscall.Signal
	go func() {
		defer close(done)
		select {
		case s := <-sigs:
			caught = s.(syscall.Signal)
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() syscall.Signal { cancel(); <-done; return caught }
}

// awaitStopSignal waits briefly for SIGTERM or SIGINT on sigs, passing any
// other signal to other (when not nil); 0 when none came. A signal to signet
// both cancels ctx (main's NotifyContext) and arrives on sigs, in either
// order, so a cancelled ctx is followed by its signal, if it had one.
func awaitStopSignal(sigs <-chan os.Signal, other func(os.Signal)) syscall.Signal {
	timeout := time.After(200 * time.Millisecond)
	for {
		select {
		case s := <-sigs:
			if isStopSignal(s) {
				return s.(syscall.Signal)
			}
			if other != nil {
				other(s)
			}
		case <-timeout:
			return 0
		}
	}
}

// stopReason says why ctx ended while the helper was doing something: a
// signal (caught, or one still to arrive on sigs), the timeout (then timeout
// is the error), or the caller.
func stopReason(ctx context.Context, caught syscall.Signal, sigs <-chan os.Signal, doing string, timeout error) error {
	if caught != 0 {
		return &SignalError{Signal: caught, Reason: doing}
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return timeout
	}
	if s := awaitStopSignal(sigs, nil); s != 0 {
		return &SignalError{Signal: s, Reason: doing}
	}
	return fmt.Errorf("stopped %s: %w", doing, context.Cause(ctx))
}

func (r *runner) fetchAll(ctx context.Context, client *workloadapi.Client, what *string) error {
	var x *workloadapi.X509Context
	if r.cfg.writesX509() {
		*what = "an X509-SVID"
		var err error
		if x, err = client.FetchX509Context(ctx); err != nil {
			return err
		}
		if _, err := r.pickSVID(x); err != nil {
			return err
		}
	}
	*what = "JWT-SVIDs"
	jwts, err := r.fetchJWTs(ctx, client)
	if err != nil {
		return err
	}
	var jb *jwtbundle.Set
	if r.cfg.JWTBundleFileName != "" {
		*what = "JWT bundles"
		if jb, err = client.FetchJWTBundles(ctx); err != nil {
			return err
		}
	}
	r.mu.Lock()
	r.x509, r.jwts, r.jwtBundles = x, jwts, jb
	r.mu.Unlock()
	return nil
}

func (r *runner) fetchJWTs(ctx context.Context, client *workloadapi.Client) (map[string]*jwtsvid.SVID, error) {
	out := map[string]*jwtsvid.SVID{}
	for _, j := range r.cfg.JWTSVIDs {
		svids, err := client.FetchJWTSVIDs(ctx, jwtsvid.Params{Audience: j.Audience, ExtraAudiences: j.ExtraAudiences})
		if err != nil {
			return nil, fmt.Errorf("fetch JWT-SVID for %q: %w", j.Audience, err)
		}
		s := svids[0]
		if r.cfg.Hint != "" {
			s = nil
			for _, c := range svids {
				if c.Hint == r.cfg.Hint {
					s = c
					break
				}
			}
			if s == nil {
				return nil, fmt.Errorf("no JWT-SVID with hint %q", r.cfg.Hint)
			}
		}
		out[j.FileName] = s
	}
	return out, nil
}

func (r *runner) pickSVID(x *workloadapi.X509Context) (*x509svid.SVID, error) {
	if len(x.SVIDs) == 0 {
		return nil, errors.New("no X509-SVIDs")
	}
	if r.cfg.Hint == "" {
		return x.DefaultSVID(), nil
	}
	for _, s := range x.SVIDs {
		if s.Hint == r.cfg.Hint {
			return s, nil
		}
	}
	return nil, fmt.Errorf("no X509-SVID with hint %q", r.cfg.Hint)
}

// errIncomplete: the set waits for material still being fetched (the
// X509-SVID or JWT material); not an error worth more than a debug line.
var errIncomplete = errors.New("file set material not fetched yet")

// write renders the current material and publishes it as one set.
func (r *runner) write(jwtOnly bool) (Event, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	withX509 := r.cfg.writesX509()
	if withX509 && r.x509 == nil {
		return Event{}, errIncomplete // JWT material can arrive first at start-up
	}
	if len(r.jwts) < len(r.cfg.JWTSVIDs) || (r.cfg.JWTBundleFileName != "" && r.jwtBundles == nil) {
		return Event{}, errIncomplete
	}
	m := Material{JWTSVIDs: r.jwts, JWTBundles: r.jwtBundles}
	var ev Event
	if withX509 {
		svid, err := r.pickSVID(r.x509)
		if err != nil {
			return Event{}, err
		}
		m.SVID, m.Bundles = svid, r.x509.Bundles
		leaf := svid.Certificates[0]
		ev = Event{SPIFFEID: svid.ID.String(), Serial: leaf.SerialNumber.Text(16), NotAfter: leaf.NotAfter}
	} else {
		ev = r.jwtEvent()
	}
	files, err := r.cfg.Files(m, time.Now())
	if err != nil {
		return Event{}, fmt.Errorf("render file set: %w", err)
	}
	if err := r.writer.Write(files); err != nil {
		var late *PostCommitError
		if !errors.As(err, &late) {
			return Event{}, fmt.Errorf("write file set to %s (previous set kept): %w", r.cfg.CertDir, err)
		}
		if len(late.Missing) > 0 {
			return Event{}, fmt.Errorf("write file set to %s: %s cannot be opened by name: %w", r.cfg.CertDir, strings.Join(late.Missing, ", "), err)
		}
		// The swap committed: the new set is what readers get now, so it
		// is reported, reloaded and counted as written all the same.
		r.log.Warn("file set published, but a step after the swap failed", "dir", r.cfg.CertDir, "error", err)
	}
	ev.JWTOnly = jwtOnly && !r.x509Dirty && r.published
	r.x509Dirty, r.published = false, true
	r.writtenJWTs = r.jwts
	r.health.Written(ev.NotAfter)
	if r.o.onWrite != nil {
		r.o.onWrite(ev)
	}
	return ev, nil
}

// jwtEvent describes a set without X.509 files: the first JWT-SVID's ID and
// the earliest expiry (none with only JWT bundles).
func (r *runner) jwtEvent() Event {
	var ev Event
	for _, j := range r.cfg.JWTSVIDs {
		s := r.jwts[j.FileName]
		if ev.SPIFFEID == "" {
			ev.SPIFFEID = s.ID.String()
		}
		if ev.NotAfter.IsZero() || s.Expiry.Before(ev.NotAfter) {
			ev.NotAfter = s.Expiry
		}
	}
	return ev
}

// reloaders returns what tells the app about a new set, in spiffe-helper's
// order (cmd first: it may be what writes the pid file), and the supervised
// child. rp is the reaper when the helper is PID 1.
func (r *runner) reloaders(rp *reaper) ([]Reloader, *Process, error) {
	var rs []Reloader
	sig := syscall.Signal(0)
	if r.cfg.RenewSignal != "" {
		sig, _ = ParseSignal(r.cfg.RenewSignal)
	}
	if r.cfg.Cmd != "" {
		args, err := SplitArgs(r.cfg.CmdArgs)
		if err != nil {
			return nil, nil, err
		}
		rs = append(rs, &Process{Args: append([]string{r.cfg.Cmd}, args...), Signal: sig, Stdout: r.o.stdout, Stderr: r.o.stderr, reaper: rp})
	}
	var child *Process
	if len(r.cfg.Child) > 0 {
		if sig == 0 {
			sig = syscall.SIGHUP
		}
		child = &Process{Args: r.cfg.Child, Signal: sig, Stdout: r.o.stdout, Stderr: r.o.stderr, reaper: rp}
		rs = append(rs, childSignaler{child})
	}
	if len(r.cfg.ReloadCommand) > 0 {
		rs = append(rs, &CommandRunner{Args: r.cfg.ReloadCommand, reaper: rp})
	}
	if r.cfg.PIDFileName != "" {
		rs = append(rs, &PIDSignaler{PIDFile: r.cfg.PIDFileName, Signal: sig})
	}
	return rs, child, nil
}

// daemon keeps the files current until ctx ends or the child exits.
func (r *runner) daemon(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var rp *reaper
	if os.Getpid() == 1 {
		// Deferred before the rest, so it runs after them: it collects
		// the child (and reload commands) until the helper is done.
		var stop func()
		rp, stop = startReaper(r.log)
		defer stop()
	}
	rels, child, err := r.reloaders(rp)
	if err != nil {
		return err
	}
	if addr := r.cfg.HealthChecks.Addr(); addr != "" {
		if err := r.health.Serve(ctx, addr, r.cfg.HealthChecks, r.log); err != nil {
			return err
		}
	}
	var sigs chan os.Signal
	if child != nil {
		// main's NotifyContext also sees TERM and INT; we keep running
		// until the child has exited.
		sigs = make(chan os.Signal, 8)
		signal.Notify(sigs, forwardSignals...)
		defer signal.Stop(sigs)
	}
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(r.addr))
	if err != nil {
		return fmt.Errorf("workload API client: %w", err)
	}
	defer client.Close()

	reloads := startReloaders(ctx, rels, r.cfg.Debounce, r.log)
	defer reloads.wait()
	firstWrite := make(chan struct{})
	var firstOnce sync.Once
	publish := func(jwtOnly bool) {
		ev, err := r.write(jwtOnly)
		if errors.Is(err, errIncomplete) {
			r.log.Debug("file set waits for the rest of its material")
			return
		}
		if err != nil {
			r.log.Error("file set not written", "error", err)
			return
		}
		r.log.Info("file set written", "spiffe_id", ev.SPIFFEID, "serial", ev.Serial, "not_after", ev.NotAfter.UTC().Format(time.RFC3339), "dir", r.cfg.CertDir)
		first := false
		firstOnce.Do(func() { first = true; close(firstWrite) })
		// The child starts below, reading this set: it is not signalled
		// for it, but the reload command and the pid file are.
		ev.first = first && child != nil
		// X.509 updates (new SVID or new bundle) always reload; JWT renewals
		// only when asked, as most apps read JWTs per request.
		if !ev.JWTOnly || r.cfg.ReloadOnJWT {
			reloads.push(ev)
		}
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	if r.cfg.writesX509() {
		wg.Go(func() {
			err := client.WatchX509Context(ctx, &x509Watcher{r: r, publish: publish})
			if err != nil && ctx.Err() == nil {
				r.log.Error("X.509 watch ended", "error", err)
			}
		})
	}
	if len(r.cfg.JWTSVIDs) > 0 {
		wg.Go(func() { r.jwtLoop(ctx, client, publish) })
	}
	if r.cfg.JWTBundleFileName != "" {
		wg.Go(func() {
			err := client.WatchJWTBundles(ctx, &jwtBundleWatcher{r: r, publish: publish})
			if err != nil && ctx.Err() == nil {
				r.log.Error("JWT bundle watch ended", "error", err)
			}
		})
	}

	if child == nil {
		<-ctx.Done()
		return nil
	}
	if err := r.awaitFirstWrite(ctx, sigs, firstWrite); err != nil {
		return err
	}
	if err := child.Start(); err != nil {
		return err
	}
	r.log.Info("started child", "cmd", child.Args[0])
	return r.supervise(ctx, child, sigs)
}

// awaitFirstWrite holds the child back until the first set is written. A
// stop signal before that ends the helper with 128+n: the child never ran,
// so there is no status of its to exit with, and 0 would claim success.
func (r *runner) awaitFirstWrite(ctx context.Context, sigs <-chan os.Signal, firstWrite <-chan struct{}) error {
	const reason = "before the first identity was written; child not started"
	for {
		select {
		case <-firstWrite:
			return nil
		case s := <-sigs:
			if isStopSignal(s) {
				return &SignalError{Signal: s.(syscall.Signal), Reason: reason}
			}
			r.log.Info("signal not forwarded: the child has not started", "signal", s.String())
		case <-ctx.Done():
			if s := awaitStopSignal(sigs, nil); s != 0 {
				return &SignalError{Signal: s, Reason: reason}
			}
			return errors.New("stopped " + reason)
		}
	}
}

// supervise forwards signals to the running child until it exits, and
// returns its status.
func (r *runner) supervise(ctx context.Context, child *Process, sigs <-chan os.Signal) error {
	forward := func(s os.Signal) {
		r.log.Info("forwarding signal to child", "signal", s.String())
		_ = child.SendSignal(s)
	}
	ctxDone, stopSent := ctx.Done(), false
	for {
		select {
		case s := <-sigs:
			forward(s)
			stopSent = stopSent || isStopSignal(s)
		case <-ctxDone:
			ctxDone = nil
			if stopSent {
				continue // the stop signal we forwarded cancelled ctx too
			}
			// Give the signal that cancelled ctx a moment to arrive, so
			// the child gets the exact one (INT stays INT). Without one, an
			// embedding caller cancelled ctx: stop the child with SIGTERM.
			// Either way, keep forwarding and wait for the child's status.
			s := awaitStopSignal(sigs, forward)
			if s == 0 {
				s = syscall.SIGTERM
			}
			forward(s)
			stopSent = true
		case <-child.Done():
			r.log.Info("child exited", "status", child.ExitCode())
			return &ChildExitError{Code: child.ExitCode()}
		}
	}
}

type x509Watcher struct {
	r       *runner
	publish func(bool)
}

func (w *x509Watcher) OnX509ContextUpdate(x *workloadapi.X509Context) {
	w.r.health.StreamUp()
	w.r.mu.Lock()
	w.r.x509, w.r.x509Dirty = x, true
	w.r.mu.Unlock()
	w.publish(false)
}

func (w *x509Watcher) OnX509ContextWatchError(err error) {
	w.r.health.StreamDown()
	w.r.log.Warn("workload API X.509 stream error; retrying", "error", err)
}

type jwtBundleWatcher struct {
	r       *runner
	publish func(bool)
}

func (w *jwtBundleWatcher) OnJWTBundlesUpdate(s *jwtbundle.Set) {
	w.r.mu.Lock()
	w.r.jwtBundles = s
	w.r.mu.Unlock()
	w.publish(true)
}

func (w *jwtBundleWatcher) OnJWTBundlesWatchError(err error) {
	w.r.log.Warn("workload API JWT bundle stream error; retrying", "error", err)
}

// jwtLoop renews JWT-SVIDs at half their lifetime.
func (r *runner) jwtLoop(ctx context.Context, client *workloadapi.Client, publish func(bool)) {
	delay := time.Duration(0)
	backoff := 500 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		jwts, err := r.fetchJWTs(ctx, client)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if !r.cfg.writesX509() {
				r.health.StreamDown() // no X.509 stream to tell
			}
			r.log.Warn("fetch JWT-SVIDs; retrying", "error", err)
			delay, backoff = backoff, min(2*backoff, 30*time.Second)
			continue
		}
		backoff = 500 * time.Millisecond
		if !r.cfg.writesX509() {
			r.health.StreamUp()
		}
		r.mu.Lock()
		changed := !sameJWTs(jwts, r.writtenJWTs)
		r.jwts = jwts
		r.mu.Unlock()
		if changed {
			publish(true)
		} else {
			r.log.Debug("JWT-SVIDs unchanged; set not rewritten")
		}
		delay = nextJWTFetch(jwts, time.Now())
	}
}

// nextJWTFetch is when to renew: half the remaining lifetime plus a second,
// as spiffe-helper does. The agent renews its cached token at half the
// lifetime from when it got it, which is earlier, so this fetch brings a
// new token, where half the lifetime from iat (whole seconds, and set
// before the agent got it) asks too early and gets the same one again.
func nextJWTFetch(svids map[string]*jwtsvid.SVID, now time.Time) time.Duration {
	delay := time.Hour
	for _, s := range svids {
		delay = min(delay, max(s.Expiry.Sub(now)/2+time.Second, time.Second))
	}
	return delay
}

// sameJWTs reports whether a and b hold byte-identical tokens under the
// same file names.
func sameJWTs(a, b map[string]*jwtsvid.SVID) bool {
	return maps.EqualFunc(a, b, func(x, y *jwtsvid.SVID) bool { return x.Marshal() == y.Marshal() })
}

// waitForFile waits until path exists, watching its directory (and polling,
// for when the directory itself does not exist yet).
func waitForFile(ctx context.Context, path string) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", path, err)
	}
	defer w.Close()
	watching := false
	for {
		if !watching {
			watching = w.Add(filepath.Dir(path)) == nil
		}
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.Events:
		case <-w.Errors:
		case <-time.After(time.Second):
		}
	}
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
