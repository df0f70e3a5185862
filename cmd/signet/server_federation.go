package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/server/adminapi"
	"github.com/signetid/signet/server/api"
)

func newFederationCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "federation", Short: "Federation relationships: foreign trust domains whose bundles the server fetches"}
	cmd.AddCommand(
		relationshipWriteCmd("create", "Create a federation relationship (kept in the store, shared by the trust domain's servers)",
			func(ctx context.Context, c api.AdminServiceClient, r *api.FederationRelationship, b *api.Bundle) (*api.FederationRelationshipResult, error) {
				return c.CreateFederationRelationship(ctx, &api.CreateFederationRelationshipRequest{Relationship: r, TrustDomainBundle: b})
			}),
		relationshipWriteCmd("update", "Replace a stored federation relationship",
			func(ctx context.Context, c api.AdminServiceClient, r *api.FederationRelationship, b *api.Bundle) (*api.FederationRelationshipResult, error) {
				return c.UpdateFederationRelationship(ctx, &api.UpdateFederationRelationshipRequest{Relationship: r, TrustDomainBundle: b})
			}),
		relationshipByTDCmd("delete", "Delete a stored federation relationship (its bundle is kept; `bundle delete` removes it)",
			func(ctx context.Context, c api.AdminServiceClient, td string, cmd *cobra.Command) error {
				if _, err := c.DeleteFederationRelationship(ctx, &api.DeleteFederationRelationshipRequest{TrustDomain: td}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Deleted the federation relationship with %s\n", td)
				return nil
			}),
		newFederationShowCmd(),
		newFederationRefreshCmd(),
		newFederationListCmd())
	return cmd
}

// relationshipWriteCmd is create or update: the relationship's flags, and an
// optional bootstrap bundle read as `bundle set` reads it.
func relationshipWriteCmd(use, short string, write func(context.Context, api.AdminServiceClient, *api.FederationRelationship, *api.Bundle) (*api.FederationRelationshipResult, error)) *cobra.Command {
	var a adminFlags
	var r api.FederationRelationship
	var bundlePath, bundleFormat string
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			td, err := federatedTrustDomain(r.TrustDomain)
			if err != nil {
				return err
			}
			r.TrustDomain = td.Name()
			var b *api.Bundle
			switch {
			case bundlePath != "":
				in, done, err := input(cmd, bundlePath)
				if err != nil {
					return fmt.Errorf("--trust-domain-bundle-path: %w", err)
				}
				defer done()
				if b, err = adminapi.ParseBundleFile(td, in, bundleFormat); err != nil {
					return fmt.Errorf("--trust-domain-bundle-path %s: %w", bundlePath, err)
				}
			case cmd.Flags().Changed("trust-domain-bundle-format"):
				return fmt.Errorf("--trust-domain-bundle-format goes with --trust-domain-bundle-path")
			}
			return a.call(cmd.Context(), func(ctx context.Context, c api.AdminServiceClient) error {
				got, err := write(ctx, c, &r, b)
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				adminapi.PrintFederationRelationship(w, got.Relationship)
				if got.TrustDomainBundle != nil {
					fmt.Fprintf(w, "Bundle of %s set\n\n", got.TrustDomainBundle.TrustDomain)
					printBundleSummary(w, got.TrustDomainBundle)
				}
				return nil
			})
		},
	}
	a.add(cmd)
	f := cmd.Flags()
	f.StringVar(&r.TrustDomain, "trust-domain", "", "the foreign trust domain, e.g. other.org")
	f.StringVar(&r.BundleEndpointUrl, "bundle-endpoint-url", "", "its bundle endpoint, https://host[:port][/path]")
	f.StringVar(&r.BundleEndpointProfile, "bundle-endpoint-profile", "", "how the endpoint authenticates: https_spiffe (an X509-SVID, checked with the bundle held) or https_web (Web PKI)")
	f.StringVar(&r.EndpointSpiffeId, "endpoint-spiffe-id", "", "SPIFFE ID an https_spiffe endpoint presents (default spiffe://TD/signet/server; a SPIRE server's is spiffe://TD/spire/server)")
	f.StringVar(&bundlePath, "trust-domain-bundle-path", "", "the trust domain's bundle to start from, stored with the relationship (- for stdin); https_spiffe needs one")
	f.StringVar(&bundleFormat, "trust-domain-bundle-format", "pem", "pem (X.509 roots) or spiffe (the SPIFFE bundle document, with JWT keys)")
	return cmd
}

// relationshipByTDCmd is an admin command acting on the relationship with
// the trust domain named by --trust-domain.
func relationshipByTDCmd(use, short string, do func(context.Context, api.AdminServiceClient, string, *cobra.Command) error) *cobra.Command {
	var a adminFlags
	var trustDomain string
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			td, err := federatedTrustDomain(trustDomain)
			if err != nil {
				return err
			}
			return a.call(cmd.Context(), func(ctx context.Context, c api.AdminServiceClient) error {
				return do(ctx, c, td.Name(), cmd)
			})
		},
	}
	a.add(cmd)
	cmd.Flags().StringVar(&trustDomain, "trust-domain", "", "the foreign trust domain, e.g. other.org")
	return cmd
}

func newFederationListCmd() *cobra.Command {
	return newAdminCmd("list", "List the federation relationships: those of server.conf and those stored",
		func(*cobra.Command) error { return nil },
		func(ctx context.Context, c api.AdminServiceClient, w io.Writer, out *outputFlag) error {
			resp, err := c.ListFederationRelationships(ctx, &api.ListFederationRelationshipsRequest{})
			if err != nil {
				return err
			}
			return printRelationships(w, out, true, resp.Relationships...)
		})
}

func newFederationShowCmd() *cobra.Command {
	var trustDomain string
	var td spiffeid.TrustDomain
	cmd := newAdminCmd("show", "Show the federation relationship in force with a trust domain",
		func(*cobra.Command) (err error) {
			td, err = federatedTrustDomain(trustDomain)
			return err
		},
		func(ctx context.Context, c api.AdminServiceClient, w io.Writer, out *outputFlag) error {
			r, err := c.GetFederationRelationship(ctx, &api.GetFederationRelationshipRequest{TrustDomain: td.Name()})
			if err != nil {
				return err
			}
			return printRelationships(w, out, false, r)
		})
	cmd.Flags().StringVar(&trustDomain, "trust-domain", "", "the foreign trust domain, e.g. other.org")
	return cmd
}

// printRelationships prints relationships as `Name: value` blocks (list
// adds a "Found N" line) or as one {"relationships": [...]} document.
func printRelationships(w io.Writer, out *outputFlag, list bool, rs ...*api.FederationRelationship) error {
	if out.json() {
		doc := struct {
			Relationships []adminapi.RelationshipJSON `json:"relationships"`
		}{make([]adminapi.RelationshipJSON, len(rs))}
		for i, r := range rs {
			doc.Relationships[i] = adminapi.RelationshipToJSON(r)
		}
		return writeJSON(w, doc)
	}
	if list {
		fmt.Fprintf(w, "Found %d federation relationships\n\n", len(rs))
	}
	for _, r := range rs {
		adminapi.PrintFederationRelationship(w, r)
	}
	return nil
}

// newFederationRefreshCmd is SPIRE's federation refresh: fetch a federated
// trust domain's bundle now rather than at its next refresh.
func newFederationRefreshCmd() *cobra.Command {
	var trustDomain string
	var td spiffeid.TrustDomain
	cmd := newAdminCmd("refresh", "Fetch a federated trust domain's bundle from its bundle endpoint now",
		func(*cobra.Command) (err error) {
			td, err = federatedTrustDomain(trustDomain)
			return err
		},
		func(ctx context.Context, c api.AdminServiceClient, w io.Writer, out *outputFlag) error {
			b, err := c.RefreshFederatedBundle(ctx, &api.RefreshFederatedBundleRequest{TrustDomain: td.Name()})
			if err != nil {
				return err
			}
			if out.json() {
				raw, err := adminapi.MarshalBundle(b, "spiffe")
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(w, "%s\n", raw)
				return err
			}
			fmt.Fprintf(w, "Refreshed the bundle of %s\n", td.Name())
			printBundleSummary(w, b)
			return nil
		})
	cmd.Flags().StringVar(&trustDomain, "trust-domain", "", "the foreign trust domain, e.g. other.org")
	return cmd
}
