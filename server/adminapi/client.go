package adminapi

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/signetid/signet/server/api"
)

// DefaultSocket is where the server listens and the CLI dials by default.
const DefaultSocket = "/run/signet/server/admin.sock"

// Dial connects to the admin socket. The connection is local and vouched
// for by the kernel, so it carries no TLS.
func Dial(path string) (api.AdminServiceClient, io.Closer, error) {
	conn, err := grpc.NewClient("passthrough:///admin",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}))
	if err != nil {
		return nil, nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	return api.NewAdminServiceClient(conn), conn, nil
}

// PrintEntry writes an entry in the CLI's human-readable form, one
// `Name: value` line per field; scripts rely on the `Entry ID: <id>` line.
func PrintEntry(w io.Writer, e *api.Entry) {
	fmt.Fprintf(w, "Entry ID: %s\n", e.Id)
	fmt.Fprintf(w, "SPIFFE ID: %s\n", e.SpiffeId)
	if e.Node {
		fmt.Fprintf(w, "Node alias: true\n")
	} else {
		fmt.Fprintf(w, "Parent ID: %s\n", e.ParentId)
	}
	fmt.Fprintf(w, "Revision: %d\n", e.Revision)
	fmt.Fprintf(w, "X509-SVID TTL: %s\n", ttl(e.X509TtlSeconds))
	fmt.Fprintf(w, "JWT-SVID TTL: %s\n", ttl(e.JwtTtlSeconds))
	if e.ExpiresAt != 0 {
		fmt.Fprintf(w, "Expires at: %s\n", time.Unix(e.ExpiresAt, 0).UTC().Format(time.RFC3339))
	}
	for _, s := range e.Selectors {
		fmt.Fprintf(w, "Selector: %s:%s\n", s.Type, s.Value)
	}
	for _, d := range e.DnsNames {
		fmt.Fprintf(w, "DNS name: %s\n", d)
	}
	if e.Hint != "" {
		fmt.Fprintf(w, "Hint: %s\n", e.Hint)
	}
	if len(e.FederatesWith) > 0 {
		fmt.Fprintf(w, "Federates with: %s\n", strings.Join(e.FederatesWith, ", "))
	}
	if e.Admin {
		fmt.Fprintf(w, "Admin: true\n")
	}
	fmt.Fprintln(w)
}

func ttl(sec int32) string {
	if sec == 0 {
		return "default"
	}
	return (time.Duration(sec) * time.Second).String()
}

// MarshalBundle renders a bundle as "pem" (X.509 roots, what agents'
// --trust-bundle reads) or "spiffe" (the SPIFFE bundle JWKS document).
func MarshalBundle(b *api.Bundle, format string) ([]byte, error) {
	switch format {
	case "pem", "":
		var out []byte
		for _, der := range b.X509Authorities {
			out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
		}
		return out, nil
	case "spiffe":
		td, err := spiffeid.TrustDomainFromString(b.TrustDomain)
		if err != nil {
			return nil, fmt.Errorf("bundle trust domain: %w", err)
		}
		sb := spiffebundle.New(td)
		for _, der := range b.X509Authorities {
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				return nil, fmt.Errorf("parse root: %w", err)
			}
			sb.AddX509Authority(cert)
		}
		for _, k := range b.JwtAuthorities {
			pub, err := x509.ParsePKIXPublicKey(k.PublicKey)
			if err != nil {
				return nil, fmt.Errorf("parse JWT key %s: %w", k.KeyId, err)
			}
			if err := sb.AddJWTAuthority(k.KeyId, pub); err != nil {
				return nil, fmt.Errorf("add JWT key %s: %w", k.KeyId, err)
			}
		}
		sb.SetSequenceNumber(uint64(b.Sequence))
		sb.SetRefreshHint(time.Duration(b.RefreshHintSeconds) * time.Second)
		doc, err := sb.Marshal()
		if err != nil {
			return nil, fmt.Errorf("marshal SPIFFE bundle: %w", err)
		}
		return append(doc, '\n'), nil
	}
	return nil, fmt.Errorf("bundle format %q: want pem or spiffe", format)
}
