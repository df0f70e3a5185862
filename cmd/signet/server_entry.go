package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/signetid/signet/internal/ids"
	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/adminapi"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/registry"
	"github.com/spf13/cobra"
)

// entryFlags are the fields of an entry on the command line.
type entryFlags struct {
	spiffeID, parentID, hint, expiresAt string
	node, admin, downstream             bool
	selectors, dns, federatesWith       []string
	x509TTL, jwtTTL                     time.Duration
}

func (e *entryFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&e.spiffeID, "spiffe-id", "", "SPIFFE ID the workload gets")
	f.StringVar(&e.parentID, "parent-id", "", "SPIFFE ID of the agent (or node-alias entry) that serves it")
	f.BoolVar(&e.node, "node", false, "make a node-alias entry: its selectors match agents' node selectors")
	f.StringArrayVar(&e.selectors, "selector", nil, "type:value selector, e.g. unix:uid:1000 (repeatable)")
	f.DurationVar(&e.x509TTL, "x509-ttl", 0, "X509-SVID lifetime (default: the server's)")
	f.DurationVar(&e.jwtTTL, "jwt-ttl", 0, "JWT-SVID lifetime (default: the server's)")
	f.StringArrayVar(&e.dns, "dns", nil, "DNS SAN (repeatable)")
	f.StringVar(&e.hint, "hint", "", "hint telling the workload's SVIDs apart")
	f.StringArrayVar(&e.federatesWith, "federates-with", nil, "trust domain whose bundle the workload gets (repeatable)")
	f.BoolVar(&e.admin, "admin", false, "mark the entry admin")
	f.BoolVar(&e.downstream, "downstream", false, "the workload is a downstream Signet server of this trust domain, which this server signs intermediate CAs for (not with --node)")
	f.StringVar(&e.expiresAt, "expires-at", "", "RFC 3339 time after which the entry is ignored")
}

// toProto checks the flags locally (a clear error before anything is sent)
// and builds the API entry.
func (e *entryFlags) toProto() (*api.Entry, error) {
	out := &api.Entry{
		SpiffeId:       e.spiffeID,
		ParentId:       e.parentID,
		Node:           e.node,
		X509TtlSeconds: int32(e.x509TTL / time.Second),
		JwtTtlSeconds:  int32(e.jwtTTL / time.Second),
		DnsNames:       e.dns,
		Hint:           e.hint,
		FederatesWith:  e.federatesWith,
		Admin:          e.admin,
		Downstream:     e.downstream,
	}
	if e.spiffeID != "" {
		if _, err := ids.ParseWorkloadID(e.spiffeID); err != nil {
			return nil, fmt.Errorf("--spiffe-id: %w", err)
		}
	}
	if e.parentID != "" {
		if _, err := ids.ParseWorkloadID(e.parentID); err != nil {
			return nil, fmt.Errorf("--parent-id: %w", err)
		}
	}
	if len(e.selectors) > 0 {
		sels, err := selector.ParseAll(e.selectors)
		if err != nil {
			return nil, fmt.Errorf("--selector: %w", err)
		}
		out.Selectors = registry.SelectorsToProto(sels)
	}
	if e.expiresAt != "" {
		t, err := time.Parse(time.RFC3339, e.expiresAt)
		if err != nil {
			return nil, fmt.Errorf("--expires-at %q: want RFC 3339, e.g. 2030-01-02T15:04:05Z", e.expiresAt)
		}
		out.ExpiresAt = t.Unix()
	}
	return out, nil
}

func newEntryCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "entry", Short: "Manage registration entries"}

	var createAdmin adminFlags
	var create entryFlags
	var dataFile string
	createCmd := &cobra.Command{
		Use:   "create",
		Short: "Create a registration entry (or many with --data); prints each with an \"Entry ID: <id>\" line",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataFile != "" {
				return createFromFile(cmd, &createAdmin, dataFile)
			}
			if create.spiffeID == "" {
				return fmt.Errorf("--spiffe-id is required")
			}
			if create.parentID == "" && !create.node {
				return fmt.Errorf("--parent-id or --node is required")
			}
			if len(create.selectors) == 0 {
				return fmt.Errorf("at least one --selector is required")
			}
			e, err := create.toProto()
			if err != nil {
				return err
			}
			return createAdmin.call(cmd.Context(), func(ctx context.Context, c api.AdminServiceClient) error {
				got, err := c.CreateEntry(ctx, &api.CreateEntryRequest{Entry: e})
				if err != nil {
					return err
				}
				adminapi.PrintEntry(cmd.OutOrStdout(), got)
				return nil
			})
		},
	}
	createAdmin.add(createCmd)
	create.add(createCmd)
	createCmd.Flags().StringVar(&dataFile, "data", "", `JSON file ({"entries": [...]}, SPIRE's -data shape; - for stdin) created in one transaction`)

	var updAdmin adminFlags
	var upd entryFlags
	var updID string
	updateCmd := &cobra.Command{
		Use:   "update",
		Short: "Update the given fields of an entry",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if updID == "" {
				return fmt.Errorf("--id is required")
			}
			e, err := upd.toProto()
			if err != nil {
				return err
			}
			e.Id = updID
			var mask []string
			for flag, field := range map[string]string{
				"spiffe-id": "spiffe_id", "parent-id": "parent_id", "node": "node", "selector": "selectors",
				"x509-ttl": "x509_ttl", "jwt-ttl": "jwt_ttl", "dns": "dns_names", "hint": "hint",
				"federates-with": "federates_with", "admin": "admin", "downstream": "downstream", "expires-at": "expires_at",
			} {
				if cmd.Flags().Changed(flag) {
					mask = append(mask, field)
				}
			}
			if len(mask) == 0 {
				return fmt.Errorf("nothing to update: give at least one field flag")
			}
			return updAdmin.call(cmd.Context(), func(ctx context.Context, c api.AdminServiceClient) error {
				got, err := c.UpdateEntry(ctx, &api.UpdateEntryRequest{Entry: e, UpdateMask: mask})
				if err != nil {
					return err
				}
				adminapi.PrintEntry(cmd.OutOrStdout(), got)
				return nil
			})
		},
	}
	updAdmin.add(updateCmd)
	upd.add(updateCmd)
	updateCmd.Flags().StringVar(&updID, "id", "", "entry ID")

	var listAdmin adminFlags
	var listSPIFFEID, listParentID string
	var listSelectors []string
	listCmd := &cobra.Command{
		Use:   "list",
		Short: "List entries (filters combine)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &api.ListEntriesRequest{SpiffeId: listSPIFFEID, ParentId: listParentID}
			if len(listSelectors) > 0 {
				sels, err := selector.ParseAll(listSelectors)
				if err != nil {
					return fmt.Errorf("--selector: %w", err)
				}
				req.Selectors = registry.SelectorsToProto(sels)
			}
			return listAdmin.call(cmd.Context(), func(ctx context.Context, c api.AdminServiceClient) error {
				resp, err := c.ListEntries(ctx, req)
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				fmt.Fprintf(w, "Found %d entries\n\n", len(resp.Entries))
				for _, e := range resp.Entries {
					adminapi.PrintEntry(w, e)
				}
				return nil
			})
		},
	}
	listAdmin.add(listCmd)
	listCmd.Flags().StringVar(&listSPIFFEID, "spiffe-id", "", "only entries with this SPIFFE ID")
	listCmd.Flags().StringVar(&listParentID, "parent-id", "", "only entries with this parent")
	listCmd.Flags().StringArrayVar(&listSelectors, "selector", nil, "only entries with these selectors (repeatable)")

	cmd.AddCommand(createCmd, updateCmd, listCmd,
		entryByIDCmd("show", "Show one entry", func(ctx context.Context, c api.AdminServiceClient, id string, w io.Writer) error {
			e, err := c.GetEntry(ctx, &api.GetEntryRequest{Id: id})
			if err != nil {
				return err
			}
			adminapi.PrintEntry(w, e)
			return nil
		}),
		entryByIDCmd("delete", "Delete an entry", func(ctx context.Context, c api.AdminServiceClient, id string, w io.Writer) error {
			if _, err := c.DeleteEntry(ctx, &api.DeleteEntryRequest{Id: id}); err != nil {
				return err
			}
			fmt.Fprintf(w, "Deleted entry %s\n", id)
			return nil
		}))
	return cmd
}

// createFromFile creates every entry of a JSON file in one transaction.
func createFromFile(cmd *cobra.Command, a *adminFlags, path string) error {
	for _, f := range []string{"spiffe-id", "parent-id", "node", "selector"} {
		if cmd.Flags().Changed(f) {
			return fmt.Errorf("--data and --%s cannot be combined", f)
		}
	}
	in, done, err := input(cmd, path)
	if err != nil {
		return fmt.Errorf("--data: %w", err)
	}
	defer done()
	entries, err := adminapi.ParseEntryFile(in)
	if err != nil {
		return fmt.Errorf("--data %s: %w", path, err)
	}
	return a.call(cmd.Context(), func(ctx context.Context, c api.AdminServiceClient) error {
		resp, err := c.BatchCreateEntries(ctx, &api.BatchCreateEntriesRequest{Entries: entries})
		if err != nil {
			return err
		}
		for _, e := range resp.Entries {
			adminapi.PrintEntry(cmd.OutOrStdout(), e)
		}
		return nil
	})
}

// input opens the file at path, or stdin when path is "-"; done releases it.
func input(cmd *cobra.Command, path string) (r io.Reader, done func(), err error) {
	if path == "-" {
		return cmd.InOrStdin(), func() {}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}

func entryByIDCmd(use, short string, fn func(context.Context, api.AdminServiceClient, string, io.Writer) error) *cobra.Command {
	var a adminFlags
	var id string
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id == "" {
				return fmt.Errorf("--id is required")
			}
			return a.call(cmd.Context(), func(ctx context.Context, c api.AdminServiceClient) error {
				return fn(ctx, c, id, cmd.OutOrStdout())
			})
		},
	}
	a.add(cmd)
	cmd.Flags().StringVar(&id, "id", "", "entry ID")
	return cmd
}
