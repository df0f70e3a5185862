package adminapi

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/signetid/signet/internal/ids"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/ca"
)

// DefaultSocket is where the server listens and the CLI dials by default.
const DefaultSocket = "/run/signet/server/admin.sock"

// Dial connects to the admin socket. The connection is local and vouched
// for by the kernel, so it carries no TLS.
func Dial(path string) (api.AdminServiceClient, io.Closer, error) {
	conn, err := dial(path)
	if err != nil {
		return nil, nil, err
	}
	return api.NewAdminServiceClient(conn), conn, nil
}

// dial returns a (lazy) connection to the admin socket.
func dial(path string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient("passthrough:///admin",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}))
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	return conn, nil
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
	if e.Downstream {
		fmt.Fprintf(w, "Downstream: true\n")
	}
	fmt.Fprintln(w)
}

// PrintFederationRelationship writes a federation relationship in the
// CLI's human-readable form, one `Name: value` line per field.
func PrintFederationRelationship(w io.Writer, r *api.FederationRelationship) {
	fmt.Fprintf(w, "Trust domain: %s\n", r.TrustDomain)
	fmt.Fprintf(w, "Bundle endpoint URL: %s\n", r.BundleEndpointUrl)
	fmt.Fprintf(w, "Bundle endpoint profile: %s\n", r.BundleEndpointProfile)
	if r.EndpointSpiffeId != "" {
		fmt.Fprintf(w, "Endpoint SPIFFE ID: %s\n", r.EndpointSpiffeId)
	}
	if r.Origin == api.RelationshipOrigin_RELATIONSHIP_ORIGIN_CONFIG {
		fmt.Fprintf(w, "Source: server.conf\n")
	} else {
		fmt.Fprintf(w, "Source: store\n")
		owner := r.Owner
		if owner == "" {
			owner = "operator"
		}
		fmt.Fprintf(w, "Owner: %s\n", owner)
		fmt.Fprintf(w, "Revision: %d\n", r.Revision)
		fmt.Fprintf(w, "Created at: %s\n", time.Unix(r.CreatedAt, 0).UTC().Format(time.RFC3339))
	}
	if r.Overridden {
		fmt.Fprintf(w, "Overridden by server.conf: true (not in force)\n")
	}
	if f := r.Refresh; f != nil {
		if f.LastSuccess != 0 {
			fmt.Fprintf(w, "Last refresh: %s\n", time.Unix(f.LastSuccess, 0).UTC().Format(time.RFC3339))
		} else {
			fmt.Fprintf(w, "Last refresh: none since the server started\n")
		}
		if f.ConsecutiveFailures > 0 {
			fmt.Fprintf(w, "Refresh failing: %d attempts in a row, last: %s\n", f.ConsecutiveFailures, f.LastError)
		}
	}
	fmt.Fprintln(w)
}

// RelationshipJSON is a federation relationship as the CLI's --output json
// prints it; source is "server.conf" or "store", times Unix seconds.
type RelationshipJSON struct {
	TrustDomain           string `json:"trust_domain"`
	BundleEndpointURL     string `json:"bundle_endpoint_url"`
	BundleEndpointProfile string `json:"bundle_endpoint_profile"`
	EndpointSPIFFEID      string `json:"endpoint_spiffe_id"`
	Source                string `json:"source"`
	Owner                 string `json:"owner"`
	Revision              int64  `json:"revision"`
	CreatedAt             int64  `json:"created_at"`
	Overridden            bool   `json:"overridden"`
	// Refresh is how fetching the bundle goes on the server that answered;
	// absent before its first fetch and when not in force.
	Refresh *RefreshJSON `json:"refresh,omitempty"`
}

// RefreshJSON is a BundleRefreshStatus as the CLI prints it.
type RefreshJSON struct {
	LastSuccess         int64  `json:"last_success"`
	Failures            uint64 `json:"failures"`
	ConsecutiveFailures uint64 `json:"consecutive_failures"`
	LastError           string `json:"last_error,omitempty"`
}

// RelationshipToJSON is r in the JSON the CLI prints.
func RelationshipToJSON(r *api.FederationRelationship) RelationshipJSON {
	source := "store"
	if r.Origin == api.RelationshipOrigin_RELATIONSHIP_ORIGIN_CONFIG {
		source = "server.conf"
	}
	j := RelationshipJSON{TrustDomain: r.TrustDomain, BundleEndpointURL: r.BundleEndpointUrl, BundleEndpointProfile: r.BundleEndpointProfile,
		EndpointSPIFFEID: r.EndpointSpiffeId, Source: source, Owner: r.Owner, Revision: r.Revision, CreatedAt: r.CreatedAt, Overridden: r.Overridden}
	if f := r.Refresh; f != nil {
		j.Refresh = &RefreshJSON{LastSuccess: f.LastSuccess, Failures: f.Failures, ConsecutiveFailures: f.ConsecutiveFailures, LastError: f.LastError}
	}
	return j
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
	if format != "pem" && format != "spiffe" && format != "" {
		return nil, fmt.Errorf("bundle format %q: want pem or spiffe", format)
	}
	sb, err := BundleFromProto(b)
	if err != nil {
		return nil, err
	}
	if format == "spiffe" {
		doc, err := ca.MarshalBundleJSON(sb)
		if err != nil {
			return nil, err
		}
		return append(doc, '\n'), nil
	}
	return ca.MarshalBundlePEM(sb), nil
}

// BundleFromProto parses an API bundle (checking every authority) into a
// SPIFFE bundle.
func BundleFromProto(b *api.Bundle) (*spiffebundle.Bundle, error) {
	td, err := ids.ParseTrustDomain(b.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("bundle trust domain: %w", err)
	}
	auths := make([]ca.Authority, 0, len(b.X509Authorities)+len(b.JwtAuthorities))
	for _, der := range b.X509Authorities {
		auths = append(auths, ca.Authority{Kind: ca.KindX509, Data: der})
	}
	for _, k := range b.JwtAuthorities {
		auths = append(auths, ca.Authority{Kind: ca.KindJWT, KeyID: k.KeyId, Data: k.PublicKey})
	}
	return ca.NewBundle(td, auths, uint64(max(b.Sequence, 0)), time.Duration(max(b.RefreshHintSeconds, 0))*time.Second)
}
