package peercred

import (
	"context"
	"errors"
	"fmt"
	"net"

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
}

// AuthType implements credentials.AuthInfo.
func (Info) AuthType() string { return AuthType }

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
	info, err := Read(conn)
	if err != nil {
		return nil, nil, err
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
// Unix socket connection.
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
	return Info{
		// The kernel vouches for the peer; there is no transport security.
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity},
		PID:            cred.Pid,
		UID:            cred.Uid,
		GID:            cred.Gid,
	}, nil
}
