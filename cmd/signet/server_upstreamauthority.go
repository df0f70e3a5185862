package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/signetid/signet/server/api"
)

// newUpstreamAuthorityCmd is SPIRE's `upstreamauthority`: taking a
// compromised root of the upstream authority out of the trust domain.
func newUpstreamAuthorityCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "upstreamauthority",
		Short: "Roots of the upstream authority that signs this server's CAs: taint and revoke a replaced one",
		Long: `Replacing a compromised upstream root:
  1. replace the upstream authority's files (upstream_authority "disk") with a CA under the new root
  2. signet server localauthority x509 prepare, then activate: a CA under the new root signs
  3. taint    agents re-sign, at once, every SVID issued under the old root
  4. revoke   the old root leaves the bundle: whatever was issued under it stops verifying,
              and this server's old CAs under it are revoked with it
Each step acts on the server whose admin socket is used. In HA, run each step on every server
before the next step: every server must sign under the new root before any taints the old one
(agents would re-sign under it again), and each server keeps publishing the old root until it
has revoked it too.`,
	}
	cmd.AddCommand(
		upstreamCmd("list", "List the upstream roots, their marks and this server's CAs under them", false,
			func(ctx context.Context, c api.AdminServiceClient, _ string, w io.Writer, json bool) error {
				resp, err := c.GetUpstreamAuthorities(ctx, &api.GetUpstreamAuthoritiesRequest{})
				if err != nil {
					return err
				}
				if json {
					return printJSON(w, resp)
				}
				if len(resp.Authorities) == 0 {
					fmt.Fprintln(w, "No upstream roots: this server's CAs are self-signed (see signet server localauthority x509 show).")
				}
				for _, u := range resp.Authorities {
					printUpstreamAuthority(w, u)
				}
				return nil
			}),
		upstreamCmd("taint", "Mark an upstream root tainted: agents re-sign, at once, everything issued under it", true,
			func(ctx context.Context, c api.AdminServiceClient, id string, w io.Writer, json bool) error {
				u, err := c.TaintUpstreamAuthority(ctx, &api.TaintUpstreamAuthorityRequest{AuthorityId: id})
				return printUpstreamStep(w, u, err, json, "Tainted. Agents are re-signing what was issued under it (metric signet_agent_svid_signings_total{reason=\"authority_tainted\"}); once they have: signet server upstreamauthority revoke --authority-id %s\n")
			}),
	)
	var force bool
	revoke := upstreamCmd("revoke", "Remove a tainted upstream root from the bundle: whatever was issued under it stops verifying", true,
		func(ctx context.Context, c api.AdminServiceClient, id string, w io.Writer, json bool) error {
			u, err := c.RevokeUpstreamAuthority(ctx, &api.RevokeUpstreamAuthorityRequest{AuthorityId: id, Force: force})
			return printUpstreamStep(w, u, err, json, "Revoked: %s is no longer in the bundle.\n")
		})
	revoke.Flags().BoolVar(&force, "force", false, "revoke even while agents still hold agent SVIDs signed by this server's CAs under the root: they are cut off until they attest again")
	cmd.AddCommand(revoke)
	return cmd
}

func upstreamCmd(use, short string, needID bool, do func(ctx context.Context, c api.AdminServiceClient, id string, w io.Writer, json bool) error) *cobra.Command {
	return adminIDCmd(use, short, needID, "signet server upstreamauthority list shows them", "the root's authority ID or subject key ID, as `list` shows them", do)
}

func printUpstreamStep(w io.Writer, u *api.UpstreamAuthority, err error, json bool, next string) error {
	if err != nil {
		return err
	}
	if json {
		return printJSON(w, u)
	}
	printUpstreamAuthority(w, u)
	fmt.Fprintf(w, next, u.AuthorityId)
	return nil
}

func printUpstreamAuthority(w io.Writer, u *api.UpstreamAuthority) {
	fmt.Fprintf(w, "Authority ID: %s\n", u.AuthorityId)
	if u.SubjectKeyId != "" {
		fmt.Fprintf(w, "Subject key ID: %s\n", u.SubjectKeyId)
	}
	if u.Subject != "" {
		fmt.Fprintf(w, "Subject: %s\n", u.Subject)
	}
	fmt.Fprintf(w, "Expires at: %s\nTainted: %v\nRevoked: %v\n", time.Unix(u.ExpiresAt, 0).UTC().Format(time.RFC3339), u.Tainted, u.Revoked)
	for _, a := range u.LocalAuthorities {
		fmt.Fprintf(w, "Local X.509 CA: %s (%s)\n", a.AuthorityId, a.Status)
	}
	fmt.Fprintln(w)
}
