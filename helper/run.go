package helper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
)

// ChildExitError is returned by [Run] when the supervised child exited; the
// helper exits with the child's status.
type ChildExitError struct{ Code int }

func (e *ChildExitError) Error() string { return fmt.Sprintf("child exited with status %d", e.Code) }

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
	// x509Dirty: X.509 material changed since the last published set, so
	// the next set must reload the app even if JWT material completes it.
	x509Dirty bool
}

// once is init mode: wait for the socket and an identity, write, exit.
func (r *runner) once(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	sock, _ := SocketPath(r.cfg.AgentAddress)
	if err := waitForFile(ctx, sock); err != nil {
		return fmt.Errorf("timed out after %s waiting for the Workload API socket %s to appear", r.cfg.Timeout, sock)
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
			return fmt.Errorf("timed out after %s waiting for %s from %s (last error: %s)", r.cfg.Timeout, what, r.addr, oneLine(lastErr))
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

func (r *runner) fetchAll(ctx context.Context, client *workloadapi.Client, what *string) error {
	*what = "an X509-SVID"
	x, err := client.FetchX509Context(ctx)
	if err != nil {
		return err
	}
	if _, err := r.pickSVID(x); err != nil {
		return err
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
	if r.x509 == nil {
		return Event{}, errIncomplete // JWT material can arrive first at start-up
	}
	if len(r.jwts) < len(r.cfg.JWTSVIDs) || (r.cfg.JWTBundleFileName != "" && r.jwtBundles == nil) {
		return Event{}, errIncomplete
	}
	svid, err := r.pickSVID(r.x509)
	if err != nil {
		return Event{}, err
	}
	files, err := r.cfg.Files(Material{SVID: svid, Bundles: r.x509.Bundles, JWTSVIDs: r.jwts, JWTBundles: r.jwtBundles}, time.Now())
	if err != nil {
		return Event{}, fmt.Errorf("render file set: %w", err)
	}
	if err := r.writer.Write(files); err != nil {
		return Event{}, fmt.Errorf("write file set to %s (previous set kept): %w", r.cfg.CertDir, err)
	}
	leaf := svid.Certificates[0]
	ev := Event{SPIFFEID: svid.ID.String(), Serial: leaf.SerialNumber.Text(16), NotAfter: leaf.NotAfter, JWTOnly: jwtOnly && !r.x509Dirty}
	r.x509Dirty = false
	r.health.Written(leaf.NotAfter)
	if r.o.onWrite != nil {
		r.o.onWrite(ev)
	}
	return ev, nil
}

func (r *runner) reloader() (Reloader, *Process, error) {
	var rs multiReloader
	sig := syscall.Signal(0)
	if r.cfg.RenewSignal != "" {
		sig, _ = ParseSignal(r.cfg.RenewSignal)
	}
	if r.cfg.PIDFileName != "" {
		rs = append(rs, &PIDSignaler{PIDFile: r.cfg.PIDFileName, Signal: sig})
	}
	if r.cfg.Cmd != "" {
		args, err := SplitArgs(r.cfg.CmdArgs)
		if err != nil {
			return nil, nil, err
		}
		rs = append(rs, &Process{Args: append([]string{r.cfg.Cmd}, args...), Signal: sig, Stdout: r.o.stdout, Stderr: r.o.stderr})
	}
	if len(r.cfg.ReloadCommand) > 0 {
		rs = append(rs, &CommandRunner{Args: r.cfg.ReloadCommand})
	}
	var child *Process
	if len(r.cfg.Child) > 0 {
		if sig == 0 {
			sig = syscall.SIGHUP
		}
		child = &Process{Args: r.cfg.Child, Signal: sig, Stdout: r.o.stdout, Stderr: r.o.stderr}
		rs = append(rs, child)
	}
	return rs, child, nil
}

type multiReloader []Reloader

func (m multiReloader) Reload(ctx context.Context, ev Event) error {
	var errs []error
	for _, r := range m {
		errs = append(errs, r.Reload(ctx, ev))
	}
	return errors.Join(errs...)
}

// daemon keeps the files current until ctx ends or the child exits.
func (r *runner) daemon(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rel, child, err := r.reloader()
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
		// Forward the exact signal; main's NotifyContext also sees it, so we
		// keep running until the child has exited.
		sigs = make(chan os.Signal, 2)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		defer signal.Stop(sigs)
	}
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(r.addr))
	if err != nil {
		return fmt.Errorf("workload API client: %w", err)
	}
	defer client.Close()

	queue := newReloadQueue()
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
		if first && child != nil {
			return // the child starts below, reading this set
		}
		// X.509 updates (new SVID or new bundle) always reload; JWT renewals
		// only when asked, as most apps read JWTs per request.
		if !ev.JWTOnly || r.cfg.ReloadOnJWT {
			queue.push(ev)
		}
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		queue.run(ctx, rel, r.cfg.Debounce, r.log)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := client.WatchX509Context(ctx, &x509Watcher{r: r, publish: publish})
		if err != nil && ctx.Err() == nil {
			r.log.Error("X.509 watch ended", "error", err)
		}
	}()
	if len(r.cfg.JWTSVIDs) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.jwtLoop(ctx, client, publish)
		}()
	}
	if r.cfg.JWTBundleFileName != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := client.WatchJWTBundles(ctx, &jwtBundleWatcher{r: r, publish: publish})
			if err != nil && ctx.Err() == nil {
				r.log.Error("JWT bundle watch ended", "error", err)
			}
		}()
	}

	if child == nil {
		<-ctx.Done()
		return nil
	}
	select {
	case <-ctx.Done():
		return nil
	case <-firstWrite:
	}
	if err := child.Start(); err != nil {
		return err
	}
	r.log.Info("started child", "cmd", child.Args[0])
	forward := func(s os.Signal) {
		r.log.Info("forwarding signal to child", "signal", s.String())
		_ = child.SendSignal(s)
	}
	ctxDone, forwarded := ctx.Done(), false
	for {
		select {
		case s := <-sigs:
			forward(s)
			forwarded = true
		case <-ctxDone:
			ctxDone = nil
			if forwarded {
				continue // the signal we forwarded cancelled ctx too
			}
			// A signal to us both cancels ctx (main's NotifyContext) and
			// arrives on sigs, in either order: give sigs a moment so the
			// child gets the exact signal (INT stays INT). Without one, an
			// embedding caller cancelled ctx: stop the child with SIGTERM.
			// Either way, keep forwarding and wait for the child's status.
			select {
			case s := <-sigs:
				forward(s)
			case <-time.After(200 * time.Millisecond):
				forward(syscall.SIGTERM)
			}
			forwarded = true
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
			r.log.Warn("fetch JWT-SVIDs; retrying", "error", err)
			delay, backoff = backoff, min(2*backoff, 30*time.Second)
			continue
		}
		backoff = 500 * time.Millisecond
		r.mu.Lock()
		r.jwts = jwts
		r.mu.Unlock()
		publish(true)
		delay = time.Hour
		now := time.Now()
		for _, s := range jwts {
			iat := now
			if v, ok := s.Claims["iat"].(float64); ok {
				iat = time.Unix(int64(v), 0)
			}
			delay = min(delay, max(iat.Add(s.Expiry.Sub(iat)/2).Sub(now), time.Second))
		}
	}
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
