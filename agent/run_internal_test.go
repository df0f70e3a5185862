package agent

import (
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Only a refused server certificate ends a first start; a handshake cut
// short is an unreachable server, retried.
func TestUntrustedServer(t *testing.T) {
	handshake := func(reason string) error {
		return status.Error(codes.Unavailable, `connection error: desc = "transport: authentication handshake failed: `+reason+`"`)
	}
	tests := []struct {
		err       error
		untrusted bool
		reason    string
	}{
		{handshake(`x509svid: could not get X509 bundle: no bundle for trust domain \"example.org\"`), true, `x509svid: could not get X509 bundle: no bundle for trust domain "example.org"`},
		{handshake(`x509svid: could not verify leaf certificate: x509: certificate signed by unknown authority`), true, "x509svid: could not verify leaf certificate: x509: certificate signed by unknown authority"},
		{handshake(`unexpected ID "spiffe://example.org/other"`), true, `unexpected ID "spiffe://example.org/other"`},
		{handshake("EOF"), false, ""},
		{handshake("read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer"), false, ""},
		{handshake("context deadline exceeded"), false, ""},
		{status.Error(codes.Unavailable, "connection error: desc = \"transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused\""), false, ""},
		{errors.New("join token is unknown or already used"), false, ""},
	}
	for _, tt := range tests {
		reason, ok := untrustedServer(tt.err)
		if ok != tt.untrusted || reason != tt.reason {
			t.Errorf("untrustedServer(%v) = %q, %v; want %q, %v", tt.err, reason, ok, tt.reason, tt.untrusted)
		}
	}
}
