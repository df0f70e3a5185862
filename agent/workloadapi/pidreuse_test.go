package workloadapi_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

// helperEnv makes the test binary act as a workload that connects to the
// socket it names, hands the connection to its parent (fd 3) and exits.
const helperEnv = "SIGNET_WL_CONNECT_AND_EXIT"

func TestHelperConnectAndExit(t *testing.T) {
	sock := os.Getenv(helperEnv)
	if sock == "" {
		t.Skip("helper process for TestReusedPIDIsRefused")
	}
	if err := connectAndPass(sock, os.NewFile(3, "parent")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

func connectAndPass(sock string, parent *os.File) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
		return fmt.Errorf("connect %s: %w", sock, err)
	}
	// Wait for the server's first HTTP/2 frame without consuming it: it is
	// sent after the handshake, so the server has read our credentials
	// while we are alive.
	if _, _, err := unix.Recvfrom(fd, make([]byte, 1), unix.MSG_PEEK); err != nil {
		return fmt.Errorf("peek: %w", err)
	}
	return unix.Sendmsg(int(parent.Fd()), []byte{0}, unix.UnixRights(fd), nil, 0)
}

// connectFromChild runs a child that connects to sock and exits; it returns
// the child's PID and its connection, now held by this process.
func connectFromChild(t *testing.T, sock string) (int, net.Conn) {
	t.Helper()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	mine, theirs := os.NewFile(uintptr(pair[0]), "mine"), os.NewFile(uintptr(pair[1]), "theirs")
	defer mine.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperConnectAndExit$")
	cmd.Env = append(os.Environ(), helperEnv+"="+sock)
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	theirs.Close()
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(int(mine.Fd()), buf, oob, 0)
	if err != nil {
		t.Fatalf("receive the child's connection: %v", err)
	}
	// The child is gone (and reaped) before its connection is used.
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("parse control message: %v (%d messages)", err, len(msgs))
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		t.Fatalf("parse rights: %v", err)
	}
	f := os.NewFile(uintptr(fds[0]), "conn")
	defer f.Close()
	conn, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid, conn
}

// reusePID starts a long-lived process (same user, so the same selectors)
// that gets pid, by setting the PID namespace's last allocated PID (root).
func reusePID(t *testing.T, pid int) {
	t.Helper()
	for range 50 {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0); err != nil {
			t.Skipf("cannot choose the next PID (needs root): %v", err)
		}
		cmd := exec.Command("sleep", "600")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if cmd.Process.Pid == pid {
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			return
		}
		cmd.Process.Kill()
		cmd.Wait()
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
			return // taken meanwhile by another process or thread: reused all the same
		}
	}
	t.Skipf("could not get pid %d reused", pid)
}

func fetchOver(t *testing.T, conn net.Conn) error {
	t.Helper()
	used := false
	cc, err := grpc.NewClient("passthrough:///workload",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) {
			if used {
				return nil, errors.New("the passed connection is spent")
			}
			used = true
			return conn, nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(withHeader(t.Context()), 20*time.Second)
	defer cancel()
	stream, err := workload.NewSpiffeWorkloadAPIClient(cc).FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		return err
	}
	_, err = stream.Recv()
	return err
}

// A process connects, passes the connection on and exits; its PID goes to
// another process, which the attestor would attest. The Workload API must
// not hand that process's identity to the connection.
func TestReusedPIDIsRefused(t *testing.T) {
	e := start(t)
	pid, conn := connectFromChild(t, e.socket)
	reusePID(t, pid)
	err := fetchOver(t, conn)
	wantCode(t, "FetchX509SVID over a reused PID", err, codes.PermissionDenied)
	if n := e.attestations.Load(); n != 1 {
		t.Errorf("%d attestations, want 1 (the PID's new owner was attested, then refused)", n)
	}
}

func TestExitedCallerIsRefused(t *testing.T) {
	e := start(t)
	_, conn := connectFromChild(t, e.socket)
	wantCode(t, "FetchX509SVID after the caller exited", fetchOver(t, conn), codes.PermissionDenied)
}
