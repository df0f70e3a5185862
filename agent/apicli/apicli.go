package apicli

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Options are shared by every command.
type Options struct {
	// Addr is the Workload API address (see ResolveAddr). Required.
	Addr string
	// Out receives the command's output; Err receives watch errors.
	// Defaults os.Stdout and os.Stderr.
	Out, Err io.Writer
	// Timeout bounds one-shot calls (not Watch). Default 5s.
	Timeout time.Duration
}

func (o Options) withDefaults() Options {
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Err == nil {
		o.Err = os.Stderr
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	return o
}

func newClient(ctx context.Context, o Options) (*workloadapi.Client, error) {
	c, err := workloadapi.New(ctx, workloadapi.WithAddr(o.Addr))
	if err != nil {
		return nil, fmt.Errorf("workload API client for %s: %w", o.Addr, err)
	}
	return c, nil
}

// FetchX509 prints every X509-SVID the caller holds and, if writeDir is
// set, writes them there as SPIRE's CLI does: svid.N.pem (chain),
// svid.N.key (PKCS#8, 0600), bundle.N.pem (the SVID's trust domain roots)
// and federated_bundle.N.M.pem (other trust domains, by name).
func FetchX509(ctx context.Context, o Options, writeDir string) error {
	o = o.withDefaults()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	c, err := newClient(ctx, o)
	if err != nil {
		return err
	}
	defer c.Close()
	x, err := c.FetchX509Context(ctx)
	if err != nil {
		return fmt.Errorf("fetch X509-SVIDs from %s: %w", o.Addr, explain(err))
	}
	fmt.Fprintf(o.Out, "Received %d SVID(s)\n", len(x.SVIDs))
	printSVIDs(o.Out, x.SVIDs)
	if writeDir == "" {
		return nil
	}
	for i, svid := range x.SVIDs {
		if err := writeSVID(writeDir, i, svid, x.Bundles); err != nil {
			return err
		}
	}
	fmt.Fprintf(o.Out, "Wrote %d SVID(s) to %s\n", len(x.SVIDs), writeDir)
	return nil
}

func printSVIDs(w io.Writer, svids []*x509svid.SVID) {
	for _, s := range svids {
		leaf := s.Certificates[0]
		fmt.Fprintf(w, "\nSPIFFE ID:    %s\n", s.ID)
		if s.Hint != "" {
			fmt.Fprintf(w, "Hint:         %s\n", s.Hint)
		}
		fmt.Fprintf(w, "Serial:       %s\n", leaf.SerialNumber.Text(16))
		fmt.Fprintf(w, "Valid until:  %s (in %s)\n", leaf.NotAfter.UTC().Format(time.RFC3339), time.Until(leaf.NotAfter).Round(time.Second))
	}
}

func writeSVID(dir string, i int, svid *x509svid.SVID, bundles *x509bundle.Set) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	certs, key, err := svid.Marshal()
	if err != nil {
		return fmt.Errorf("encode SVID %s: %w", svid.ID, err)
	}
	if err := writeFile(filepath.Join(dir, fmt.Sprintf("svid.%d.pem", i)), certs, 0o644); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, fmt.Sprintf("svid.%d.key", i)), key, 0o600); err != nil {
		return err
	}
	own, err := bundles.GetX509BundleForTrustDomain(svid.ID.TrustDomain())
	if err != nil {
		return fmt.Errorf("bundle for SVID %s: %w", svid.ID, err)
	}
	if err := writeFile(filepath.Join(dir, fmt.Sprintf("bundle.%d.pem", i)), pemCerts(own.X509Authorities()), 0o644); err != nil {
		return err
	}
	others := slices.DeleteFunc(bundles.Bundles(), func(b *x509bundle.Bundle) bool { return b.TrustDomain() == svid.ID.TrustDomain() })
	slices.SortFunc(others, func(a, b *x509bundle.Bundle) int {
		return strings.Compare(a.TrustDomain().Name(), b.TrustDomain().Name())
	})
	for j, b := range others {
		name := filepath.Join(dir, fmt.Sprintf("federated_bundle.%d.%d.pem", i, j))
		if err := writeFile(name, pemCerts(b.X509Authorities()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func pemCerts(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// writeFile replaces name atomically; the temporary file is created 0600,
// so a key is never readable by others, even briefly.
func writeFile(name string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	defer os.Remove(f.Name())
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Chmod(mode)
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(f.Name(), name)
	}
	if werr != nil {
		return fmt.Errorf("write %s: %w", name, werr)
	}
	return nil
}

// FetchJWT prints one JWT-SVID per line for the audiences (the first is
// the main one), for every identity the caller holds or only for spiffeID.
func FetchJWT(ctx context.Context, o Options, audiences []string, spiffeID string) error {
	o = o.withDefaults()
	if len(audiences) == 0 || audiences[0] == "" {
		return errors.New("an audience is required (--audience)")
	}
	params := jwtsvid.Params{Audience: audiences[0], ExtraAudiences: audiences[1:]}
	if spiffeID != "" {
		id, err := spiffeid.FromString(spiffeID)
		if err != nil {
			return fmt.Errorf("--spiffe-id %q: %w", spiffeID, err)
		}
		params.Subject = id
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	c, err := newClient(ctx, o)
	if err != nil {
		return err
	}
	defer c.Close()
	svids, err := c.FetchJWTSVIDs(ctx, params)
	if err != nil {
		return fmt.Errorf("fetch JWT-SVIDs from %s: %w", o.Addr, explain(err))
	}
	for _, s := range svids {
		fmt.Fprintln(o.Out, s.Marshal())
	}
	return nil
}

// Watch prints the caller's X509-SVIDs now and on every update until ctx
// ends. Errors are printed and the watch retried (go-spiffe's backoff);
// only a refused request (InvalidArgument) ends it with an error.
func Watch(ctx context.Context, o Options) error {
	o = o.withDefaults()
	c, err := newClient(ctx, o)
	if err != nil {
		return err
	}
	defer c.Close()
	err = c.WatchX509Context(ctx, &printer{o: o})
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("watch %s: %w", o.Addr, explain(err))
}

// explain turns a Workload API error into what a user can act on: gRPC's
// "rpc error: code = ... desc = connection error: ..." hides that the socket
// is missing or unreadable.
func explain(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	msg := st.Message()
	switch {
	case st.Code() == codes.Unavailable && strings.Contains(msg, "no such file or directory"):
		return errors.New("no socket there: is the agent running, and is --socket (or SPIFFE_ENDPOINT_SOCKET) right?")
	case st.Code() == codes.Unavailable && strings.Contains(msg, "connection refused"):
		return errors.New("nothing listens on that socket: is the agent running?")
	case st.Code() == codes.Unavailable && strings.Contains(msg, "permission denied"):
		return fmt.Errorf("permission denied opening the socket (uid %d): the agent's socket directory must be reachable by this user", os.Getuid())
	case st.Code() == codes.PermissionDenied:
		return fmt.Errorf("%s (%s: uid %d; register an entry whose selectors match this process)", msg, st.Code(), os.Getuid())
	}
	return fmt.Errorf("%s (%s)", msg, st.Code())
}

type printer struct{ o Options }

func (p *printer) OnX509ContextUpdate(x *workloadapi.X509Context) {
	var tds []string
	for _, b := range x.Bundles.Bundles() {
		tds = append(tds, b.TrustDomain().Name())
	}
	slices.Sort(tds)
	fmt.Fprintf(p.o.Out, "%s update: %d SVID(s), bundles for %s\n", time.Now().UTC().Format(time.RFC3339), len(x.SVIDs), strings.Join(tds, ", "))
	printSVIDs(p.o.Out, x.SVIDs)
	fmt.Fprintln(p.o.Out)
}

func (p *printer) OnX509ContextWatchError(err error) {
	if status.Code(err) != codes.Canceled {
		fmt.Fprintf(p.o.Err, "watch error (retrying): %v\n", err)
	}
}

// Healthcheck returns nil when the Workload API answers. An answer of
// PermissionDenied (no identity for this caller) counts: the agent is up.
func Healthcheck(ctx context.Context, o Options) error {
	o = o.withDefaults()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	c, err := newClient(ctx, o)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.FetchX509SVID(ctx); err != nil && status.Code(err) != codes.PermissionDenied {
		return fmt.Errorf("workload API at %s is unhealthy: %w", o.Addr, explain(err))
	}
	fmt.Fprintln(o.Out, "Agent is healthy.")
	return nil
}
