package test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

func callerID(t testing.TB) spiffeid.ID {
	t.Helper()
	name := "root"
	if os.Getuid() != 0 {
		t.Skip("e2e identity tests assume root (CI runs as root)")
	}
	return spiffeid.RequireFromString("spiffe://example.org/dev/" + name)
}

func x509Source(t testing.TB, ctx context.Context, addr string) *workloadapi.X509Source {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(addr)))
	if err != nil {
		t.Fatalf("NewX509Source: %v", err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

func TestAgentX509SourceAndMTLS(t *testing.T) {
	want := callerID(t)
	d := startDev(t)
	ctx := context.Background()
	src := x509Source(t, ctx, d.Addr())
	svid, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID != want {
		t.Fatalf("X509Source got %s, want %s", svid.ID, want)
	}

	ln, err := spiffetls.ListenWithMode(ctx, "tcp", "127.0.0.1:0", spiffetls.MTLSServerWithSource(tlsconfig.AuthorizeID(want), src))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 5)
				if _, err := io.ReadFull(c, buf); err == nil {
					c.Write([]byte("pong\n"))
				}
			}()
		}
	}()
	dial := func(server spiffeid.ID) error {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		c, err := spiffetls.DialWithMode(dctx, "tcp", ln.Addr().String(), spiffetls.MTLSClientWithSource(tlsconfig.AuthorizeID(server), src))
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Write([]byte("ping\n")); err != nil {
			return err
		}
		buf := make([]byte, 5)
		_, err = io.ReadFull(c, buf)
		return err
	}
	if err := dial(want); err != nil {
		t.Fatalf("mTLS with the right peer ID failed: %v", err)
	}
	if err := dial(spiffeid.RequireFromString("spiffe://example.org/someone-else")); err == nil {
		t.Fatal("mTLS succeeded although the client authorizes a different server ID")
	}
}

// rawClient is the generated Workload API client on the agent socket, for
// checks go-spiffe's client does not let us make (a missing header).
func rawClient(t testing.TB, socket string) workload.SpiffeWorkloadAPIClient {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///agent", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return workload.NewSpiffeWorkloadAPIClient(conn)
}

func TestAgentWorkloadAPIRules(t *testing.T) {
	callerID(t)
	d := startDev(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// No security header: InvalidArgument.
	stream, err := rawClient(t, d.Socket).FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("FetchX509SVID without header: %v, want InvalidArgument", err)
	}

	// A caller with no registered identity: PermissionDenied (run as nobody).
	os.Chmod(filepath.Dir(d.Dir), 0o755)
	os.Chmod(d.Dir, 0o755)
	cmd := exec.CommandContext(ctx, signetBin(t), "agent", "api", "fetch", "x509", "--socket", d.Socket)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "PermissionDenied") {
		t.Fatalf("fetch as an unregistered uid: err=%v output=%s", err, out)
	}
}

func TestAgentJWT(t *testing.T) {
	want := callerID(t)
	d := startDev(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(d.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	jwt, err := client.FetchJWTSVID(ctx, jwtParams("audience-a"))
	if err != nil {
		t.Fatalf("FetchJWTSVID: %v", err)
	}
	if jwt.ID != want {
		t.Fatalf("JWT-SVID for %s, want %s", jwt.ID, want)
	}
	got, err := client.ValidateJWTSVID(ctx, jwt.Marshal(), "audience-a")
	if err != nil || got.ID != want {
		t.Fatalf("ValidateJWTSVID for its audience: %v %v", got, err)
	}
	if _, err := client.ValidateJWTSVID(ctx, jwt.Marshal(), "audience-b"); err == nil {
		t.Fatal("ValidateJWTSVID accepted the token for another audience")
	}
	bundles, err := client.FetchJWTBundles(ctx)
	if err != nil || bundles.Len() != 1 {
		t.Fatalf("FetchJWTBundles: %v (%d bundles)", err, bundles.Len())
	}
}

func TestAgentRotationAndNewEntriesReachOpenStream(t *testing.T) {
	want := callerID(t)
	d := startDev(t, "--svid-ttl", "10s")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(d.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	updates := make(chan *workloadapi.X509Context, 16)
	go client.WatchX509Context(ctx, watcher{updates})

	first := nextUpdate(t, updates, 30*time.Second)
	if len(first.SVIDs) != 1 || first.SVIDs[0].ID != want {
		t.Fatalf("first update: %v", ids(first.SVIDs))
	}
	serial := first.SVIDs[0].Certificates[0].SerialNumber

	// A new matching entry reaches the open stream without reconnecting.
	d.createEntry(t, "--parent-id", d.AgentID, "--spiffe-id", "spiffe://example.org/extra", "--selector", "unix:uid:0")
	deadline := time.Now().Add(30 * time.Second)
	for {
		u := nextUpdate(t, updates, time.Until(deadline))
		if containsID(u.SVIDs, "spiffe://example.org/extra") {
			break
		}
	}
	// Rotation (10 s TTL: renewed at ~5 s) reaches the same stream.
	for {
		u := nextUpdate(t, updates, time.Until(deadline))
		for _, s := range u.SVIDs {
			if s.ID == want && s.Certificates[0].SerialNumber.Cmp(serial) != 0 {
				old, cur := first.SVIDs[0].Certificates[0], s.Certificates[0]
				if !cur.NotAfter.After(old.NotAfter) {
					t.Fatalf("rotated SVID does not outlive the old one")
				}
				// Rotation is due at half the lifetime; earlier means a rotation storm.
				// (NotBefore is backdated and whole-second, hence the 2 s slack.)
				if half := old.NotBefore.Add(old.NotAfter.Sub(old.NotBefore) / 2); cur.NotBefore.Add(2 * time.Second).Before(half) {
					t.Fatalf("SVID rotated at ~%s, before half its lifetime (%s)", cur.NotBefore, half)
				}
				return
			}
		}
	}
}

// node is a separate `signet server run` and `signet agent run`, the agent
// attested as spiffe://example.org/agent/node1.
type node struct {
	server    *serverEnv
	agent     *proc
	agentArgs []string
	socket    string
}

const nodeAgentID = "spiffe://example.org/agent/node1"

// agentJoin is what a join-token agent of srv needs, in dir: the server's
// bundle file, a join token for nodeAgentID, and the agent API's address.
func agentJoin(t testing.TB, srv *serverEnv, dir string) (bundle, token, addr string) {
	t.Helper()
	bundle = srv.writeBundle(t, dir)
	token, err := srv.cli(t, "server", "token", "generate", "--spiffe-id", nodeAgentID)
	if err != nil {
		t.Fatal(err)
	}
	return bundle, strings.TrimSpace(token), fieldValue(srv.proc.waitLine(t, "agent_api=", 10*time.Second), "agent_api")
}

func startNode(t testing.TB, serverArgs ...string) *node {
	t.Helper()
	srv := startServerProc(t, serverArgs...)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	bundle, tok, addr := agentJoin(t, srv, dir)
	n := &node{server: srv, socket: filepath.Join(dir, "sockets", "agent.sock")}
	n.agentArgs = []string{"agent", "run", "--server", addr, "--trust-domain", "example.org", "--data-dir", filepath.Join(dir, "agent"),
		"--trust-bundle", bundle, "--socket", n.socket}
	n.agent = startSignet(t, nil, append(n.agentArgs, "--join-token", strings.TrimSpace(tok))...)
	n.agent.waitLine(t, "agent ready", 30*time.Second)
	return n
}

func (n *node) fetchID() (spiffeid.ID, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+n.socket))
	if err != nil {
		return spiffeid.ID{}, err
	}
	return svid.ID, nil
}

func TestAgentServesPersistedSVIDsWhileServerDown(t *testing.T) {
	want := callerID(t)
	n := startNode(t)
	if _, err := n.server.cli(t, "server", "entry", "create", "--parent-id", nodeAgentID,
		"--spiffe-id", want.String(), "--selector", "unix:uid:0"); err != nil {
		t.Fatal(err)
	}
	waitForID(t, n, want)
	n.server.proc.Kill()
	n.agent.Stop()
	// Same data dir, no token: the agent restarts into a server outage.
	restarted := startSignet(t, nil, n.agentArgs...)
	restarted.waitLine(t, "workload API serving", 30*time.Second)
	if id, err := n.fetchID(); err != nil || id != want {
		t.Fatalf("restarted agent during server outage: %v %v", id, err)
	}
}

func TestAgentCatchesUpWhenServerReturns(t *testing.T) {
	want := callerID(t)
	listen := freeAddr(t)
	n := startNode(t, "--listen", listen)
	if _, err := n.server.cli(t, "server", "entry", "create", "--parent-id", nodeAgentID,
		"--spiffe-id", want.String(), "--selector", "unix:uid:0"); err != nil {
		t.Fatal(err)
	}
	waitForID(t, n, want)

	// The server goes away; the agent keeps serving and retries.
	n.server.proc.Kill()
	if id, err := n.fetchID(); err != nil || id != want {
		t.Fatalf("agent during the outage: %v %v", id, err)
	}
	// The same server (data dir, address) comes back with a new entry; the
	// running agent reconnects and serves it without a restart.
	args := n.server.proc.cmd.Args[1:]
	n.server.proc = startSignet(t, nil, args...)
	n.server.proc.waitLine(t, "server started", 30*time.Second)
	extra := spiffeid.RequireFromString("spiffe://example.org/after-outage")
	if _, err := n.server.cli(t, "server", "entry", "create", "--parent-id", nodeAgentID,
		"--spiffe-id", extra.String(), "--selector", "unix:uid:0"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+n.socket))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	for {
		x, err := client.FetchX509Context(ctx)
		if err == nil && containsID(x.SVIDs, extra.String()) {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("the agent never caught up with the returned server: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitForID waits until the node's Workload API serves want to this process.
func waitForID(t testing.TB, n *node, want spiffeid.ID) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		id, err := n.fetchID()
		if err == nil && id == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not serve %s: %v %v", want, id, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type watcher struct{ ch chan *workloadapi.X509Context }

func (w watcher) OnX509ContextUpdate(c *workloadapi.X509Context) { w.ch <- c }
func (w watcher) OnX509ContextWatchError(err error) {
	if status.Code(err) != codes.Canceled && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(os.Stderr, "watch error: %v\n", err)
	}
}

func nextUpdate(t testing.TB, ch chan *workloadapi.X509Context, timeout time.Duration) *workloadapi.X509Context {
	t.Helper()
	select {
	case u := <-ch:
		return u
	case <-time.After(timeout):
		t.Fatalf("no X509 context update within %s", timeout)
		return nil
	}
}

func ids(svids []*x509svid.SVID) []string {
	var out []string
	for _, s := range svids {
		out = append(out, s.ID.String())
	}
	return out
}

func containsID(svids []*x509svid.SVID, id string) bool {
	for _, s := range svids {
		if s.ID.String() == id {
			return true
		}
	}
	return false
}

func jwtParams(aud string) jwtsvid.Params { return jwtsvid.Params{Audience: aud} }

// fieldValue extracts key=value from a slog text line.
func fieldValue(line, key string) string {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// A first start against a server the trust bundle does not vouch for (wrong
// --trust-domain here) is a configuration error: the agent stops with one
// line saying what to check, instead of retrying forever as if the server
// were down. A bad token likewise ends in one plain line.
func TestAgentFirstStartMisconfigured(t *testing.T) {
	srv := startServerProc(t)
	dir := t.TempDir()
	bundle := srv.writeBundle(t, dir)
	addr := fieldValue(srv.proc.waitLine(t, "agent_api=", 10*time.Second), "agent_api")
	tests := []struct {
		name, trustDomain, token, want string
	}{
		{"wrong trust domain", "example.com", "some-token", `is not trusted: x509svid: could not get X509 bundle: no bundle for trust domain "example.org"; check --trust-domain (example.com) and --trust-bundle`},
		{"unknown token", "example.org", "not-a-token", "join token is unknown or already used"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startSignet(t, nil, "agent", "run", "--server", addr, "--trust-domain", tt.trustDomain, "--trust-bundle", bundle,
				"--data-dir", t.TempDir(), "--socket", filepath.Join(t.TempDir(), "agent.sock"), "--join-token", tt.token)
			select {
			case <-p.done:
			case <-time.After(30 * time.Second):
				t.Fatalf("agent still running:\n%s", p.Output())
			}
			if p.err == nil {
				t.Fatal("agent exited 0")
			}
			last := p.Output()
			lines := strings.Split(strings.TrimSpace(last), "\n")
			if got := lines[len(lines)-1]; !strings.HasPrefix(got, "signet: agent: ") || !strings.Contains(got, tt.want) || strings.Contains(got, "rpc error") {
				t.Fatalf("last line %q, want a plain line containing %q", got, tt.want)
			}
		})
	}
}

// signet dev serves other users too: the README registers nginx's uid 33.
// A process of another uid reaches the socket and is told it has no
// identity, not refused by the directory's mode.
func TestDevSocketReachableByOtherUsers(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a client as another uid")
	}
	d := startDev(t)
	openUp(t, filepath.Dir(d.Dir)) // the test's own temp dir; dev opens its data dir itself
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, signetBin(t), "agent", "api", "fetch", "x509", "--socket", d.Addr())
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "register an entry whose selectors match this process") {
		t.Fatalf("fetch as uid 65534: %v\n%s", err, out)
	}
	for dir, want := range map[string]os.FileMode{d.Dir: 0o755, filepath.Join(d.Dir, "server"): 0o700, filepath.Join(d.Dir, "agent"): 0o700} {
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", dir, fi.Mode().Perm(), want)
		}
	}
}

// signet dev restarts on its data dir: with the agent's SVID on disk it needs
// no token (the server refuses one for the live agent's ID); with the agent's
// dir deleted, the stale agent is evicted and a new token attests it.
func TestDevRestarts(t *testing.T) {
	d := startDev(t)
	for _, step := range []struct {
		name  string
		reset func()
	}{
		{"same data dir", func() {}},
		{"agent dir deleted", func() {
			if err := os.RemoveAll(filepath.Join(d.Dir, "agent")); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		d.proc.Kill()
		step.reset()
		d.proc = startSignet(t, nil, "dev", "--data-dir", d.Dir, "--socket", d.Socket, "--admin-socket", d.AdminSocket)
		d.proc.waitLine(t, "SPIFFE_ENDPOINT_SOCKET=", 60*time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr(d.Addr()))
		cancel()
		if err != nil {
			t.Fatalf("%s: FetchX509SVID: %v", step.name, err)
		}
		if svid.ID != callerID(t) {
			t.Fatalf("%s: got %s, want %s", step.name, svid.ID, callerID(t))
		}
	}
}

// writeBundle saves the server's bundle (PEM) in dir and returns its path.
func (s *serverEnv) writeBundle(t testing.TB, dir string) string {
	t.Helper()
	pemOut, err := s.cli(t, "server", "bundle", "show")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "bundle.pem")
	if err := os.WriteFile(path, []byte(pemOut), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
