package test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// localAuthority is one authority as `localauthority ... --output json`
// prints it.
type localAuthority struct {
	AuthorityID string `json:"authority_id"`
	Status      string `json:"status"`
	Tainted     bool   `json:"tainted"`
	Agents      string `json:"agents"` // protojson writes int64 as a string
}

// agentsUnder is how many agents `show` says hold an SVID the X.509 CA id signed.
func agentsUnder(t *testing.T, n *node, id string) string {
	t.Helper()
	for _, a := range authorities(t, n, "x509") {
		if a.AuthorityID == id {
			return a.Agents
		}
	}
	t.Fatalf("no X.509 CA %s", id)
	return ""
}

func authorityCLI(t *testing.T, n *node, kind, step string, args ...string) localAuthority {
	t.Helper()
	out, err := n.server.cli(t, append([]string{"server", "localauthority", kind, step, "--output", "json"}, args...)...)
	if err != nil {
		t.Fatalf("localauthority %s %s: %v\n%s", kind, step, err, out)
	}
	var a localAuthority
	if err := json.Unmarshal([]byte(out), &a); err != nil {
		t.Fatalf("localauthority %s %s output: %v\n%s", kind, step, err, out)
	}
	return a
}

// authorities are the server's authorities of kind, as `show` lists them.
func authorities(t *testing.T, n *node, kind string) []localAuthority {
	t.Helper()
	out, err := n.server.cli(t, "server", "localauthority", kind, "show", "--output", "json")
	if err != nil {
		t.Fatal(err)
	}
	var resp struct{ Authorities []localAuthority }
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("show output: %v\n%s", err, out)
	}
	return resp.Authorities
}

func activeAuthority(t *testing.T, n *node, kind string) string {
	t.Helper()
	list := authorities(t, n, kind)
	for _, a := range list {
		if a.Status == "active" {
			return a.AuthorityID
		}
	}
	t.Fatalf("no active %s authority in %+v", kind, list)
	return ""
}

// issuerKey is the subject key ID of the CA that issued the workload's SVID.
func issuerKey(t *testing.T, n *node) (string, *x509.Certificate) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+n.socket))
	if err != nil {
		t.Fatal(err)
	}
	return string(svid.Certificates[0].AuthorityKeyId), svid.Certificates[0]
}

func jwtKeyID(t *testing.T, n *node) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	svid, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "db"}, workloadapi.WithAddr("unix://"+n.socket))
	if err != nil {
		t.Fatal(err)
	}
	head, _, _ := strings.Cut(svid.Marshal(), ".")
	raw, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		t.Fatal(err)
	}
	var h struct{ Kid string }
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	return h.Kid
}

func rootKeyIDs(t *testing.T, n *node) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	bundles, err := workloadapi.FetchX509Bundles(ctx, workloadapi.WithAddr("unix://"+n.socket))
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundles.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString("example.org"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, c := range b.X509Authorities() {
		out[string(c.SubjectKeyId)] = true
	}
	return out
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func agentSerial(t *testing.T, n *node) string {
	t.Helper()
	out, err := n.server.cli(t, "server", "agent", "list")
	if err != nil {
		t.Fatal(err)
	}
	return fieldAfter(out, "Serial: ")
}

func fieldAfter(text, prefix string) string {
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, prefix); ok {
			return v
		}
	}
	return ""
}

// A forced rotation, as an operator who fears the CA and JWT keys leaked
// runs it: the workload's SVID and JWT-SVID, and the agent's own SVID, are
// re-signed at taint (an hour before their half-life), and after revocation
// the old root is gone from the bundle while the agent, restarted, still
// reaches the server.
func TestForcedRotation(t *testing.T) {
	want := callerID(t)
	n := startNode(t) // one-hour SVIDs: nothing rotates by itself here
	if _, err := n.server.cli(t, "server", "entry", "create", "--parent-id", nodeAgentID,
		"--spiffe-id", want.String(), "--selector", "unix:uid:0"); err != nil {
		t.Fatal(err)
	}
	waitForID(t, n, want)
	oldCA, oldKid := activeAuthority(t, n, "x509"), activeAuthority(t, n, "jwt")
	oldIssuer, oldLeaf := issuerKey(t, n)
	if jwtKeyID(t, n) != oldKid {
		t.Fatal("the JWT-SVID is not signed with the active JWT key")
	}
	oldAgentSerial := agentSerial(t, n)

	// Refusals leave everything as it was.
	for _, tc := range []struct{ args, want string }{
		{"x509 taint --authority-id " + oldCA, "is active; prepare and activate a new one first"},
		{"x509 revoke --authority-id " + oldCA, "only an old, tainted one can be revoked"},
		{"x509 activate --authority-id 0011223344556677", "no X.509 CA has ID"},
		{"x509 taint", "--authority-id is required"},
		{"rsa show", "unknown command"},
	} {
		out, err := n.server.cli(t, append([]string{"server", "localauthority"}, strings.Fields(tc.args)...)...)
		if err == nil || !strings.Contains(err.Error()+out, tc.want) {
			t.Errorf("localauthority %s: %v %s; want an error mentioning %q", tc.args, err, out, tc.want)
		}
	}

	// Prepare: the new root reaches the workload's bundle; nothing is re-signed.
	newCA := authorityCLI(t, n, "x509", "prepare")
	newKid := authorityCLI(t, n, "jwt", "prepare")
	if newCA.Status != "prepared" || newCA.AuthorityID == oldCA {
		t.Fatalf("prepare answered %+v", newCA)
	}
	eventually(t, "the workload's bundle holds two roots", func() bool { return len(rootKeyIDs(t, n)) == 2 })

	// Activate, then taint: the agent re-signs at once.
	authorityCLI(t, n, "x509", "activate", "--authority-id", newCA.AuthorityID)
	authorityCLI(t, n, "jwt", "activate", "--authority-id", newKid.AuthorityID)
	if issuer, _ := issuerKey(t, n); issuer != oldIssuer {
		t.Fatal("activation alone re-signed the workload's SVID; only a taint should")
	}
	if got := agentsUnder(t, n, oldCA); got != "1" {
		t.Fatalf("show: %s agents under the old CA before the taint, want 1 (ours)", got)
	}
	if a := authorityCLI(t, n, "x509", "taint", "--authority-id", oldCA); !a.Tainted || a.Status != "old" {
		t.Fatalf("taint answered %+v", a)
	}
	authorityCLI(t, n, "jwt", "taint", "--authority-id", oldKid)
	eventually(t, "the workload's SVID is re-signed by the new CA", func() bool {
		issuer, leaf := issuerKey(t, n)
		return issuer != oldIssuer && !bytes.Equal(leaf.Raw, oldLeaf.Raw) && rootKeyIDs(t, n)[issuer]
	})
	eventually(t, "the JWT-SVID is signed with the new key", func() bool { return jwtKeyID(t, n) == newKid.AuthorityID })
	eventually(t, "the agent's own SVID is renewed", func() bool { return agentSerial(t, n) != oldAgentSerial })
	if got := agentsUnder(t, n, oldCA); got != "0" {
		t.Fatalf("show: %s agents under the old CA after the agent re-signed, want 0", got)
	}

	// Revoke: the old root leaves the bundle, for the CLI and the workload.
	if a := authorityCLI(t, n, "x509", "revoke", "--authority-id", oldCA); a.Status != "revoked" {
		t.Fatalf("revoke answered %+v", a)
	}
	authorityCLI(t, n, "jwt", "revoke", "--authority-id", oldKid)
	bundle, err := n.server.cli(t, "server", "bundle", "show", "--format", "spiffe")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(bundle, oldKid) || strings.Count(bundle, `"use": "x509-svid"`)+strings.Count(bundle, `"use":"x509-svid"`) != 1 {
		t.Fatalf("bundle after revocation still holds the old authorities:\n%s", bundle)
	}
	eventually(t, "the workload's bundle holds only the new root", func() bool {
		roots := rootKeyIDs(t, n)
		return len(roots) == 1 && !roots[oldIssuer]
	})

	// The agent, restarted with its data dir, reconnects: its SVID and the
	// server's certificate are both under the new CA.
	n.agent.Stop()
	n.agent = startSignet(t, nil, n.agentArgs...)
	n.agent.waitLine(t, "agent ready", 30*time.Second)
	other := spiffeid.RequireFromPath(want.TrustDomain(), "/after-revoke")
	if _, err := n.server.cli(t, "server", "entry", "create", "--parent-id", nodeAgentID,
		"--spiffe-id", other.String(), "--selector", "unix:uid:0"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the restarted agent receives an entry created after the revocation", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr("unix://"+n.socket))
		if err != nil {
			return false
		}
		for _, s := range resp {
			if s.ID == other {
				return true
			}
		}
		return false
	})
}
