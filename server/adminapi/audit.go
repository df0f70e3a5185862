package adminapi

import (
	"log/slog"
	"strings"
	"time"

	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/audit"
	"github.com/signetid/signet/server/registry"
)

// auditFields are the identifying fields of an admin call for its audit
// record: what it names (entry, SPIFFE IDs, selectors, agent, trust
// domain, authority) and, from a successful answer, what it created.
// Never a join token, a key or a bundle's content.
func auditFields(req, resp any) []slog.Attr {
	switch r := req.(type) {
	case *api.CreateEntryRequest:
		// The ID the caller chose, refused or not; else the one given.
		attrs := entryAttrs(r.GetEntry(), r.GetEntry().GetId() != "")
		if e, ok := resp.(*api.Entry); ok && r.GetEntry().GetId() == "" {
			attrs = append(attrs, slog.String("entry_id", e.GetId()))
		}
		return attrs
	case *api.BatchCreateEntriesRequest:
		return nil // one record per entry: BatchCreateEntries adds them
	case *api.UpdateEntryRequest:
		attrs := entryAttrs(r.GetEntry(), true)
		if len(r.GetUpdateMask()) > 0 {
			attrs = append(attrs, slog.Any("update_mask", r.GetUpdateMask()))
		}
		return attrs
	case *api.DeleteEntryRequest, *api.GetEntryRequest:
		return []slog.Attr{slog.String("entry_id", r.(interface{ GetId() string }).GetId())}
	case *api.ListEntriesRequest:
		return nonEmpty(slog.String("spiffe_id", r.GetSpiffeId()), slog.String("parent_id", r.GetParentId()),
			selectorsAttr(r.GetSelectors()))
	case *api.CreateJoinTokenRequest:
		attrs := nonEmpty(slog.String("spiffe_id", r.GetSpiffeId()))
		if r.GetTtlSeconds() != 0 {
			attrs = append(attrs, slog.Int64("ttl_seconds", int64(r.GetTtlSeconds())))
		}
		if t, ok := resp.(*api.CreateJoinTokenResponse); ok {
			attrs = append(attrs, slog.Time("expires_at", time.Unix(t.GetExpiresAt(), 0).UTC()))
			// The token is the agent's secret; its agent ID never holds it
			// (join_token/<token ID>, a hash's prefix), and is checked
			// anyway before it is written.
			if id := t.GetAgentId(); t.GetToken() != "" && !strings.Contains(id, t.GetToken()) {
				attrs = append(attrs, slog.String("agent_id", id))
			}
		}
		return attrs
	case *api.EvictAgentRequest, *api.BanAgentRequest, *api.GetAgentRequest:
		return []slog.Attr{slog.String("agent_id", r.(interface{ GetSpiffeId() string }).GetSpiffeId())}
	case *api.MintX509SVIDRequest:
		attrs := nonEmpty(slog.String("spiffe_id", r.GetSpiffeId()))
		if len(r.GetDnsNames()) > 0 {
			attrs = append(attrs, slog.Any("dns_names", r.GetDnsNames()))
		}
		if m, ok := resp.(*api.MintX509SVIDResponse); ok {
			attrs = append(attrs, slog.Time("expires_at", time.Unix(m.GetExpiresAt(), 0).UTC()))
		}
		return attrs
	case *api.MintJWTRequest:
		// Never the token.
		attrs := append(nonEmpty(slog.String("spiffe_id", r.GetSpiffeId())), slog.Any("audience", r.GetAudience()))
		if m, ok := resp.(*api.MintJWTResponse); ok {
			attrs = append(attrs, slog.Time("expires_at", time.Unix(m.GetExpiresAt(), 0).UTC()))
		}
		return attrs
	case *api.SetLogLevelRequest:
		return []slog.Attr{slog.String("level", r.GetLevel())}
	case *api.BatchDeleteEntriesRequest:
		return []slog.Attr{slog.Any("entry_ids", r.GetIds())}
	case *api.PurgeAgentsRequest:
		attrs := []slog.Attr{slog.Time("expired_before", time.Unix(r.GetExpiredBefore(), 0).UTC()),
			slog.Bool("include_non_reattestable", r.GetIncludeNonReattestable()), slog.Bool("dry_run", r.GetDryRun())}
		if p, ok := resp.(*api.PurgeAgentsResponse); ok {
			attrs = append(attrs, slog.Any("agent_ids", p.GetAgents()))
		}
		return attrs
	case *api.SetFederatedBundleRequest:
		return []slog.Attr{slog.String("trust_domain", r.GetBundle().GetTrustDomain())}
	case *api.DeleteFederatedBundleRequest:
		return []slog.Attr{slog.String("trust_domain", r.GetTrustDomain()), slog.String("mode", r.GetMode().String())}
	case interface {
		GetRelationship() *api.FederationRelationship
		GetTrustDomainBundle() *api.Bundle
	}: // create and update
		rel := r.GetRelationship()
		return append(nonEmpty(slog.String("trust_domain", rel.GetTrustDomain()),
			slog.String("bundle_endpoint_url", rel.GetBundleEndpointUrl()),
			slog.String("bundle_endpoint_profile", rel.GetBundleEndpointProfile()),
			slog.String("endpoint_spiffe_id", rel.GetEndpointSpiffeId())),
			slog.Bool("bootstrap_bundle", r.GetTrustDomainBundle() != nil))
	}
	// The rest name a trust domain or an authority (local and upstream,
	// whose RPCs keep growing): their getters say what they hold.
	var attrs []slog.Attr
	if r, ok := req.(interface{ GetTrustDomain() string }); ok {
		attrs = append(attrs, slog.String("trust_domain", r.GetTrustDomain()))
	}
	if r, ok := req.(interface{ GetKind() string }); ok {
		attrs = append(attrs, slog.String("kind", r.GetKind()))
	}
	if r, ok := req.(interface{ GetAuthorityId() string }); ok {
		attrs = append(attrs, slog.String("authority_id", r.GetAuthorityId()))
	} else if a, ok := resp.(*api.LocalAuthority); ok {
		// Prepare names the authority it made.
		attrs = append(attrs, slog.String("authority_id", a.GetAuthorityId()))
	}
	return attrs
}

// entryAttrs are an entry's identifying fields; withID for an entry the
// request names by its ID.
func entryAttrs(e *api.Entry, withID bool) []slog.Attr {
	var attrs []slog.Attr
	if withID {
		attrs = append(attrs, slog.String("entry_id", e.GetId()))
	}
	attrs = append(attrs, nonEmpty(slog.String("spiffe_id", e.GetSpiffeId()), slog.String("parent_id", e.GetParentId()),
		selectorsAttr(e.GetSelectors()))...)
	if e.GetNode() {
		attrs = append(attrs, slog.Bool("node", true))
	}
	if e.GetAdmin() {
		attrs = append(attrs, slog.Bool("admin", true))
	}
	if e.GetDownstream() {
		attrs = append(attrs, slog.Bool("downstream", true))
	}
	if len(e.GetDnsNames()) > 0 {
		attrs = append(attrs, slog.Any("dns_names", e.GetDnsNames()))
	}
	if len(e.GetFederatesWith()) > 0 {
		attrs = append(attrs, slog.Any("federates_with", e.GetFederatesWith()))
	}
	if e.GetExpiresAt() != 0 {
		attrs = append(attrs, slog.Time("expires_at", time.Unix(e.GetExpiresAt(), 0).UTC()))
	}
	return attrs
}

// selectorsAttr lists selectors as type:value strings; empty when none.
func selectorsAttr(sels []*api.Selector) slog.Attr {
	if len(sels) == 0 {
		return slog.Attr{}
	}
	out := make([]string, len(sels))
	for i, s := range sels {
		out[i] = s.GetType() + ":" + s.GetValue()
	}
	return slog.Any("selectors", out)
}

// nonEmpty drops empty strings and empty attributes.
func nonEmpty(attrs ...slog.Attr) []slog.Attr {
	out := attrs[:0]
	for _, a := range attrs {
		if a.Key == "" || (a.Value.Kind() == slog.KindString && a.Value.String() == "") {
			continue
		}
		out = append(out, a)
	}
	return out
}

// auditBatch records one audit item per entry of a BatchCreateEntries
// call: its own refusal (verdicts, nil when every entry was valid), and
// the entry it became when the call succeeded (created).
func auditBatch(rec *audit.Record, in []*api.Entry, verdicts []error, created []registry.Entry) {
	if rec == nil {
		return
	}
	for i, e := range in {
		attrs := append([]slog.Attr{slog.Int("batch_index", i)}, entryAttrs(e, e.GetId() != "")...)
		var verdict error
		if verdicts != nil {
			verdict = verdicts[i]
		}
		if created != nil && e.GetId() == "" {
			attrs = append(attrs, slog.String("entry_id", created[i].ID))
		}
		rec.AddItem(verdict, attrs...)
	}
}
