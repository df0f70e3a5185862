package apicli

import (
	"context"
	"crypto/x509"
	"encoding/json"
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
	// In is read for a token given as "-". Default os.Stdin.
	In io.Reader
	// Timeout bounds one-shot calls (not Watch). Default 5s.
	Timeout time.Duration
	// JSON prints fetch results as one JSON document (SPIRE's -output
	// json), for scripts.
	JSON bool
}

func (o Options) withDefaults() Options {
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Err == nil {
		o.Err = os.Stderr
	}
	if o.In == nil {
		o.In = os.Stdin
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	return o
}

func newClient(ctx context.Context, o Options) (*workloadapi.Client, error) {
	c, err := workloadapi.New(ctx, workloadapi.WithAddr(o.Addr))
	if err != nil {
		return nil, fmt.Errorf("workload API client: %w", err)
	}
	return c, nil
}

// oneShot runs call with a Workload API client, the whole bounded by
// o.Timeout.
func oneShot(ctx context.Context, o Options, call func(context.Context, *workloadapi.Client) error) error {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	c, err := newClient(ctx, o)
	if err != nil {
		return err
	}
	defer c.Close()
	return call(ctx, c)
}

// FetchX509 prints every X509-SVID the caller holds and, if writeDir is
// set, writes them there as SPIRE's CLI does: svid.N.pem (chain),
// svid.N.key (PKCS#8, 0600), bundle.N.pem (the SVID's trust domain roots)
// and federated_bundle.N.M.pem (other trust domains, by name).
func FetchX509(ctx context.Context, o Options, writeDir string) error {
	o = o.withDefaults()
	var x *workloadapi.X509Context
	err := oneShot(ctx, o, func(ctx context.Context, c *workloadapi.Client) (err error) {
		x, err = c.FetchX509Context(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("fetch X509-SVIDs from %s: %w", o.Addr, explain(err))
	}
	if o.JSON {
		if err := printX509JSON(o.Out, x); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(o.Out, "Received %d SVID(s)\n", len(x.SVIDs))
		printSVIDs(o.Out, x.SVIDs)
	}
	if writeDir == "" {
		return nil
	}
	for i, svid := range x.SVIDs {
		if err := writeSVID(writeDir, i, svid, x.Bundles); err != nil {
			return err
		}
	}
	if !o.JSON {
		fmt.Fprintf(o.Out, "Wrote %d SVID(s) to %s\n", len(x.SVIDs), writeDir)
	}
	return nil
}

// printX509JSON prints what the caller holds, never a key: {"svids":
// [{spiffe_id, hint, serial, not_before, not_after, dns_names}],
// "bundles": [{trust_domain, x509_authorities}]}, times as Unix seconds.
func printX509JSON(w io.Writer, x *workloadapi.X509Context) error {
	type svidJSON struct {
		SPIFFEID  string   `json:"spiffe_id"`
		Hint      string   `json:"hint"`
		Serial    string   `json:"serial"`
		NotBefore int64    `json:"not_before"`
		NotAfter  int64    `json:"not_after"`
		DNSNames  []string `json:"dns_names"`
	}
	type bundleJSON struct {
		TrustDomain     string `json:"trust_domain"`
		X509Authorities int    `json:"x509_authorities"`
	}
	doc := struct {
		SVIDs   []svidJSON   `json:"svids"`
		Bundles []bundleJSON `json:"bundles"`
	}{[]svidJSON{}, []bundleJSON{}}
	for _, s := range x.SVIDs {
		leaf := s.Certificates[0]
		doc.SVIDs = append(doc.SVIDs, svidJSON{SPIFFEID: s.ID.String(), Hint: s.Hint, Serial: leaf.SerialNumber.Text(16),
			NotBefore: leaf.NotBefore.Unix(), NotAfter: leaf.NotAfter.Unix(), DNSNames: append([]string{}, leaf.DNSNames...)})
	}
	for _, b := range x.Bundles.Bundles() {
		doc.Bundles = append(doc.Bundles, bundleJSON{TrustDomain: b.TrustDomain().Name(), X509Authorities: len(b.X509Authorities())})
	}
	return writeJSON(w, doc)
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
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
	var svids []*jwtsvid.SVID
	err := oneShot(ctx, o, func(ctx context.Context, c *workloadapi.Client) (err error) {
		svids, err = c.FetchJWTSVIDs(ctx, params)
		return err
	})
	if err != nil {
		return fmt.Errorf("fetch JWT-SVIDs from %s: %w", o.Addr, explain(err))
	}
	if o.JSON {
		type tokenJSON struct {
			SPIFFEID  string   `json:"spiffe_id"`
			Hint      string   `json:"hint"`
			Audience  []string `json:"audience"`
			ExpiresAt int64    `json:"expires_at"`
			Token     string   `json:"token"`
		}
		doc := struct {
			SVIDs []tokenJSON `json:"svids"`
		}{[]tokenJSON{}}
		for _, s := range svids {
			doc.SVIDs = append(doc.SVIDs, tokenJSON{SPIFFEID: s.ID.String(), Hint: s.Hint, Audience: s.Audience, ExpiresAt: s.Expiry.Unix(), Token: s.Marshal()})
		}
		return writeJSON(o.Out, doc)
	}
	for _, s := range svids {
		fmt.Fprintln(o.Out, s.Marshal())
	}
	return nil
}

// ValidateJWT asks the Workload API whether token is a valid JWT-SVID for
// audience (signed by a trust domain the caller trusts, not expired) and
// prints its SPIFFE ID and claims (JSON, keys sorted), as SPIRE's
// `api validate jwt` does. token "-" is read from o.In, so that it need not
// appear on a command line. A token that is not valid is an error saying
// why; the token itself is never repeated.
func ValidateJWT(ctx context.Context, o Options, audience, token string) error {
	o = o.withDefaults()
	if audience == "" {
		return errors.New("an audience is required (--audience)")
	}
	if token == "-" {
		var err error
		if token, err = readToken(o.In); err != nil {
			return err
		}
	}
	if token == "" {
		return errors.New("a token is required (--svid TOKEN, or --svid - to read it from stdin)")
	}
	var svid *jwtsvid.SVID
	err := oneShot(ctx, o, func(ctx context.Context, c *workloadapi.Client) (err error) {
		svid, err = c.ValidateJWTSVID(ctx, token, audience)
		return err
	})
	if err != nil {
		return fmt.Errorf("validate JWT-SVID with %s: %w", o.Addr, explain(err))
	}
	claims, err := json.Marshal(svid.Claims) // maps marshal with sorted keys
	if err != nil {
		return fmt.Errorf("encode the claims of %s: %w", svid.ID, err)
	}
	fmt.Fprintf(o.Out, "SVID is valid.\nSPIFFE ID : %s\nClaims    : %s\n", svid.ID, claims)
	return nil
}

// maxTokenBytes bounds what readToken reads: JWT-SVIDs are well under 8 KiB.
const maxTokenBytes = 64 << 10

// readToken reads one token from r: its only line, surrounding white space
// trimmed (what `fetch jwt` prints for one identity).
func readToken(r io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxTokenBytes+1))
	if err != nil {
		return "", fmt.Errorf("read the token from stdin: %w", err)
	}
	if len(b) > maxTokenBytes {
		return "", fmt.Errorf("stdin holds more than %d KiB: not a JWT-SVID", maxTokenBytes>>10)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", errors.New("no token on stdin (--svid -)")
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return "", errors.New("stdin holds more than one word: give one token (fetch jwt prints one per identity; pick one, or use its --spiffe-id)")
	}
	return tok, nil
}

// Watch prints the caller's X509-SVIDs now and on every update until ctx
// ends. Errors are printed and the watch retried (go-spiffe's backoff);
// only a refused request (InvalidArgument) ends it with an error.
func Watch(ctx context.Context, o Options) error {
	o = o.withDefaults()
	c, err := newClient(ctx, o)
	if err != nil {
		return fmt.Errorf("watch %s: %w", o.Addr, err)
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
	err := oneShot(ctx, o, func(ctx context.Context, c *workloadapi.Client) error {
		_, err := c.FetchX509SVID(ctx)
		return err
	})
	if err != nil && status.Code(err) != codes.PermissionDenied {
		return fmt.Errorf("workload API at %s is unhealthy: %w", o.Addr, explain(err))
	}
	fmt.Fprintln(o.Out, "Agent is healthy.")
	return nil
}
