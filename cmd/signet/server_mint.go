package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/signetid/signet/internal/atomicfile"
	"github.com/signetid/signet/internal/ids"
	"github.com/signetid/signet/server/adminapi"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/registry"
)

// newServerX509Cmd is `signet server x509 mint` (SPIRE's): an X509-SVID,
// its key made here, and the bundle, for a workload no agent serves.
func newServerX509Cmd() *cobra.Command {
	var spiffeID, writeDir string
	var dns []string
	var ttl time.Duration
	mint := newAdminCmd("mint", "Mint an X509-SVID for any workload ID (the key is made here and never leaves this host); prints or writes SVID, key and bundle",
		func(*cobra.Command) error {
			if err := checkMint(spiffeID, ttl); err != nil {
				return err
			}
			return makeWriteDir(writeDir, writeDir)
		},
		func(ctx context.Context, c api.AdminServiceClient, w io.Writer, out *outputFlag) error {
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				return err
			}
			csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
			if err != nil {
				return err
			}
			resp, err := c.MintX509SVID(ctx, &api.MintX509SVIDRequest{SpiffeId: spiffeID, Csr: csr, TtlSeconds: int32(ttl / time.Second), DnsNames: dns})
			if err != nil {
				return err
			}
			bundle, err := c.GetBundle(ctx, &api.GetBundleRequest{})
			if err != nil {
				return err
			}
			bundlePEM, err := adminapi.MarshalBundle(bundle, "pem")
			if err != nil {
				return err
			}
			keyDER, err := x509.MarshalPKCS8PrivateKey(key)
			if err != nil {
				return err
			}
			var chainPEM []byte
			for _, der := range resp.Chain {
				chainPEM = append(chainPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
			}
			keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
			expires := time.Unix(resp.ExpiresAt, 0).UTC()
			if !out.json() {
				noteShortened(w, ttl, expires, "CA")
			}
			if writeDir != "" {
				return writeMinted(w, writeDir, expires, []mintedFile{
					{"key.pem", keyPEM, 0o600}, {"svid.pem", chainPEM, 0o644}, {"bundle.pem", bundlePEM, 0o644}})
			}
			if out.json() {
				return writeJSON(w, struct {
					SPIFFEID  string `json:"spiffe_id"`
					ExpiresAt int64  `json:"expires_at"`
					SVID      string `json:"svid_pem"`
					Key       string `json:"key_pem"`
					Bundle    string `json:"bundle_pem"`
				}{spiffeID, resp.ExpiresAt, string(chainPEM), string(keyPEM), string(bundlePEM)})
			}
			fmt.Fprintf(w, "X509-SVID (expires %s):\n%s\nPrivate key:\n%s\nRoot CAs:\n%s", expires.Format(time.RFC3339), chainPEM, keyPEM, bundlePEM)
			return nil
		})
	f := mint.Flags()
	f.StringVar(&spiffeID, "spiffe-id", "", "the SVID's SPIFFE ID (a workload ID of this trust domain); required")
	f.StringArrayVar(&dns, "dns", nil, "DNS SAN (repeatable; the first is also the subject's CN)")
	f.DurationVar(&ttl, "ttl", 0, "lifetime (default: the server's X509-SVID TTL; at most 720h, and never past the CA's)")
	f.StringVar(&writeDir, "write", "", "write svid.pem, key.pem (0600) and bundle.pem into this directory, each atomically, instead of printing them")
	cmd := &cobra.Command{Use: "x509", Short: "X509-SVIDs minted by hand, for workloads no agent serves"}
	cmd.AddCommand(mint)
	return cmd
}

// newServerJWTCmd is `signet server jwt mint` (SPIRE's).
func newServerJWTCmd() *cobra.Command {
	var spiffeID, writeFile string
	var audience []string
	var ttl time.Duration
	mint := newAdminCmd("mint", "Mint a JWT-SVID for any workload ID; prints or writes the token",
		func(*cobra.Command) error {
			if len(audience) == 0 {
				return fmt.Errorf("--audience is required (repeatable)")
			}
			if err := checkMint(spiffeID, ttl); err != nil {
				return err
			}
			return makeWriteDir(writeFile, filepath.Dir(writeFile))
		},
		func(ctx context.Context, c api.AdminServiceClient, w io.Writer, out *outputFlag) error {
			resp, err := c.MintJWT(ctx, &api.MintJWTRequest{SpiffeId: spiffeID, Audience: audience, TtlSeconds: int32(ttl / time.Second)})
			if err != nil {
				return err
			}
			expires := time.Unix(resp.ExpiresAt, 0).UTC()
			if !out.json() && writeFile != "" {
				noteShortened(w, ttl, expires, "JWT signing key")
			}
			if writeFile != "" {
				return writeMinted(w, filepath.Dir(writeFile), expires, []mintedFile{{filepath.Base(writeFile), []byte(resp.Token), 0o600}})
			}
			if out.json() {
				return writeJSON(w, struct {
					Token     string `json:"token"`
					SPIFFEID  string `json:"spiffe_id"`
					ExpiresAt int64  `json:"expires_at"`
				}{resp.Token, spiffeID, resp.ExpiresAt})
			}
			fmt.Fprintln(w, resp.Token)
			return nil
		})
	f := mint.Flags()
	f.StringVar(&spiffeID, "spiffe-id", "", "the token's subject (a workload ID of this trust domain); required")
	f.StringArrayVar(&audience, "audience", nil, "audience (repeatable); required")
	f.DurationVar(&ttl, "ttl", 0, "lifetime (default: the server's JWT-SVID TTL; never past the signing key's)")
	f.StringVar(&writeFile, "write", "", "write the token to this file (0600, atomically) instead of printing it")
	cmd := &cobra.Command{Use: "jwt", Short: "JWT-SVIDs minted by hand, for workloads no agent serves"}
	cmd.AddCommand(mint)
	return cmd
}

// checkMint vets the flags both mints share before anything is sent.
func checkMint(spiffeID string, ttl time.Duration) error {
	if spiffeID == "" {
		return fmt.Errorf("--spiffe-id is required")
	}
	if _, err := ids.ParseWorkloadID(spiffeID); err != nil {
		return fmt.Errorf("--spiffe-id: %w", err)
	}
	// Checked here too: the request carries seconds as an int32, which a
	// longer TTL would wrap to a short one.
	if ttl < 0 || ttl%time.Second != 0 || ttl > registry.MaxTTL {
		return fmt.Errorf("--ttl %s: want a whole number of seconds up to %s (0: the server's default)", ttl, registry.MaxTTL)
	}
	return nil
}

// makeWriteDir makes the --write directory, as agent api fetch x509
// --write does, before anything is minted: a place that cannot take the
// files is refused naming it, not after the mint naming a temporary file.
func makeWriteDir(flag, dir string) error {
	if flag == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("--write %s: %w", flag, err)
	}
	return nil
}

type mintedFile struct {
	name string
	data []byte
	perm os.FileMode
}

// writeMinted writes each file atomically, with its own mode whatever the
// file it replaces had (atomicfile), and says where. Files are replaced
// one by one: a crash between two leaves a new key beside an old
// certificate, so mint again.
func writeMinted(w io.Writer, dir string, expires time.Time, files []mintedFile) error {
	var names []string
	for _, f := range files {
		path := filepath.Join(dir, f.name)
		if err := atomicfile.Write(path, f.data, f.perm); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		names = append(names, path)
	}
	fmt.Fprintf(w, "Wrote %s (expires %s)\n", strings.Join(names, ", "), expires.Format(time.RFC3339))
	return nil
}

// noteShortened says so when the signer's own expiry cut the --ttl asked.
func noteShortened(w io.Writer, ttl time.Duration, expires time.Time, signer string) {
	if ttl > 0 && time.Until(expires) < ttl-time.Minute {
		fmt.Fprintf(w, "# the %s expires first: the SVID expires at %s, sooner than --ttl %s\n", signer, expires.Format(time.RFC3339), ttl)
	}
}
