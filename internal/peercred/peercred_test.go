package peercred_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/signetid/signet/internal/peercred"
)

func TestFromContextOverRealSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan peercred.Info, 1)
	srv := grpc.NewServer(
		grpc.Creds(peercred.Credentials()),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			info, err := peercred.FromContext(ctx)
			if err != nil {
				return nil, err
			}
			seen <- info
			return h(ctx, req)
		}),
	)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	defer srv.Stop()

	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("Check: %v", err)
	}
	info := <-seen
	if info.PID != int32(os.Getpid()) || info.UID != uint32(os.Getuid()) || info.GID != uint32(os.Getgid()) {
		t.Errorf("peer = {pid %d uid %d gid %d}, want {pid %d uid %d gid %d}",
			info.PID, info.UID, info.GID, os.Getpid(), os.Getuid(), os.Getgid())
	}
	if info.AuthType() != peercred.AuthType {
		t.Errorf("AuthType = %q", info.AuthType())
	}
	if info.StartTimeErr != nil {
		t.Fatalf("start time not recorded at accept: %v", info.StartTimeErr)
	}
	if err := info.SameProcess(); err != nil {
		t.Errorf("SameProcess for this (live) process: %v", err)
	}
}

func TestClientHandshakeSeesServer(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		c, err := lis.Accept()
		if err == nil {
			defer c.Close()
			c.Read(make([]byte, 1))
		}
	}()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, auth, err := peercred.Credentials().ClientHandshake(t.Context(), "", conn)
	if err != nil {
		t.Fatal(err)
	}
	if got := auth.(peercred.Info).PID; got != int32(os.Getpid()) {
		t.Errorf("server PID = %d, want %d", got, os.Getpid())
	}
}

func TestReadRefusesNonUnix(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := peercred.Read(a); err == nil {
		t.Fatal("Read on a pipe succeeded, want an error")
	}
}

func TestFromContextWithoutPeer(t *testing.T) {
	if _, err := peercred.FromContext(context.Background()); !errors.Is(err, peercred.ErrNoPeerCred) {
		t.Fatalf("err = %v, want ErrNoPeerCred", err)
	}
}

const connectEnv = "PEERCRED_TEST_CONNECT"

// TestHelperConnectAndWait is the child of TestSameProcessSeesExit: it
// connects to the socket in its environment and waits for stdin to close.
func TestHelperConnectAndWait(t *testing.T) {
	sock := os.Getenv(connectEnv)
	if sock == "" {
		t.Skip("helper process only")
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.Copy(io.Discard, os.Stdin)
}

// Once the process that connected has exited, SameProcess refuses the
// connection at once, whatever the start time's granularity would say.
func TestSameProcessSeesExit(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	child := exec.Command(os.Args[0], "-test.run=^TestHelperConnectAndWait$")
	child.Env = append(os.Environ(), connectEnv+"="+sock)
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	conn, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	wrapped, auth, err := peercred.Credentials().ServerHandshake(conn)
	if err != nil {
		t.Fatal(err)
	}
	defer wrapped.Close()
	info := auth.(peercred.Info)
	if int(info.PID) != child.Process.Pid {
		t.Fatalf("peer pid %d, want the child's %d", info.PID, child.Process.Pid)
	}
	if err := info.SameProcess(); err != nil {
		t.Fatalf("SameProcess while the child lives: %v", err)
	}
	stdin.Close()
	if err := child.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	if err := info.SameProcess(); err == nil {
		t.Fatal("SameProcess passed after the process that connected exited")
	}
}
