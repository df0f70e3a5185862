package test

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/signetid/signet/agent/delegatedidentity/v1"
)

// TestAgentDelegatedIdentityAPI runs `signet agent run` with an admin
// socket from a config file whose settings the flags replace, and talks to
// it as a delegate would (a client generated from the wire-compatible
// protobuf): this test process, attested by its uid, gets the SVID of a
// real child process by its PID.
func TestAgentDelegatedIdentityAPI(t *testing.T) {
	srv := startServerProc(t)
	dir := t.TempDir()
	bundle, tok, addr := agentJoin(t, srv, dir)
	socket := filepath.Join(dir, "sockets", "agent.sock")
	adminDir := filepath.Join(dir, "admin")
	admin := filepath.Join(adminDir, "admin.sock")
	fileAdmin := filepath.Join(dir, "file-admin", "admin.sock")
	conf := filepath.Join(dir, "agent.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "agent {\n  admin_socket_path = %q\n  authorized_delegates = [\"spiffe://example.org/someone-else\"]\n}\n", fileAdmin), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"agent", "run", "--config", conf, "--server", addr, "--trust-domain", "example.org", "--data-dir", filepath.Join(dir, "agent"),
		"--trust-bundle", bundle, "--socket", socket}

	// Refused before anything starts: an admin socket where workloads (and
	// pods, through the CSI driver) reach it, and delegates with no socket.
	for _, tc := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--admin-socket", filepath.Join(dir, "sockets", "admin.sock")}, "the Workload API socket's directory"},
		{[]string{"--admin-socket", "", "--authorized-delegate", "spiffe://example.org/delegate"}, "authorized_delegates is set but admin_socket_path is not"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		_, err := runSignet(t, ctx, append(slices.Clone(args), append(tc.flags, "--join-token", "unused")...)...)
		cancel()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("agent run %v: %v, want a refusal containing %q", tc.flags, err, tc.want)
		}
	}

	agentProc := startSignet(t, nil, append(args, "--join-token", strings.TrimSpace(tok),
		"--admin-socket", admin, "--authorized-delegate", "spiffe://example.org/delegate", "--authorized-delegate", "spiffe://example.org/second")...)
	agentProc.waitLine(t, "agent ready", 30*time.Second)
	for path, want := range map[string]fs.FileMode{adminDir: fs.ModeDir | 0o700, admin: fs.ModeSocket | 0o770} {
		if fi, err := os.Lstat(path); err != nil || fi.Mode() != want {
			t.Fatalf("%s: %v, %v; want mode %v", path, fi.Mode(), err, want)
		}
	}
	if _, err := os.Stat(filepath.Dir(fileAdmin)); !os.IsNotExist(err) {
		t.Fatalf("the config file's admin socket directory exists (%v): --admin-socket should have replaced it", err)
	}

	uid := fmt.Sprint(os.Getuid())
	for _, e := range [][]string{
		{"spiffe://example.org/delegate", "unix:uid:" + uid},
		{"spiffe://example.org/sleeper", "unix:uid:" + uid, "unix:path:" + sleepBinary(t)},
	} {
		create := []string{"server", "entry", "create", "--parent-id", nodeAgentID, "--spiffe-id", e[0]}
		for _, s := range e[1:] {
			create = append(create, "--selector", s)
		}
		if _, err := srv.cli(t, create...); err != nil {
			t.Fatal(err)
		}
	}
	child := exec.Command(sleepBinary(t), "60")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { child.Process.Kill(); child.Wait() })

	conn, err := grpc.NewClient("unix://"+admin, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := pb.NewDelegatedIdentityClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The entries reach the agent by push; until then the caller has no
	// identity, which ends the stream with PermissionDenied.
	for {
		stream, err := client.SubscribeToX509SVIDs(ctx, &pb.SubscribeToX509SVIDsRequest{Pid: int32(child.Process.Pid)})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if status.Code(err) == codes.PermissionDenied && ctx.Err() == nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatalf("SubscribeToX509SVIDs by PID: %v", err)
		}
		for len(resp.X509Svids) < 2 { // the child's SVIDs as they are signed
			if resp, err = stream.Recv(); err != nil {
				t.Fatalf("SubscribeToX509SVIDs by PID: %v", err)
			}
		}
		var ids []string
		for _, s := range resp.X509Svids {
			svid, err := x509svid.ParseRaw(slices.Concat(s.X509Svid.CertChain...), s.X509SvidKey)
			if err != nil {
				t.Fatalf("SVID of the child: %v", err)
			}
			ids = append(ids, svid.ID.String())
		}
		slices.Sort(ids)
		if want := []string{"spiffe://example.org/delegate", "spiffe://example.org/sleeper"}; !slices.Equal(ids, want) {
			t.Fatalf("the child's SVIDs: %v, want %v", ids, want)
		}
		return
	}
}

// sleepBinary is the real path of sleep(1): the unix:path its process has.
func sleepBinary(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	if p, err = filepath.EvalSymlinks(p); err != nil {
		t.Fatal(err)
	}
	return p
}
