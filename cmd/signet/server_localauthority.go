package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/ca"
)

// newLocalAuthorityCmd is SPIRE's `localauthority`: a rotation of this
// server's own CA or JWT key forced by an operator.
func newLocalAuthorityCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "localauthority",
		Short: "This server's own X.509 CAs and JWT keys: force a rotation (prepare, activate), then taint and revoke the old one",
		Long: `A forced rotation, for a key you no longer trust:
  1. prepare   a new authority is created and published; agents receive it at once
  2. activate  it signs from now on; the old one stays in the bundle
  3. taint     agents re-sign, at once, every SVID the old one issued (and drop its JWT-SVIDs)
  4. revoke    the old one leaves the bundle: whatever it signed stops verifying
Each step acts on the server whose admin socket is used; in HA, on each server in turn.`,
	}
	for _, kind := range []string{"x509", "jwt"} {
		noun := map[string]string{"x509": "X.509 CA", "jwt": "JWT signing key"}[kind]
		k := &cobra.Command{Use: kind, Short: "This server's " + noun + "s"}
		k.AddCommand(
			authorityCmd(kind, "show", "List this server's "+noun+"s and their status", false,
				func(ctx context.Context, c api.AdminServiceClient, _ string, w io.Writer, json bool) error {
					resp, err := c.GetLocalAuthorities(ctx, &api.GetLocalAuthoritiesRequest{Kind: kind})
					if err != nil {
						return err
					}
					if json {
						return printJSON(w, resp)
					}
					for _, a := range resp.Authorities {
						printLocalAuthority(w, a, kind == "x509")
					}
					return nil
				}),
			authorityStepCmd(kind, "prepare", "Create and publish a new "+noun+"; activate it once agents hold it", false,
				func(ctx context.Context, c api.AdminServiceClient, _ string) (*api.LocalAuthority, error) {
					return c.PrepareLocalAuthority(ctx, &api.PrepareLocalAuthorityRequest{Kind: kind})
				},
				"Prepared. Agents receive it with the bundle within seconds; then: signet server localauthority "+kind+" activate --authority-id %[1]s\n"),
			authorityStepCmd(kind, "activate", "Make the prepared "+noun+" the one that signs", true,
				func(ctx context.Context, c api.AdminServiceClient, id string) (*api.LocalAuthority, error) {
					return c.ActivateLocalAuthority(ctx, &api.ActivateLocalAuthorityRequest{Kind: kind, AuthorityId: id})
				},
				"Activated: %[1]s signs now. To have agents re-sign what the old one issued: signet server localauthority "+kind+" taint --authority-id OLD_ID (`show` lists it)\n"),
			authorityStepCmd(kind, "taint", "Mark an old "+noun+" tainted: agents re-sign, at once, everything it issued", true,
				func(ctx context.Context, c api.AdminServiceClient, id string) (*api.LocalAuthority, error) {
					return c.TaintLocalAuthority(ctx, &api.TaintLocalAuthorityRequest{Kind: kind, AuthorityId: id})
				},
				"Tainted. Agents are re-signing what it issued (metric signet_agent_svid_signings_total{reason=\"authority_tainted\"}); once they have: signet server localauthority "+kind+" revoke --authority-id %[1]s\n"),
		)
		var force bool
		revoke := authorityStepCmd(kind, "revoke", "Remove a tainted "+noun+" from the bundle and delete its key: whatever it signed stops verifying", true,
			func(ctx context.Context, c api.AdminServiceClient, id string) (*api.LocalAuthority, error) {
				return c.RevokeLocalAuthority(ctx, &api.RevokeLocalAuthorityRequest{Kind: kind, AuthorityId: id, Force: force})
			},
			"Revoked: %[1]s is no longer in the bundle.\n")
		if kind == "x509" {
			revoke.Flags().BoolVar(&force, "force", false, "revoke even while agents still hold agent SVIDs it signed (`show` counts them): they are cut off until they attest again")
		}
		k.AddCommand(revoke)
		cmd.AddCommand(k)
	}
	return cmd
}

// authorityStepCmd is a step that answers one authority; next is printed
// after it (pretty output only), with the authority's ID for %[1]s.
func authorityStepCmd(kind, use, short string, needID bool, step func(context.Context, api.AdminServiceClient, string) (*api.LocalAuthority, error), next string) *cobra.Command {
	return authorityCmd(kind, use, short, needID, func(ctx context.Context, c api.AdminServiceClient, id string, w io.Writer, json bool) error {
		a, err := step(ctx, c, id)
		if err != nil {
			return err
		}
		if json {
			return printJSON(w, a)
		}
		printLocalAuthority(w, a, false)
		fmt.Fprintf(w, next, a.AuthorityId)
		return nil
	})
}

func authorityCmd(kind, use, short string, needID bool, do func(ctx context.Context, c api.AdminServiceClient, id string, w io.Writer, json bool) error) *cobra.Command {
	return adminIDCmd(use, short, needID, "signet server localauthority "+kind+" show lists them", "the authority's ID, as `show` lists it", do)
}

// adminIDCmd is an admin command with --output pretty|json and, when
// needID, a required --authority-id (missing names where to find one).
func adminIDCmd(use, short string, needID bool, missing, idUsage string, do func(ctx context.Context, c api.AdminServiceClient, id string, w io.Writer, json bool) error) *cobra.Command {
	var a adminFlags
	var id, output string
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "pretty" && output != "json" {
				return fmt.Errorf("--output %q: want pretty or json", output)
			}
			if needID && id == "" {
				return fmt.Errorf("--authority-id is required (%s)", missing)
			}
			return a.call(cmd.Context(), func(ctx context.Context, c api.AdminServiceClient) error {
				return do(ctx, c, id, cmd.OutOrStdout(), output == "json")
			})
		},
	}
	a.add(cmd)
	if needID {
		cmd.Flags().StringVar(&id, "authority-id", "", idUsage)
	}
	cmd.Flags().StringVar(&output, "output", "pretty", "pretty or json")
	return cmd
}

// printLocalAuthority prints a; withAgents adds the count of agents under
// an X.509 CA (only GetLocalAuthorities sets it).
func printLocalAuthority(w io.Writer, a *api.LocalAuthority, withAgents bool) {
	fmt.Fprintf(w, "Authority ID: %s\nStatus: %s\nTainted: %v\n", a.AuthorityId, a.Status, a.Tainted)
	if a.PublishedAt != 0 {
		fmt.Fprintf(w, "Published at: %s\n", time.Unix(a.PublishedAt, 0).UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(w, "Expires at: %s\n", time.Unix(a.ExpiresAt, 0).UTC().Format(time.RFC3339))
	if a.UpstreamIssuer != "" {
		fmt.Fprintf(w, "Upstream issuer: %s\n", a.UpstreamIssuer)
	}
	if a.UpstreamAuthorityId != "" {
		fmt.Fprintf(w, "Upstream authority ID: %s\n", a.UpstreamAuthorityId)
	}
	if a.SubjectKeyId != "" {
		fmt.Fprintf(w, "Subject key ID: %s\n", a.SubjectKeyId)
	}
	if withAgents && a.SubjectKeyId != "" {
		fmt.Fprintf(w, "Agents holding an SVID it signed: %d\n", a.Agents)
	}
	if a.KeyType != "" {
		if alg := ca.JWTKeyType(a.KeyType).Algorithm(); alg != "" {
			fmt.Fprintf(w, "Key type: %s (%s)\n", a.KeyType, alg)
		} else {
			fmt.Fprintf(w, "Key type: %s\n", a.KeyType)
		}
	}
	fmt.Fprintln(w)
}

func printJSON(w io.Writer, m proto.Message) error {
	out, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", out)
	return err
}
