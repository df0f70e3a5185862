package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
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
	var createOut outputFlag
	var create entryFlags
	var dataFile, entryID string
	createCmd := &cobra.Command{
		Use:   "create",
		Short: "Create a registration entry (or many with --data); prints each with an \"Entry ID: <id>\" line",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := createOut.check(); err != nil {
				return err
			}
			if dataFile != "" {
				if entryID != "" {
					return fmt.Errorf("--data and --entry-id cannot be combined (give each entry's \"id\" in the file)")
				}
				return createFromFile(cmd, &createAdmin, &createOut, dataFile)
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
			if entryID != "" {
				if err := registry.CheckEntryID(entryID); err != nil {
					return fmt.Errorf("--entry-id: %w", err)
				}
				e.Id = entryID
			}
			return createAdmin.call(cmd.Context(), func(ctx context.Context, c api.AdminServiceClient) error {
				got, err := c.CreateEntry(ctx, &api.CreateEntryRequest{Entry: e})
				if err != nil {
					return err
				}
				return printEntries(cmd.OutOrStdout(), &createOut, false, got)
			})
		},
	}
	createAdmin.add(createCmd)
	createOut.add(createCmd)
	create.add(createCmd)
	createCmd.Flags().StringVar(&dataFile, "data", "", `JSON file ({"entries": [...]}: what entry list --output json prints, or SPIRE's -data and -output json shapes; - for stdin) created in one transaction`)
	createCmd.Flags().StringVar(&entryID, "entry-id", "", "the entry's ID (default: a new UUID); letters, digits, . _ ~ -")

	var updAdmin adminFlags
	var updOut outputFlag
	var upd entryFlags
	var updID string
	updateCmd := &cobra.Command{
		Use:   "update",
		Short: "Update the given fields of an entry",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := updOut.check(); err != nil {
				return err
			}
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
				return printEntries(cmd.OutOrStdout(), &updOut, false, got)
			})
		},
	}
	updAdmin.add(updateCmd)
	updOut.add(updateCmd)
	upd.add(updateCmd)
	updateCmd.Flags().StringVar(&updID, "id", "", "entry ID")

	cmd.AddCommand(createCmd, updateCmd,
		entryQueryCmd("list", "List entries (filters combine)", func(w io.Writer, out *outputFlag, entries []*api.Entry) error {
			return printEntries(w, out, true, entries...)
		}),
		entryQueryCmd("count", "Count entries (filters combine)", func(w io.Writer, out *outputFlag, entries []*api.Entry) error {
			if out.json() {
				return writeJSON(w, struct {
					Count int `json:"count"`
				}{len(entries)})
			}
			_, err := fmt.Fprintf(w, "%d registration entries\n", len(entries))
			return err
		}),
		entryByIDCmd("show", "Show one entry", func(ctx context.Context, c api.AdminServiceClient, id string, w io.Writer, out *outputFlag) error {
			e, err := c.GetEntry(ctx, &api.GetEntryRequest{Id: id})
			if err != nil {
				return err
			}
			return printEntries(w, out, false, e)
		}),
		newEntryDeleteCmd())
	return cmd
}

// printEntries prints entries as `Name: value` blocks (list adds a "Found
// N entries" line) or, with --output json, as one {"entries": [...]}
// document, which `entry create --data` reads back.
func printEntries(w io.Writer, out *outputFlag, list bool, entries ...*api.Entry) error {
	if out.json() {
		f := adminapi.EntryFile{Entries: make([]adminapi.EntryJSON, len(entries))}
		for i, e := range entries {
			f.Entries[i] = adminapi.EntryToJSON(e)
		}
		return writeJSON(w, f)
	}
	if list {
		fmt.Fprintf(w, "Found %d entries\n\n", len(entries))
	}
	for _, e := range entries {
		adminapi.PrintEntry(w, e)
	}
	return nil
}

// entryFilterFlags are the filters of entry list and count (SPIRE's).
type entryFilterFlags struct {
	spiffeID, parentID, hint           string
	selectors, federatesWith           []string
	matchSelectors, matchFederatesWith string
	downstream                         bool
}

func (f *entryFilterFlags) add(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.spiffeID, "spiffe-id", "", "only entries with this SPIFFE ID")
	fs.StringVar(&f.parentID, "parent-id", "", "only entries with this parent")
	fs.StringArrayVar(&f.selectors, "selector", nil, "only entries with these selectors (repeatable; see --match-selectors-on)")
	fs.StringVar(&f.matchSelectors, "match-selectors-on", "superset", "how --selector matches: superset (the entry has all given, and maybe more), exact, subset (only ones given) or any (at least one)")
	fs.StringArrayVar(&f.federatesWith, "federates-with", nil, "only entries federating with these trust domains (repeatable; see --match-federates-with-on)")
	fs.StringVar(&f.matchFederatesWith, "match-federates-with-on", "superset", "how --federates-with matches: superset, exact, subset or any")
	fs.StringVar(&f.hint, "hint", "", "only entries with this hint")
	fs.BoolVar(&f.downstream, "downstream", false, "only downstream entries (--downstream=false: only the others)")
}

// request checks the filters locally and builds the API request.
func (f *entryFilterFlags) request(cmd *cobra.Command) (*api.ListEntriesRequest, error) {
	req := &api.ListEntriesRequest{SpiffeId: f.spiffeID, ParentId: f.parentID, Hint: f.hint, FederatesWith: f.federatesWith}
	for flag, id := range map[string]string{"--spiffe-id": f.spiffeID, "--parent-id": f.parentID} {
		if id != "" {
			if _, err := ids.ParseID(id); err != nil {
				return nil, fmt.Errorf("%s: %w", flag, err)
			}
		}
	}
	if len(f.selectors) > 0 {
		sels, err := selector.ParseAll(f.selectors)
		if err != nil {
			return nil, fmt.Errorf("--selector: %w", err)
		}
		req.Selectors = registry.SelectorsToProto(sels)
	}
	for _, td := range f.federatesWith {
		if _, err := ids.ParseTrustDomain(td); err != nil {
			return nil, fmt.Errorf("--federates-with: %w", err)
		}
	}
	var err error
	if req.MatchSelectorsOn, err = matchMode("--match-selectors-on", f.matchSelectors); err != nil {
		return nil, err
	}
	if req.MatchFederatesWithOn, err = matchMode("--match-federates-with-on", f.matchFederatesWith); err != nil {
		return nil, err
	}
	if cmd.Flags().Changed("downstream") {
		req.Downstream = &f.downstream
	}
	return req, nil
}

// matchMode parses SPIRE's match mode names.
func matchMode(flag, name string) (api.MatchMode, error) {
	m, ok := api.MatchMode_value["MATCH_"+strings.ToUpper(name)]
	if !ok || name != strings.ToLower(name) {
		return 0, fmt.Errorf("%s %q: want superset, exact, subset or any", flag, name)
	}
	return api.MatchMode(m), nil
}

// entryQueryCmd is entry list or count: the filters, then show the result.
func entryQueryCmd(use, short string, show func(io.Writer, *outputFlag, []*api.Entry) error) *cobra.Command {
	var filters entryFilterFlags
	var req *api.ListEntriesRequest
	cmd := newAdminCmd(use, short,
		func(cmd *cobra.Command) (err error) {
			req, err = filters.request(cmd)
			return err
		},
		func(ctx context.Context, c api.AdminServiceClient, w io.Writer, out *outputFlag) error {
			resp, err := c.ListEntries(ctx, req)
			if err != nil {
				return err
			}
			return show(w, out, resp.Entries)
		})
	filters.add(cmd)
	return cmd
}

// createFromFile creates every entry of a JSON file in one transaction.
func createFromFile(cmd *cobra.Command, a *adminFlags, out *outputFlag, path string) error {
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
	// An entry that expired since the listing was taken would be pruned at
	// once; it is left out, said on stderr, rather than failing a restore.
	now := time.Now()
	entries = slices.DeleteFunc(entries, func(e *api.Entry) bool {
		if e.ExpiresAt == 0 || e.ExpiresAt > now.Unix() {
			return false
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "# skipped entry %s (%s): it expired at %s\n", cmp.Or(e.Id, "without ID"), e.SpiffeId,
			time.Unix(e.ExpiresAt, 0).UTC().Format(time.RFC3339))
		return true
	})
	if len(entries) == 0 {
		return fmt.Errorf("--data %s: every entry has expired; nothing to create", path)
	}
	return a.call(cmd.Context(), func(ctx context.Context, c api.AdminServiceClient) error {
		resp, err := c.BatchCreateEntries(ctx, &api.BatchCreateEntriesRequest{Entries: entries})
		if err != nil {
			return err
		}
		return printEntries(cmd.OutOrStdout(), out, false, resp.Entries...)
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

func entryByIDCmd(use, short string, fn func(context.Context, api.AdminServiceClient, string, io.Writer, *outputFlag) error) *cobra.Command {
	var id string
	cmd := newAdminCmd(use, short,
		func(*cobra.Command) error {
			if id == "" {
				return fmt.Errorf("--id is required")
			}
			return nil
		},
		func(ctx context.Context, c api.AdminServiceClient, w io.Writer, out *outputFlag) error {
			return fn(ctx, c, id, w, out)
		})
	cmd.Flags().StringVar(&id, "id", "", "entry ID")
	return cmd
}

// newEntryDeleteCmd deletes one entry (--id) or, in one transaction, every
// entry of a file (--file: SPIRE's {"ids": [...]}, or a listing such as
// entry list --output json prints).
func newEntryDeleteCmd() *cobra.Command {
	var id, file string
	var ids []string
	cmd := newAdminCmd("delete", "Delete an entry, or every entry of a file in one transaction",
		func(cmd *cobra.Command) error {
			switch {
			case id == "" && file == "":
				return fmt.Errorf("give --id or --file")
			case id != "" && file != "":
				return fmt.Errorf("give --id or --file, not both")
			case id != "":
				ids = []string{id}
				return nil
			}
			in, done, err := input(cmd, file)
			if err != nil {
				return fmt.Errorf("--file: %w", err)
			}
			defer done()
			if ids, err = adminapi.ParseEntryIDs(in); err != nil {
				return fmt.Errorf("--file %s: %w", file, err)
			}
			return nil
		},
		func(ctx context.Context, c api.AdminServiceClient, w io.Writer, out *outputFlag) error {
			var err error
			if file == "" {
				_, err = c.DeleteEntry(ctx, &api.DeleteEntryRequest{Id: id})
			} else {
				_, err = c.BatchDeleteEntries(ctx, &api.BatchDeleteEntriesRequest{Ids: ids})
			}
			if err != nil {
				return err
			}
			if out.json() {
				return writeJSON(w, struct {
					Deleted []string `json:"deleted"`
				}{ids})
			}
			for _, id := range ids {
				fmt.Fprintf(w, "Deleted entry %s\n", id)
			}
			return nil
		})
	cmd.Flags().StringVar(&id, "id", "", "entry ID")
	cmd.Flags().StringVar(&file, "file", "", `JSON file of the entries to delete ({"ids": [...]}, SPIRE's -file, or a listing {"entries": [...]}; - for stdin)`)
	return cmd
}
