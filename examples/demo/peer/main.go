// Command peer is the demo workload: a go-spiffe v2 program that gets its
// identity from the Workload API and either serves or dials mutual TLS,
// authorizing exactly one peer SPIFFE ID. It knows nothing about Signet.
//
//	peer serve --addr 127.0.0.1:8443 --id spiffe://example.org/demo/server --allow spiffe://example.org/demo/client
//	peer dial  --addr 127.0.0.1:8443 --id spiffe://example.org/demo/client --server-id spiffe://example.org/demo/server
//
// The socket comes from SPIFFE_ENDPOINT_SOCKET.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: peer serve|dial [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:8443", "address to serve on or dial")
	self := fs.String("id", "", "this workload's SPIFFE ID (picked among its SVIDs)")
	peer := fs.String("allow", "", "serve: the only client ID allowed")
	serverID := fs.String("server-id", "", "dial: the server ID to accept")
	_ = fs.Parse(os.Args[2:])

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(ctx, *addr, *self, *peer)
	case "dial":
		err = dial(ctx, *addr, *self, *serverID)
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// source opens an X509Source whose default SVID is the one named self.
func source(ctx context.Context, self string) (*workloadapi.X509Source, error) {
	want, err := spiffeid.FromString(self)
	if err != nil {
		return nil, fmt.Errorf("--id: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithDefaultX509SVIDPicker(func(svids []*x509svid.SVID) *x509svid.SVID {
		for _, s := range svids {
			if s.ID == want {
				return s
			}
		}
		return svids[0]
	}))
	if err != nil {
		return nil, fmt.Errorf("fetch identity from the Workload API: %w", err)
	}
	svid, err := src.GetX509SVID()
	if err != nil {
		src.Close()
		return nil, err
	}
	if svid.ID != want {
		src.Close()
		return nil, fmt.Errorf("the Workload API gave this process %s, not %s", svid.ID, want)
	}
	return src, nil
}

func serve(ctx context.Context, addr, self, allow string) error {
	allowed, err := spiffeid.FromString(allow)
	if err != nil {
		return fmt.Errorf("--allow: %w", err)
	}
	src, err := source(ctx, self)
	if err != nil {
		return err
	}
	defer src.Close()
	ln, err := spiffetls.ListenWithMode(ctx, "tcp", addr, spiffetls.MTLSServerWithSource(tlsconfig.AuthorizeID(allowed), src))
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); ln.Close() }()
	fmt.Printf("server %s listening on %s, accepting only %s\n", self, addr, allowed)
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go handle(conn)
	}
}

func handle(conn net.Conn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		// The handshake runs on first read: an unauthorized client fails here.
		fmt.Printf("server refused a connection: %v\n", err)
		return
	}
	id, err := spiffetls.PeerIDFromConn(conn)
	if err != nil {
		fmt.Printf("server: no peer ID: %v\n", err)
		return
	}
	fmt.Printf("server accepted %s, who said %q\n", id, strings.TrimSpace(line))
	fmt.Fprintf(conn, "hello %s, I am the server\n", id)
}

func dial(ctx context.Context, addr, self, server string) error {
	serverID, err := spiffeid.FromString(server)
	if err != nil {
		return fmt.Errorf("--server-id: %w", err)
	}
	src, err := source(ctx, self)
	if err != nil {
		return err
	}
	defer src.Close()
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := spiffetls.DialWithMode(dctx, "tcp", addr, spiffetls.MTLSClientWithSource(tlsconfig.AuthorizeID(serverID), src))
	if err != nil {
		return fmt.Errorf("connect as %s: %w", self, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(conn, "hi, I am %s\n", self); err != nil {
		return fmt.Errorf("send as %s: %w", self, err)
	}
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("mutual TLS as %s was refused: %w", self, errors.Unwrap(err))
	}
	fmt.Printf("client %s verified the server is %s; it replied %q\n", self, serverID, strings.TrimSpace(reply))
	return nil
}
