package k8sreg

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestStaticEntrySpec(t *testing.T) {
	valid := func() ClusterStaticEntrySpec {
		return ClusterStaticEntrySpec{SPIFFEID: "spiffe://example.org/db", ParentID: "spiffe://example.org/agent/join/n1",
			Selectors: []string{"unix:uid:70"}, DNSNames: []string{"db.internal"}, X509SVIDTTL: metav1.Duration{Duration: time.Hour},
			FederatesWith: []string{"partner.org"}, Hint: "db"}
	}
	tests := []struct {
		name   string
		change func(*ClusterStaticEntrySpec)
		want   string // "" for valid
	}{
		{"valid", func(*ClusterStaticEntrySpec) {}, ""},
		{"node alias", func(s *ClusterStaticEntrySpec) {
			s.ParentID, s.Node, s.Selectors = "", true, []string{"k8s_psat:cluster:prod"}
		}, ""},
		{"node alias with parent", func(s *ClusterStaticEntrySpec) { s.Node = true }, "parentID must be empty with node: true"},
		{"no parent", func(s *ClusterStaticEntrySpec) { s.ParentID = "" }, "parentID is required"},
		{"no SPIFFE ID", func(s *ClusterStaticEntrySpec) { s.SPIFFEID = "" }, "spiffeID is required"},
		{"SPIFFE ID upper case", func(s *ClusterStaticEntrySpec) { s.SPIFFEID = "spiffe://Example.org/db" }, "spiffeID"},
		{"SPIFFE ID of another trust domain", func(s *ClusterStaticEntrySpec) { s.SPIFFEID = "spiffe://other.org/db" }, "spiffeID"},
		{"parent of another trust domain", func(s *ClusterStaticEntrySpec) { s.ParentID = "spiffe://other.org/a" }, "parentID"},
		{"reserved path", func(s *ClusterStaticEntrySpec) { s.SPIFFEID = "spiffe://example.org/signet/x" }, "reserved"},
		{"no selectors", func(s *ClusterStaticEntrySpec) { s.Selectors = nil }, "selectors: at least one"},
		{"bad selector", func(s *ClusterStaticEntrySpec) { s.Selectors = []string{"unix:uid:70", "nocolon"} }, "selectors[1]"},
		{"bad federated trust domain", func(s *ClusterStaticEntrySpec) { s.FederatesWith = []string{"Partner.org"} }, "federatesWith[0]"},
		{"TTL out of range", func(s *ClusterStaticEntrySpec) { s.X509SVIDTTL.Duration = time.Millisecond }, "x509_ttl"},
		{"bad DNS name", func(s *ClusterStaticEntrySpec) { s.DNSNames = []string{"-db"} }, "dns"},
		{"downstream", func(s *ClusterStaticEntrySpec) { s.Downstream = true }, ""},
		{"downstream node alias", func(s *ClusterStaticEntrySpec) {
			s.ParentID, s.Node, s.Selectors, s.Downstream = "", true, []string{"k8s_psat:cluster:prod"}, true
		}, "downstream cannot be set on a node-alias entry"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := valid()
			tc.change(&s)
			e, err := s.Entry(td, "prod")
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Entry: %v, want an error naming %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !ownedBy(e.ID, "prod") || e.SPIFFEID.String() != s.SPIFFEID || e.Node != s.Node || e.Downstream != s.Downstream || e.Hint != s.Hint {
				t.Fatalf("entry %+v", e)
			}
		})
	}
}

func (c *cluster) staticStatus(t *testing.T, name string) ClusterStaticEntryStatus {
	t.Helper()
	cr, _ := getResource[ClusterStaticEntry](t, c, StaticEntryGVR, name)
	return cr.Status
}

func wantStaticStatus(t *testing.T, c *cluster, name string, rendered, masked, set bool, ready metav1.ConditionStatus, msg string) {
	t.Helper()
	waitFor(t, "status of "+name, func() error {
		st := c.staticStatus(t, name)
		cond := meta.FindStatusCondition(st.Conditions, ConditionReady)
		switch {
		case st.Rendered != rendered || st.Masked != masked || st.Set != set:
			return fmt.Errorf("rendered %v masked %v set %v, want %v %v %v", st.Rendered, st.Masked, st.Set, rendered, masked, set)
		case cond == nil || cond.Status != ready || !strings.Contains(cond.Message, msg):
			return fmt.Errorf("ready condition %+v, want %s with %q", cond, ready, msg)
		}
		return nil
	})
}

// TestStaticEntries: a ClusterStaticEntry's entry is stored as written,
// follows its spec and goes with it; a bad one is refused in its status
// with nothing stored; a second resource for the same entry, static or
// rendered, is masked; another class's is left alone.
func TestStaticEntries(t *testing.T) {
	c := newCluster(t)
	st := sqliteStore(t)
	c.namespace(t, "payments", testNS)
	agent := c.node(t, "node-1")
	c.start(t, st, func(o *Options) { o.ClassName, o.WatchClassless = "eu", true })

	c.applyStatic(t, "db", ClusterStaticEntrySpec{SPIFFEID: "spiffe://example.org/db", ParentID: "spiffe://example.org/agent/join/n1",
		Selectors: []string{"unix:uid:70"}, DNSNames: []string{"db.internal"}})
	c.applyStatic(t, "nodes-eu", ClusterStaticEntrySpec{SPIFFEID: "spiffe://example.org/nodes/eu", Node: true,
		Selectors: []string{"k8s_psat:cluster:prod"}, ClassName: "eu"})
	c.applyStatic(t, "bad", ClusterStaticEntrySpec{SPIFFEID: "spiffe://example.org/x", ParentID: "spiffe://example.org/agent/join/n1",
		Selectors: []string{"unix:uid"}})
	c.applyStatic(t, "other-class", ClusterStaticEntrySpec{SPIFFEID: "spiffe://example.org/us", ParentID: "spiffe://example.org/agent/join/n1",
		Selectors: []string{"unix:uid:1"}, ClassName: "us"})
	db := "spiffe://example.org/db spiffe://example.org/agent/join/n1 unix:uid:70 dns=db.internal"
	nodes := "spiffe://example.org/nodes/eu  k8s_psat:cluster:prod"
	wantEntries(t, st, db, nodes)
	wantStaticStatus(t, c, "db", true, false, true, metav1.ConditionTrue, "set")
	wantStaticStatus(t, c, "nodes-eu", true, false, true, metav1.ConditionTrue, "set")
	wantStaticStatus(t, c, "bad", false, false, false, metav1.ConditionFalse, "selectors[0]")
	if got := c.staticStatus(t, "other-class"); len(got.Conditions) != 0 || got.Set {
		t.Errorf("another class's resource got this controller's status %+v", got)
	}

	// The spec changes the entry in place.
	c.applyStatic(t, "db", ClusterStaticEntrySpec{SPIFFEID: "spiffe://example.org/db", ParentID: "spiffe://example.org/agent/join/n1",
		Selectors: []string{"unix:uid:70"}, DNSNames: []string{"db.internal", "db"}, X509SVIDTTL: metav1.Duration{Duration: 10 * time.Minute}})
	db = "spiffe://example.org/db spiffe://example.org/agent/join/n1 unix:uid:70 dns=db,db.internal ttl=10m0s"
	wantEntries(t, st, db, nodes)

	// The same entry from a younger static resource, and from a
	// ClusterSPIFFEID: one entry, the static one's; the others count it
	// masked.
	c.applyStatic(t, "db-again", ClusterStaticEntrySpec{SPIFFEID: "spiffe://example.org/db", ParentID: "spiffe://example.org/agent/join/n1",
		Selectors: []string{"unix:uid:70"}})
	wantStaticStatus(t, c, "db-again", true, true, false, metav1.ConditionTrue, "masked")
	web := c.pod(t, "payments", "web", "node-1", nil)
	c.applyStatic(t, "web", ClusterStaticEntrySpec{SPIFFEID: "spiffe://example.org/ns/payments/sa/sa-web", ParentID: agent,
		Selectors: []string{"k8s:pod-uid:" + string(web.UID)}, Hint: "static"})
	c.apply(t, "workloads", ClusterSPIFFEIDSpec{SPIFFEIDTemplate: nsSA, NamespaceSelector: testNSSelector})
	wantStatus(t, c, "workloads", ClusterSPIFFEIDStats{NamespacesSelected: 1, PodsSelected: 1, EntriesMasked: 1},
		metav1.ConditionTrue, "0 entries set")
	webEntry := "spiffe://example.org/ns/payments/sa/sa-web " + agent + " k8s:pod-uid:" + string(web.UID)
	wantEntries(t, st, db, nodes, webEntry)
	all, err := st.ListEntries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range all {
		if e.SPIFFEID.Path() == "/ns/payments/sa/sa-web" && e.Hint != "static" {
			t.Errorf("the ClusterSPIFFEID's entry replaced the static one: %+v", e)
		}
	}

	// Deleting the resource deletes its entry.
	if err := c.dyn.Resource(StaticEntryGVR).Delete(context.Background(), "nodes-eu", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wantEntries(t, st, db, webEntry)
}

// FuzzStaticEntry: whatever a ClusterStaticEntry holds, Entry either
// refuses it or returns a valid entry, with the same controller-owned ID
// every time.
func FuzzStaticEntry(f *testing.F) {
	f.Add("spiffe://example.org/db", "spiffe://example.org/agent/join/n1", false, "unix:uid:70", "db.internal", "partner.org", "db")
	f.Add("spiffe://example.org/k8s/nodes", "", true, "k8s_psat:cluster:prod", "", "", "")
	f.Add("spiffe://example.org/../x", "spiffe://example.org/a", false, "unix:uid", "-x", "Partner.org", "h i")
	f.Add("spiffe://example.org/signet/server", "spiffe://example.org/a", false, "k8s:ns:a:b:c", "*.db", "example.org", "")
	f.Fuzz(func(t *testing.T, id, parent string, node bool, sel, dns, fed, hint string) {
		s := ClusterStaticEntrySpec{SPIFFEID: id, ParentID: parent, Node: node, Selectors: []string{sel}, Hint: hint}
		if dns != "" {
			s.DNSNames = []string{dns}
		}
		if fed != "" {
			s.FederatesWith = []string{fed}
		}
		e, err := s.Entry(td, "prod")
		if err != nil {
			return
		}
		if verr := e.Validate(td); verr != nil {
			t.Fatalf("an invalid entry: %v", verr)
		}
		again, _ := s.Entry(td, "prod")
		if !ownedBy(e.ID, "prod") || again.ID != e.ID {
			t.Fatalf("entry IDs %q, %q: not owned or not stable", e.ID, again.ID)
		}
	})
}
