package peercred

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// AuthType is what Info.AuthType returns.
const AuthType = "peercred"

// Info is the AuthInfo of a connection accepted with Credentials: the
// credentials of the peer process as the kernel recorded them when it
// connected.
type Info struct {
	credentials.CommonAuthInfo
	PID int32
	UID uint32
	GID uint32
	// StartTime is the start time of process PID (field 22 of
	// /proc/PID/stat, clock ticks after boot) read when the connection was
	// accepted. It tells the process that connected from a later one given
	// the same PID: see SameProcess.
	StartTime uint64
	// StartTimeErr is why StartTime could not be read (the process had
	// already exited, or lives in another PID namespace); nil when it was.
	StartTimeErr error
	// pidfd is the kernel's handle on the very process that connected
	// (SO_PEERPIDFD, Linux 6.5+), nil where unsupported. It tells a live
	// process from a reused PID without the start time's 10 ms granularity.
	pidfd *pidFD
	// pidfdErr is why a kernel that offers SO_PEERPIDFD gave no pidfd (the
	// peer was already reaped, or the agent is out of descriptors): the
	// start time is no safe fallback then, so SameProcess refuses.
	pidfdErr error
}

// pidFD is a pidfd closed when its connection closes. The lock keeps a
// handler still running from signalling a closed (and perhaps reused)
// descriptor number.
type pidFD struct {
	mu     sync.Mutex
	fd     int
	closed bool
}

func (p *pidFD) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		unix.Close(p.fd)
		p.closed = true
	}
}

// alive asks the kernel whether the process lives: known is false once the
// descriptor is closed (the caller falls back to the start time).
func (p *pidFD) alive() (alive, known bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false, false
	}
	// Signal 0 only asks; EPERM (another user's process, for an
	// unprivileged agent) means it lives.
	switch err := unix.PidfdSendSignal(p.fd, 0, nil, 0); {
	case err == nil, errors.Is(err, unix.EPERM):
		return true, true
	case errors.Is(err, unix.ESRCH):
		return false, true
	}
	return false, false
}

// pidfdConn closes the peer's pidfd with the connection.
type pidfdConn struct {
	net.Conn
	pidfd *pidFD
}

func (c *pidfdConn) Close() error {
	c.pidfd.close()
	return c.Conn.Close()
}

// AuthType implements credentials.AuthInfo.
func (Info) AuthType() string { return AuthType }

// SameProcess reports whether process PID is still the one that connected:
// the kernel records the PID at connect, and a process can connect, hand the
// connection to another and exit, so that the PID is later reused by a
// process with another identity. It fails when the start time was not known
// at accept, when it cannot be read now, or when it changed.
//
// It cannot see an exec: a process that connects, passes the socket to a
// child and then execs another binary keeps its PID and start time, so the
// child's calls are attested as that binary (SPIRE's unix attestor shares
// this limit). Entries should therefore not rest on unix:path or unix:sha256
// alone; pair them with a uid or gid the untrusted process does not have.
func (i Info) SameProcess() error {
	if i.pidfdErr != nil {
		return fmt.Errorf("peercred: pid %d: %w", i.PID, i.pidfdErr)
	}
	if i.pidfd != nil {
		// A live process keeps its PID, so /proc/PID is still its.
		switch alive, known := i.pidfd.alive(); {
		case known && alive:
			return nil
		case known:
			return fmt.Errorf("peercred: pid %d: the process that connected has exited (its PID may have been reused)", i.PID)
		}
	}
	now, err := ProcStartTime(i.PID)
	return sameProcess(i, now, err)
}

func sameProcess(i Info, now uint64, nowErr error) error {
	if i.StartTimeErr != nil {
		return fmt.Errorf("peercred: pid %d: start time unknown at accept: %w", i.PID, i.StartTimeErr)
	}
	if nowErr != nil {
		return fmt.Errorf("peercred: pid %d: the process that connected is gone: %w", i.PID, nowErr)
	}
	if now != i.StartTime {
		return fmt.Errorf("peercred: pid %d was reused: it started at %d when the connection was accepted, now at %d", i.PID, i.StartTime, now)
	}
	return nil
}

// ProcStartTime returns the start time of process pid from /proc.
func ProcStartTime(pid int32) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("read start time: %w", err)
	}
	return ParseStartTime(b)
}

// ParseStartTime returns the start time (field 22) of a /proc/PID/stat file.
func ParseStartTime(stat []byte) (uint64, error) {
	// The command name (field 2) is in parentheses and may hold spaces and
	// parentheses itself; fields after the last ')' are plain.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("parse stat: no command name")
	}
	fields := strings.Fields(string(stat[i+1:]))
	const idx = 22 - 3 // fields[0] is field 3 (state)
	if len(fields) <= idx {
		return 0, fmt.Errorf("parse stat: %d fields after the command name, want more than %d", len(fields), idx)
	}
	v, err := strconv.ParseUint(fields[idx], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse stat start time: %w", err)
	}
	return v, nil
}

// ErrNoPeerCred means the context's connection was not made through
// Credentials (or holds no peer at all).
var ErrNoPeerCred = errors.New("peercred: no peer credentials on the connection")

// FromContext returns the peer credentials of the gRPC call in ctx.
func FromContext(ctx context.Context) (Info, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Info{}, ErrNoPeerCred
	}
	info, ok := p.AuthInfo.(Info)
	if !ok {
		return Info{}, ErrNoPeerCred
	}
	return info, nil
}

// Credentials returns transport credentials that read SO_PEERCRED from every
// Unix socket connection. Connections of any other kind fail the handshake.
func Credentials() credentials.TransportCredentials { return creds{} }

type creds struct{}

func (creds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	info, err := readWithPidfd(conn)
	if err != nil {
		return nil, nil, err
	}
	if info.pidfd != nil {
		return &pidfdConn{Conn: conn, pidfd: info.pidfd}, info, nil
	}
	return conn, info, nil
}

// ClientHandshake reads the credentials of the server process, so a client
// can check who it is talking to.
func (creds) ClientHandshake(_ context.Context, _ string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	info, err := Read(conn)
	if err != nil {
		return nil, nil, err
	}
	return conn, info, nil
}

func (creds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: AuthType}
}

func (c creds) Clone() credentials.TransportCredentials { return c }

func (creds) OverrideServerName(string) error { return nil }

// Read returns the kernel credentials of the process at the other end of a
// Unix socket connection, and that process's start time as it is now.
func Read(conn net.Conn) (Info, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return Info{}, fmt.Errorf("peercred: connection is %T, not a Unix socket", conn)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Info{}, fmt.Errorf("peercred: raw connection: %w", err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Info{}, fmt.Errorf("peercred: raw connection control: %w", err)
	}
	if credErr != nil {
		return Info{}, fmt.Errorf("peercred: getsockopt SO_PEERCRED: %w", credErr)
	}
	info := Info{
		// The kernel vouches for the peer; there is no transport security.
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity},
		PID:            cred.Pid,
		UID:            cred.Uid,
		GID:            cred.Gid,
	}
	// Not a handshake failure: the connection stays usable for callers that
	// need no identity, and SameProcess refuses the rest.
	if cred.Pid <= 0 {
		info.StartTimeErr = errors.New("no pid (is the peer in another PID namespace?)")
	} else {
		info.StartTime, info.StartTimeErr = ProcStartTime(cred.Pid)
	}
	return info, nil
}

// readWithPidfd is Read plus the peer's pidfd where the kernel offers one;
// the caller closes it with the connection.
func readWithPidfd(conn net.Conn) (Info, error) {
	info, err := Read(conn)
	if err != nil || info.PID <= 0 {
		return info, err
	}
	raw, err := conn.(*net.UnixConn).SyscallConn()
	if err != nil {
		info.pidfdErr = fmt.Errorf("raw connection: %w", err)
		return info, nil
	}
	fd, fdErr := -1, error(nil)
	if err := raw.Control(func(s uintptr) {
		fd, fdErr = unix.GetsockoptInt(int(s), unix.SOL_SOCKET, unix.SO_PEERPIDFD)
	}); err != nil {
		info.pidfdErr = fmt.Errorf("raw connection control: %w", err)
		return info, nil
	}
	info.pidfd, info.pidfdErr = peerPidfd(fd, fdErr)
	return info, nil
}

// peerPidfd interprets getsockopt(SO_PEERPIDFD): the pidfd to keep; or
// neither pidfd nor error where the kernel predates the option (the start
// time check remains); or an error that makes SameProcess refuse.
//
// A kernel without the option (before 6.5) answers ENOPROTOOPT, as
// sk_getsockopt does for every SOL_SOCKET option it does not know; it never
// answers EINVAL for one. A kernel with it answers EINVAL (6.5 to 6.14,
// pidfd_prepare on a thread-group pid with no task left) or ESRCH (6.15,
// which reports reaped tasks so) when the peer has been reaped; 6.16 and
// later hand out a pidfd even then, and pidfd_send_signal says ESRCH. So
// the errno alone tells "unknown option" from "peer gone", without a
// startup probe. Any other error (EMFILE, ENOMEM, a seccomp filter's EPERM)
// refuses too: falling back to the start time would bring back the PID
// reuse race this option closes.
func peerPidfd(fd int, err error) (*pidFD, error) {
	switch {
	case err == nil && fd >= 0:
		return &pidFD{fd: fd}, nil
	case err == nil:
		return nil, fmt.Errorf("getsockopt SO_PEERPIDFD returned descriptor %d", fd)
	case errors.Is(err, unix.ENOPROTOOPT):
		return nil, nil
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ESRCH):
		return nil, fmt.Errorf("the process that connected has exited (its PID may have been reused): getsockopt SO_PEERPIDFD: %w", err)
	}
	return nil, fmt.Errorf("no pidfd for the process that connected: getsockopt SO_PEERPIDFD: %w", err)
}
