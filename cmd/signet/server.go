package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/internal/ids"
	"github.com/signetid/signet/server"
	"github.com/signetid/signet/server/adminapi"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/ca"
)

func newServerCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "server", Short: "Identity server and CA of one trust domain"}
	cmd.AddCommand(newServerRunCmd(g), newEntryCmd(), newTokenCmd(), newBundleCmd(), newFederationCmd(), newServerAgentCmd(), newServerX509Cmd(), newServerJWTCmd(), newLocalAuthorityCmd(), newUpstreamAuthorityCmd(), newServerHealthcheckCmd(), newServerValidateCmd(), newServerLoggerCmd())
	return cmd
}

func newServerRunCmd(g *globals) *cobra.Command {
	var configPath string
	var fc server.FileConfig
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			file, err := serverFileConfig(cmd, configPath)
			if err != nil {
				return err
			}
			cfg, err := file.Resolve()
			if err != nil {
				return err
			}
			f := cmd.Flags()
			// The file's log_level and log_format, unless the flags say
			// otherwise.
			if file.LogLevel != "" && !f.Changed("log-level") {
				g.logLevel = file.LogLevel
			}
			if file.LogFormat != "" && !f.Changed("log-format") {
				g.logFormat = file.LogFormat
			}
			logger, err := g.logger()
			if err != nil {
				return err
			}
			cfg.LogLevel = g.level
			return server.Run(cmd.Context(), cfg, logger)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "HCL configuration file")
	f.StringVar(&fc.TrustDomain, "trust-domain", "", "trust domain, e.g. example.org")
	f.StringVar(&fc.DataDir, "data-dir", server.DefaultDataDir, "directory for the CA keys and the SQLite store")
	f.StringVar(&fc.Listen, "listen", server.DefaultListen, "agent API address (mutual TLS 1.3)")
	f.StringVar(&fc.AdminSocket, "admin-socket", server.DefaultAdminSocket, "admin API Unix socket")
	f.StringVar(&fc.Datastore, "datastore", "", "sqlite:///path/to.db or postgres://... (default <data-dir>/signet.db)")
	f.StringVar(&fc.SVIDTTL, "svid-ttl", server.DefaultSVIDTTL.String(), "default X509-SVID lifetime; the CA lives 6x longer")
	f.StringVar(&fc.JWTTTL, "jwt-ttl", server.DefaultJWTTTL.String(), "default JWT-SVID lifetime")
	f.StringVar(&fc.CATTL, "ca-ttl", "", "CA lifetime (default 6 x svid-ttl)")
	f.StringVar(&fc.HealthListen, "health-listen", "", "address for /live, /ready and /metrics (off when empty)")
	f.BoolVar(&fc.AuditLogEnabled, "audit-log", false, "write an audit record (type=audit, at INFO) for every admin API call and every attestation, renewal and signing (audit_log_enabled)")
	f.StringVar(&fc.JWTIssuer, "jwt-issuer", "", "iss claim of JWT-SVIDs, an https URL such as https://oidc.example.org (OIDC relying parties; empty: no iss)")
	f.StringVar(&fc.JWTKeyType, "jwt-key-type", string(ca.JWTKeyECP256), "type of new JWT signing keys: ec-p256 (ES256), ec-p384 (ES384), rsa-2048 or rsa-4096 (RS256, for relying parties such as Microsoft Entra ID that accept only RSA)")
	return cmd
}

// serverFileConfig reads the configuration file, if any, and lets the
// flags given on the command line override it.
func serverFileConfig(cmd *cobra.Command, configPath string) (server.FileConfig, error) {
	file := server.FileConfig{}
	if configPath != "" {
		var err error
		if file, err = server.LoadConfigFile(configPath); err != nil {
			return file, err
		}
	}
	f := cmd.Flags()
	for name, dst := range map[string]*string{
		"trust-domain": &file.TrustDomain, "data-dir": &file.DataDir, "listen": &file.Listen,
		"admin-socket": &file.AdminSocket, "datastore": &file.Datastore, "svid-ttl": &file.SVIDTTL,
		"jwt-ttl": &file.JWTTTL, "ca-ttl": &file.CATTL, "health-listen": &file.HealthListen,
		"jwt-issuer": &file.JWTIssuer, "jwt-key-type": &file.JWTKeyType,
	} {
		if f.Changed(name) {
			*dst, _ = f.GetString(name)
		}
	}
	if f.Changed("audit-log") {
		file.AuditLogEnabled, _ = f.GetBool("audit-log")
	}
	return file, nil
}

// adminFlags are the flags every admin CLI command shares.
type adminFlags struct{ socket string }

func (a *adminFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&a.socket, "admin-socket", adminapi.DefaultSocket, "server admin API socket")
}

// call dials the admin socket and runs fn with a bounded context.
func (a *adminFlags) call(ctx context.Context, fn func(context.Context, api.AdminServiceClient) error) error {
	client, closer, err := adminapi.Dial(a.socket)
	if err != nil {
		return err
	}
	defer closer.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := fn(ctx, client); err != nil {
		if st, ok := status.FromError(err); ok {
			// Unavailable is the server's own answer too (a federation
			// endpoint down): only a connection that never came up is
			// the socket's fault.
			if st.Code() == codes.Unavailable && !connected(closer) {
				if strings.Contains(st.Message(), "permission denied") {
					return fmt.Errorf("permission denied on the server's admin socket %s: run this as root or as the user the server runs as", a.socket)
				}
				return fmt.Errorf("cannot reach the server's admin socket %s (is `signet server run` up, and is --admin-socket right?): %s", a.socket, st.Message())
			}
			return fmt.Errorf("%s (%s)", st.Message(), st.Code())
		}
		return err
	}
	return nil
}

// connected says whether the admin connection is up, so an error came
// from the server rather than from reaching it.
func connected(conn io.Closer) bool {
	c, ok := conn.(interface{ GetState() connectivity.State })
	return ok && c.GetState() == connectivity.Ready
}

// outputFlag is --output pretty|json (SPIRE's -output): json prints one
// document on stdout, for scripts and jq.
type outputFlag struct{ format string }

func (o *outputFlag) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.format, "output", "pretty", "pretty or json")
}

// check refuses an unknown format before anything is sent.
func (o *outputFlag) check() error {
	if o.format != "pretty" && o.format != "json" {
		return fmt.Errorf("--output %q: want pretty or json", o.format)
	}
	return nil
}

func (o *outputFlag) json() bool { return o.format == "json" }

// newAdminCmd is an admin command with --admin-socket and --output: check
// vets its flags before anything is sent, then do runs with a client.
func newAdminCmd(use, short string, check func(*cobra.Command) error, do func(context.Context, api.AdminServiceClient, io.Writer, *outputFlag) error) *cobra.Command {
	var a adminFlags
	var out outputFlag
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := out.check(); err != nil {
				return err
			}
			if err := check(cmd); err != nil {
				return err
			}
			return a.call(cmd.Context(), func(ctx context.Context, c api.AdminServiceClient) error {
				return do(ctx, c, cmd.OutOrStdout(), &out)
			})
		},
	}
	a.add(cmd)
	out.add(cmd)
	return cmd
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

func newTokenCmd() *cobra.Command {
	var a adminFlags
	var out outputFlag
	var spiffeID string
	var ttl time.Duration
	gen := &cobra.Command{
		Use:   "generate",
		Short: "Generate a single-use join token; prints the token alone (--output json: with its agent ID and expiry)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := out.check(); err != nil {
				return err
			}
			if spiffeID != "" {
				if _, err := ids.ParseWorkloadID(spiffeID); err != nil {
					return fmt.Errorf("--spiffe-id: %w", err)
				}
			}
			return a.call(cmd.Context(), func(ctx context.Context, c api.AdminServiceClient) error {
				resp, err := c.CreateJoinToken(ctx, &api.CreateJoinTokenRequest{SpiffeId: spiffeID, TtlSeconds: int32(ttl / time.Second)})
				if err != nil {
					return err
				}
				if out.json() {
					return writeJSON(cmd.OutOrStdout(), struct {
						Token     string `json:"value"`
						AgentID   string `json:"agent_id"`
						ExpiresAt int64  `json:"expires_at"`
					}{resp.Token, resp.AgentId, resp.ExpiresAt})
				}
				fmt.Fprintln(cmd.OutOrStdout(), resp.Token)
				// On stderr, so $(signet server token generate) stays the token.
				fmt.Fprintf(cmd.ErrOrStderr(), "# the agent attesting with it will be %s (valid until %s)\n",
					resp.AgentId, time.Unix(resp.ExpiresAt, 0).UTC().Format(time.RFC3339))
				return nil
			})
		},
	}
	a.add(gen)
	out.add(gen)
	gen.Flags().StringVar(&spiffeID, "spiffe-id", "", "SPIFFE ID the agent takes (default spiffe://TD/agent/join_token/<token-id>)")
	gen.Flags().DurationVar(&ttl, "ttl", 10*time.Minute, "how long the token is valid")
	cmd := &cobra.Command{Use: "token", Short: "Join tokens for agent attestation"}
	cmd.AddCommand(gen)
	return cmd
}

func newBundleCmd() *cobra.Command {
	var a adminFlags
	var format string
	show := &cobra.Command{
		Use:   "show",
		Short: "Print the trust bundle (pem: X.509 roots for --trust-bundle; spiffe: the SPIFFE bundle document)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "pem" && format != "spiffe" {
				return fmt.Errorf("--format %q: want pem or spiffe", format)
			}
			return a.call(cmd.Context(), func(ctx context.Context, c api.AdminServiceClient) error {
				b, err := c.GetBundle(ctx, &api.GetBundleRequest{})
				if err != nil {
					return err
				}
				out, err := adminapi.MarshalBundle(b, format)
				if err != nil {
					return err
				}
				_, err = cmd.OutOrStdout().Write(out)
				return err
			})
		},
	}
	a.add(show)
	show.Flags().StringVar(&format, "format", "pem", "pem or spiffe")
	cmd := &cobra.Command{Use: "bundle", Short: "The trust domain's bundle, and the federated trust domains' bundles"}
	cmd.AddCommand(show, newBundleSetCmd(), newBundleListCmd(), newBundleDeleteCmd())
	return cmd
}

// federatedTrustDomain checks --trust-domain locally, before anything is
// sent (the server refuses its own trust domain).
func federatedTrustDomain(name string) (spiffeid.TrustDomain, error) {
	if name == "" {
		return spiffeid.TrustDomain{}, fmt.Errorf("--trust-domain is required")
	}
	td, err := ids.ParseTrustDomain(name)
	if err != nil {
		return td, fmt.Errorf("--trust-domain: %w", err)
	}
	return td, nil
}

func newBundleSetCmd() *cobra.Command {
	var a adminFlags
	var trustDomain, path, format string
	cmd := &cobra.Command{
		Use:   "set",
		Short: "Set (replace) a federated trust domain's bundle: bootstraps an https_spiffe relationship, or federates without an endpoint",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			td, err := federatedTrustDomain(trustDomain)
			if err != nil {
				return err
			}
			if path == "" {
				return fmt.Errorf("--path is required (- for stdin)")
			}
			in, done, err := input(cmd, path)
			if err != nil {
				return fmt.Errorf("--path: %w", err)
			}
			defer done()
			b, err := adminapi.ParseBundleFile(td, in, format)
			if err != nil {
				return fmt.Errorf("--path %s: %w", path, err)
			}
			return a.call(cmd.Context(), func(ctx context.Context, c api.AdminServiceClient) error {
				got, err := c.SetFederatedBundle(ctx, &api.SetFederatedBundleRequest{Bundle: b})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Bundle of %s set\n\n", got.TrustDomain)
				printBundleSummary(cmd.OutOrStdout(), got)
				return nil
			})
		},
	}
	a.add(cmd)
	f := cmd.Flags()
	f.StringVar(&trustDomain, "trust-domain", "", "the foreign trust domain, e.g. other.org")
	f.StringVar(&path, "path", "", "bundle file (- for stdin)")
	f.StringVar(&format, "format", "pem", "pem (X.509 roots) or spiffe (the SPIFFE bundle document, with JWT keys)")
	return cmd
}

func newBundleListCmd() *cobra.Command {
	return newAdminCmd("list", "List the federated trust domains' bundles",
		func(*cobra.Command) error { return nil },
		func(ctx context.Context, c api.AdminServiceClient, w io.Writer, out *outputFlag) error {
			resp, err := c.ListFederatedBundles(ctx, &api.ListFederatedBundlesRequest{})
			if err != nil {
				return err
			}
			if out.json() {
				type bundleJSON struct {
					TrustDomain string          `json:"trust_domain"`
					Bundle      json.RawMessage `json:"bundle"`
				}
				doc := struct {
					Bundles []bundleJSON `json:"bundles"`
				}{[]bundleJSON{}}
				for _, b := range resp.Bundles {
					raw, err := adminapi.MarshalBundle(b, "spiffe")
					if err != nil {
						return fmt.Errorf("bundle of %s: %w", b.TrustDomain, err)
					}
					doc.Bundles = append(doc.Bundles, bundleJSON{b.TrustDomain, raw})
				}
				return writeJSON(w, doc)
			}
			fmt.Fprintf(w, "Found %d federated bundles\n\n", len(resp.Bundles))
			for _, b := range resp.Bundles {
				printBundleSummary(w, b)
			}
			return nil
		})
}

func newBundleDeleteCmd() *cobra.Command {
	var a adminFlags
	var trustDomain, mode string
	modes := map[string]api.BundleDeleteMode{
		"restrict":   api.BundleDeleteMode_BUNDLE_DELETE_MODE_RESTRICT,
		"dissociate": api.BundleDeleteMode_BUNDLE_DELETE_MODE_DISSOCIATE,
		"delete":     api.BundleDeleteMode_BUNDLE_DELETE_MODE_DELETE,
	}
	cmd := &cobra.Command{
		Use:   "delete",
		Short: "Delete a federated trust domain's bundle (refused while a federation relationship fetches it)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			td, err := federatedTrustDomain(trustDomain)
			if err != nil {
				return err
			}
			m, ok := modes[mode]
			if !ok {
				return fmt.Errorf("--mode %q: want restrict, dissociate or delete", mode)
			}
			return a.call(cmd.Context(), func(ctx context.Context, c api.AdminServiceClient) error {
				resp, err := c.DeleteFederatedBundle(ctx, &api.DeleteFederatedBundleRequest{TrustDomain: td.Name(), Mode: m})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Deleted the bundle of %s\n", td.Name())
				switch {
				case resp.Entries > 0 && m == api.BundleDeleteMode_BUNDLE_DELETE_MODE_DELETE:
					fmt.Fprintf(cmd.OutOrStdout(), "Deleted %d entries that federated with it\n", resp.Entries)
				case resp.Entries > 0:
					fmt.Fprintf(cmd.OutOrStdout(), "Dissociated %d entries from it\n", resp.Entries)
				}
				return nil
			})
		},
	}
	a.add(cmd)
	cmd.Flags().StringVar(&trustDomain, "trust-domain", "", "the foreign trust domain, e.g. other.org")
	cmd.Flags().StringVar(&mode, "mode", "restrict", "entries that federate with it: restrict (refuse the delete), dissociate (drop the trust domain from them) or delete (delete them)")
	return cmd
}

// printBundleSummary writes one bundle as `Name: value` lines: its roots
// with their expiry, and its JWT key IDs.
func printBundleSummary(w io.Writer, b *api.Bundle) {
	fmt.Fprintf(w, "Trust domain: %s\n", b.TrustDomain)
	fmt.Fprintf(w, "Sequence: %d\n", b.Sequence)
	fmt.Fprintf(w, "X.509 roots: %d\n", len(b.X509Authorities))
	for _, der := range b.X509Authorities {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			fmt.Fprintf(w, "X.509 root: unreadable: %v\n", err)
			continue
		}
		sum := sha256.Sum256(der)
		fmt.Fprintf(w, "X.509 root: %s, key ID %x, expires at %s%s\n", c.Subject, sum, c.NotAfter.UTC().Format(time.RFC3339),
			taintedMark(slices.ContainsFunc(b.TaintedX509Authorities, func(t []byte) bool { return bytes.Equal(t, der) })))
	}
	fmt.Fprintf(w, "JWT keys: %d\n", len(b.JwtAuthorities))
	for _, k := range b.JwtAuthorities {
		fmt.Fprintf(w, "JWT key: %s%s\n", k.KeyId, taintedMark(k.Tainted))
	}
	fmt.Fprintln(w)
}

func taintedMark(tainted bool) string {
	if tainted {
		return " (tainted)"
	}
	return ""
}
