package main

import (
	"context"
	"fmt"
	"time"

	"github.com/signetid/signet/internal/ids"
	"github.com/signetid/signet/server/api"
	"github.com/spf13/cobra"
)

func newServerAgentCmd() *cobra.Command {
	var listA adminFlags
	list := &cobra.Command{
		Use:   "list",
		Short: "List attested agents",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return listA.call(cmd.Context(), func(ctx context.Context, c api.AdminServiceClient) error {
				resp, err := c.ListAgents(ctx, &api.ListAgentsRequest{})
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				fmt.Fprintf(w, "Found %d agents\n\n", len(resp.Agents))
				for _, a := range resp.Agents {
					fmt.Fprintf(w, "SPIFFE ID: %s\nAttestation type: %s\nCan re-attest: %t\n", a.SpiffeId, a.AttestationType, a.CanReattest)
					if a.Banned {
						fmt.Fprintf(w, "Banned: true\n\n")
						continue
					}
					fmt.Fprintf(w, "Serial: %s\nExpires at: %s\n\n", a.SerialNumber, time.Unix(a.ExpiresAt, 0).UTC().Format(time.RFC3339))
				}
				return nil
			})
		},
	}
	listA.add(list)
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
	cmd := &cobra.Command{Use: "agent", Short: "Attested agents"}
	cmd.AddCommand(list, evict, ban)
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
