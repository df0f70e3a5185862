package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/signetid/signet/internal/ids"
	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/adminapi"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/registry"
	"github.com/spf13/cobra"
)

func newServerAgentCmd() *cobra.Command {
	list := agentQueryCmd("list", "List attested agents (filters combine)", func(w io.Writer, out *outputFlag, agents []*api.Agent) error {
		return printAgents(w, out, true, agents...)
	})
	count := agentQueryCmd("count", "Count attested agents (filters combine)", func(w io.Writer, out *outputFlag, agents []*api.Agent) error {
		if out.json() {
			return writeJSON(w, struct {
				Count int `json:"count"`
			}{len(agents)})
		}
		_, err := fmt.Fprintf(w, "%d attested agents\n", len(agents))
		return err
	})
	var showID string
	show := newAdminCmd("show", "Show one attested agent",
		func(*cobra.Command) error {
			if _, err := ids.ParseWorkloadID(showID); err != nil {
				return fmt.Errorf("--spiffe-id: %w", err)
			}
			return nil
		},
		func(ctx context.Context, c api.AdminServiceClient, w io.Writer, out *outputFlag) error {
			a, err := c.GetAgent(ctx, &api.GetAgentRequest{SpiffeId: showID})
			if err != nil {
				return err
			}
			return printAgents(w, out, false, a)
		})
	show.Flags().StringVar(&showID, "spiffe-id", "", "agent SPIFFE ID")
	evict := agentIDCmd("evict", "Evict an agent: its streams end and it can no longer renew or sign; evicting a banned agent lifts the ban", "Evicted",
		func(ctx context.Context, c api.AdminServiceClient, id string) error {
			_, err := c.EvictAgent(ctx, &api.EvictAgentRequest{SpiffeId: id})
			return err
		})
	ban := agentIDCmd("ban", "Ban an agent: evict it and refuse its ID at attestation until it is evicted (a k8s_psat node re-attests by itself after a plain eviction)", "Banned",
		func(ctx context.Context, c api.AdminServiceClient, id string) error {
			_, err := c.BanAgent(ctx, &api.BanAgentRequest{SpiffeId: id})
			return err
		})
	var expiredFor time.Duration
	var dryRun, includeTOFU bool
	purge := newAdminCmd("purge", "Remove agents whose SVID expired long ago (SPIRE's agent purge): those that attest again by themselves; banned agents stay",
		func(*cobra.Command) error {
			if expiredFor <= 0 {
				return fmt.Errorf("--expired-for %s: want a positive duration, e.g. 720h", expiredFor)
			}
			return nil
		},
		func(ctx context.Context, c api.AdminServiceClient, w io.Writer, out *outputFlag) error {
			resp, err := c.PurgeAgents(ctx, &api.PurgeAgentsRequest{ExpiredBefore: time.Now().Add(-expiredFor).Unix(),
				IncludeNonReattestable: includeTOFU, DryRun: dryRun})
			if err != nil {
				return err
			}
			return printPurged(w, out, resp.Agents, dryRun, includeTOFU)
		})
	pf := purge.Flags()
	pf.DurationVar(&expiredFor, "expired-for", 24*time.Hour, "how long ago the agent's SVID must have expired")
	pf.BoolVar(&dryRun, "dry-run", false, "list the agents that would be removed, remove none")
	pf.BoolVar(&includeTOFU, "include-non-reattestable", false, "join-token agents too (they cannot attest again: a new token is needed)")
	cmd := &cobra.Command{Use: "agent", Short: "Attested agents"}
	cmd.AddCommand(list, show, count, evict, ban, purge)
	return cmd
}

// agentIDCmd is an admin command acting on one agent named by --spiffe-id.
func agentIDCmd(use, short, done string, do func(context.Context, api.AdminServiceClient, string) error) *cobra.Command {
	var a adminFlags
	var id string
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := ids.ParseWorkloadID(id); err != nil {
				return fmt.Errorf("--spiffe-id: %w", err)
			}
			return a.call(cmd.Context(), func(ctx context.Context, c api.AdminServiceClient) error {
				if err := do(ctx, c, id); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s agent %s\n", done, id)
				return nil
			})
		},
	}
	a.add(cmd)
	cmd.Flags().StringVar(&id, "spiffe-id", "", "agent SPIFFE ID")
	return cmd
}

// printAgents prints agents as `Name: value` blocks (list adds a "Found N
// agents" line) or, with --output json, as one {"agents": [...]} document.
func printAgents(w io.Writer, out *outputFlag, list bool, agents ...*api.Agent) error {
	if out.json() {
		doc := struct {
			Agents []adminapi.AgentJSON `json:"agents"`
		}{make([]adminapi.AgentJSON, len(agents))}
		for i, a := range agents {
			doc.Agents[i] = adminapi.AgentToJSON(a)
		}
		return writeJSON(w, doc)
	}
	if list {
		fmt.Fprintf(w, "Found %d agents\n\n", len(agents))
	}
	for _, a := range agents {
		fmt.Fprintf(w, "SPIFFE ID: %s\nAttestation type: %s\nCan re-attest: %t\n", a.SpiffeId, a.AttestationType, a.CanReattest)
		for _, s := range a.Selectors {
			fmt.Fprintf(w, "Selector: %s:%s\n", s.Type, s.Value)
		}
		if a.Banned {
			fmt.Fprintf(w, "Banned: true\n\n")
			continue
		}
		fmt.Fprintf(w, "Serial: %s\nExpires at: %s\n\n", a.SerialNumber, time.Unix(a.ExpiresAt, 0).UTC().Format(time.RFC3339))
	}
	return nil
}

// agentQueryCmd is agent list or count: SPIRE's filters, then show the
// result.
func agentQueryCmd(use, short string, show func(io.Writer, *outputFlag, []*api.Agent) error) *cobra.Command {
	var attType, matchSelectors, expiresBefore string
	var selectors []string
	var banned, canReattest bool
	req := &api.ListAgentsRequest{}
	cmd := newAdminCmd(use, short,
		func(cmd *cobra.Command) error {
			req.AttestationType = attType
			if len(selectors) > 0 {
				sels, err := selector.ParseAll(selectors)
				if err != nil {
					return fmt.Errorf("--selector: %w", err)
				}
				req.Selectors = registry.SelectorsToProto(sels)
			}
			var err error
			if req.MatchSelectorsOn, err = matchMode("--match-selectors-on", matchSelectors); err != nil {
				return err
			}
			if expiresBefore != "" {
				t, err := time.Parse(time.RFC3339, expiresBefore)
				if err != nil {
					return fmt.Errorf("--expires-before %q: want RFC 3339, e.g. 2030-01-02T15:04:05Z", expiresBefore)
				}
				req.ExpiresBefore = t.Unix()
			}
			if cmd.Flags().Changed("banned") {
				req.Banned = &banned
			}
			if cmd.Flags().Changed("can-reattest") {
				req.CanReattest = &canReattest
			}
			return nil
		},
		func(ctx context.Context, c api.AdminServiceClient, w io.Writer, out *outputFlag) error {
			resp, err := c.ListAgents(ctx, req)
			if err != nil {
				return err
			}
			return show(w, out, resp.Agents)
		})
	f := cmd.Flags()
	f.StringVar(&attType, "attestation-type", "", "only agents attested this way: join_token, x509pop, k8s_psat, ...")
	f.StringArrayVar(&selectors, "selector", nil, "only agents with these node selectors (repeatable; see --match-selectors-on)")
	f.StringVar(&matchSelectors, "match-selectors-on", "superset", "how --selector matches: superset, exact, subset or any")
	f.BoolVar(&banned, "banned", false, "only banned agents (--banned=false: only the others)")
	f.BoolVar(&canReattest, "can-reattest", false, "only agents that renew by attesting again (--can-reattest=false: only the others)")
	f.StringVar(&expiresBefore, "expires-before", "", "only agents whose SVID expires before this RFC 3339 time (stale agents to evict)")
	return cmd
}

// printPurged prints the agents purge removed (or, dry, would remove); its
// JSON is SPIRE's ({"expired_agents": [{"agent_id", "deleted"}]}).
func printPurged(w io.Writer, out *outputFlag, ids []string, dry, includedTOFU bool) error {
	if out.json() {
		type purged struct {
			AgentID string `json:"agent_id"`
			Deleted bool   `json:"deleted"`
		}
		doc := struct {
			Agents []purged `json:"expired_agents"`
		}{[]purged{}}
		for _, id := range ids {
			doc.Agents = append(doc.Agents, purged{id, !dry})
		}
		return writeJSON(w, doc)
	}
	switch {
	case len(ids) == 0 && !includedTOFU:
		fmt.Fprintln(w, "No agents to purge (join-token agents are left out: --include-non-reattestable adds them).")
	case len(ids) == 0:
		fmt.Fprintln(w, "No agents to purge.")
	case dry:
		fmt.Fprintf(w, "%d agents would be purged:\n", len(ids))
	default:
		fmt.Fprintf(w, "Purged %d agents:\n", len(ids))
	}
	for _, id := range ids {
		fmt.Fprintf(w, "SPIFFE ID: %s\n", id)
	}
	return nil
}
