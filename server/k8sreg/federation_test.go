package k8sreg

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/signetid/signet/server/federation"
	"github.com/signetid/signet/server/store"
)

// testBundle is a SPIFFE bundle document holding one root whose URI SAN
// names sanTD, and its DER.
func testBundle(t testing.TB, sanTD string) (doc string, root []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: sanTD + " root"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		URIs: []*url.URL{{Scheme: "spiffe", Host: sanTD}}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	b := spiffebundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString(sanTD), []*x509.Certificate{cert})
	out, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return string(out), der
}

func TestFederatedTrustDomainSpec(t *testing.T) {
	partnerBundle, partnerRoot := testBundle(t, "partner.org")
	otherBundle, _ := testBundle(t, "other.org")
	valid := func() ClusterFederatedTrustDomainSpec {
		return ClusterFederatedTrustDomainSpec{TrustDomain: "partner.org", BundleEndpointURL: "https://signet.partner.org:8443",
			BundleEndpointProfile: BundleEndpointProfile{Type: "https_spiffe", EndpointSPIFFEID: "spiffe://partner.org/spire/server"}}
	}
	tests := []struct {
		name   string
		change func(*ClusterFederatedTrustDomainSpec)
		want   string // an error naming this; "" for valid
		// For valid specs: the stored form, and whether a bundle comes along.
		stored    store.FederationRelationship
		bootstrap bool
	}{
		{name: "https_spiffe", change: func(*ClusterFederatedTrustDomainSpec) {},
			stored: store.FederationRelationship{TrustDomain: "partner.org", BundleEndpointURL: "https://signet.partner.org:8443",
				Profile: "https_spiffe", EndpointSPIFFEID: "spiffe://partner.org/spire/server"}},
		{name: "https_spiffe, a Signet server by default", change: func(s *ClusterFederatedTrustDomainSpec) { s.BundleEndpointProfile.EndpointSPIFFEID = "" },
			stored: store.FederationRelationship{TrustDomain: "partner.org", BundleEndpointURL: "https://signet.partner.org:8443",
				Profile: "https_spiffe", EndpointSPIFFEID: "spiffe://partner.org/signet/server"}},
		{name: "https_web", change: func(s *ClusterFederatedTrustDomainSpec) {
			s.BundleEndpointProfile = BundleEndpointProfile{Type: "https_web"}
			s.BundleEndpointURL = "https://partner.org/.well-known/spiffe-bundle"
		}, stored: store.FederationRelationship{TrustDomain: "partner.org", BundleEndpointURL: "https://partner.org/.well-known/spiffe-bundle", Profile: "https_web"}},
		{name: "trust domain as a SPIFFE ID", change: func(s *ClusterFederatedTrustDomainSpec) { s.TrustDomain = "spiffe://partner.org" },
			stored: store.FederationRelationship{TrustDomain: "partner.org", BundleEndpointURL: "https://signet.partner.org:8443",
				Profile: "https_spiffe", EndpointSPIFFEID: "spiffe://partner.org/spire/server"}},
		{name: "with a bootstrap bundle", change: func(s *ClusterFederatedTrustDomainSpec) { s.TrustDomainBundle = partnerBundle },
			stored: store.FederationRelationship{TrustDomain: "partner.org", BundleEndpointURL: "https://signet.partner.org:8443",
				Profile: "https_spiffe", EndpointSPIFFEID: "spiffe://partner.org/spire/server"}, bootstrap: true},

		{name: "no trust domain", change: func(s *ClusterFederatedTrustDomainSpec) { s.TrustDomain = "" }, want: "trustDomain"},
		{name: "trust domain upper case", change: func(s *ClusterFederatedTrustDomainSpec) { s.TrustDomain = "Partner.org" }, want: "trustDomain"},
		{name: "the server's own trust domain", change: func(s *ClusterFederatedTrustDomainSpec) { s.TrustDomain = "example.org" }, want: "own trust domain"},
		{name: "no URL", change: func(s *ClusterFederatedTrustDomainSpec) { s.BundleEndpointURL = "" }, want: "bundleEndpointURL is required"},
		{name: "http URL", change: func(s *ClusterFederatedTrustDomainSpec) { s.BundleEndpointURL = "http://partner.org" }, want: "bundleEndpointURL"},
		{name: "URL with user info", change: func(s *ClusterFederatedTrustDomainSpec) { s.BundleEndpointURL = "https://u:p@partner.org" }, want: "bundleEndpointURL"},
		{name: "no profile", change: func(s *ClusterFederatedTrustDomainSpec) { s.BundleEndpointProfile.Type = "" }, want: "bundleEndpointProfile.type"},
		{name: "unknown profile", change: func(s *ClusterFederatedTrustDomainSpec) { s.BundleEndpointProfile.Type = "https" }, want: "bundleEndpointProfile.type"},
		{name: "bad endpoint ID", change: func(s *ClusterFederatedTrustDomainSpec) {
			s.BundleEndpointProfile.EndpointSPIFFEID = "spiffe://partner.org/a//b"
		},
			want: "bundleEndpointProfile.endpointSPIFFEID"},
		{name: "endpoint ID with https_web", change: func(s *ClusterFederatedTrustDomainSpec) { s.BundleEndpointProfile.Type = "https_web" },
			want: "bundleEndpointProfile.endpointSPIFFEID goes with the https_spiffe profile only"},
		{name: "bundle not JSON", change: func(s *ClusterFederatedTrustDomainSpec) { s.TrustDomainBundle = "-----BEGIN CERTIFICATE-----" }, want: "trustDomainBundle"},
		{name: "bundle without keys", change: func(s *ClusterFederatedTrustDomainSpec) { s.TrustDomainBundle = `{"keys":[]}` }, want: "trustDomainBundle"},
		{name: "bundle of another trust domain", change: func(s *ClusterFederatedTrustDomainSpec) { s.TrustDomainBundle = otherBundle },
			want: "trustDomainBundle: bundle of partner.org: root"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := valid()
			tc.change(&s)
			rel, auths, err := s.Relationship(td)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Relationship: %v, want an error naming %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.stored.Owner = "k8s_controller/prod"
			if got := rel.StoreForm("k8s_controller/prod"); got != tc.stored {
				t.Errorf("stored as %+v, want %+v", got, tc.stored)
			}
			switch {
			case !tc.bootstrap && auths != nil:
				t.Errorf("authorities %v from no bundle", auths)
			case tc.bootstrap && (len(auths) != 1 || auths[0].TrustDomain != "partner.org" || !slices.Equal(auths[0].Data, partnerRoot)):
				t.Errorf("authorities %+v, want the bundle's root for partner.org", auths)
			}
		})
	}
}

func TestRelationshipOwner(t *testing.T) {
	for _, tc := range []struct{ cluster, class, want string }{
		{"prod", "", "k8s_controller/prod"},
		{"prod", "eu", "k8s_controller/prod/eu"},
	} {
		if got := RelationshipOwner(tc.cluster, tc.class); got != tc.want || !strings.HasPrefix(got, RelationshipOwnerPrefix) {
			t.Errorf("RelationshipOwner(%q, %q) = %q, want %q", tc.cluster, tc.class, got, tc.want)
		}
	}
}

// FuzzFederatedTrustDomain: whatever a ClusterFederatedTrustDomain holds,
// Relationship either refuses it or returns a relationship the store
// takes and the federation service reads back unchanged, with bootstrap
// authorities only from a bundle, all of its trust domain.
func FuzzFederatedTrustDomain(f *testing.F) {
	doc, _ := testBundle(f, "partner.org")
	f.Add("partner.org", "https://signet.partner.org:8443", "https_spiffe", "spiffe://partner.org/spire/server", doc)
	f.Add("spiffe://partner.org", "https://partner.org/bundle", "https_web", "", "")
	f.Add("example.org", "https://x", "https_spiffe", "", "")
	f.Add("Partner.org", "https://u@p/x", "https", "spiffe://partner.org/../x", `{"keys":[]}`)
	f.Add("other.org", "https://[::1]:8443/b?q#f", "https_spiffe", "spiffe://partner.org/x", doc)
	f.Fuzz(func(t *testing.T, trustDomain, endpointURL, profile, endpointID, bundle string) {
		s := ClusterFederatedTrustDomainSpec{TrustDomain: trustDomain, BundleEndpointURL: endpointURL,
			BundleEndpointProfile: BundleEndpointProfile{Type: profile, EndpointSPIFFEID: endpointID}, TrustDomainBundle: bundle}
		rel, auths, err := s.Relationship(td)
		if err != nil {
			return
		}
		stored := rel.StoreForm(RelationshipOwner("prod", ""))
		valid := stored.TrustDomain != td.Name() && stored.BundleEndpointURL != ""
		switch stored.Profile {
		case "https_spiffe":
			valid = valid && stored.EndpointSPIFFEID != ""
		case "https_web":
			valid = valid && stored.EndpointSPIFFEID == ""
		default:
			valid = false
		}
		if !valid {
			t.Fatalf("an invalid relationship %+v", stored)
		}
		back, err := federation.FromStore(stored, td)
		if err != nil {
			t.Fatalf("the federation service refuses %+v: %v", stored, err)
		}
		if again := back.StoreForm(stored.Owner); again != stored {
			t.Fatalf("read back as %+v, stored %+v", again, stored)
		}
		if (bundle == "") != (auths == nil) {
			t.Fatalf("bundle %q gave authorities %v", bundle, auths)
		}
		for _, a := range auths {
			if a.TrustDomain != stored.TrustDomain {
				t.Fatalf("an authority of %s for %s", a.TrustDomain, stored.TrustDomain)
			}
		}
	})
}

// applyFederation creates or replaces a ClusterFederatedTrustDomain.
func (c *cluster) applyFederation(t *testing.T, name string, spec ClusterFederatedTrustDomainSpec) {
	t.Helper()
	c.applyResource(t, FederatedTrustDomainGVR, FederatedTrustDomainKind, name, &spec)
}

func (c *cluster) fedStatus(t *testing.T, name string) ClusterFederatedTrustDomainStatus {
	t.Helper()
	cr, _ := getResource[ClusterFederatedTrustDomain](t, c, FederatedTrustDomainGVR, name)
	return cr.Status
}

func wantFedStatus(t *testing.T, c *cluster, name string, ready metav1.ConditionStatus, reason, msg string) {
	t.Helper()
	waitFor(t, "status of "+name, func() error {
		cond := meta.FindStatusCondition(c.fedStatus(t, name).Conditions, ConditionReady)
		if cond == nil || cond.Status != ready || cond.Reason != reason || !strings.Contains(cond.Message, msg) {
			return fmt.Errorf("ready condition %+v, want %s %s with %q", cond, ready, reason, msg)
		}
		return nil
	})
}

// relationships lists the store's as "trust-domain url profile endpoint-id owner".
func relationships(t *testing.T, st store.Store) []string {
	t.Helper()
	all, err := st.ListFederationRelationships(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range all {
		out = append(out, strings.Join([]string{r.TrustDomain, r.BundleEndpointURL, r.Profile, r.EndpointSPIFFEID, r.Owner}, " "))
	}
	return out
}

func wantRelationships(t *testing.T, st store.Store, want ...string) {
	t.Helper()
	wantSorted(t, "federation relationships", func() []string { return relationships(t, st) }, want)
}

// roots returns the DER of the X.509 authorities the store holds for td.
func roots(t *testing.T, st store.Store, td string) [][]byte {
	t.Helper()
	auths, _, err := st.ListAuthorities(context.Background(), td)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, a := range auths {
		out = append(out, a.Data)
	}
	return out
}

// TestFederatedTrustDomains: a ClusterFederatedTrustDomain of the
// controller's class becomes a relationship the controller owns, changed in
// place with its spec and deleted with it; its bundle bootstraps the trust
// domain only while no bundle is held. Invalid specs and bundles are refused
// in the status with nothing stored; relationships of an operator or
// another controller are neither taken over nor deleted; of two resources
// for one trust domain the older one is in force until it goes; another
// class's resource is left alone.
func TestFederatedTrustDomains(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	st := sqliteStore(t)
	owner := RelationshipOwner("prod", "eu")
	// Before the controller: operators' relationships, another
	// controller's, one of this controller's that no resource asks for any
	// more, and a bundle already held for held.org.
	for _, r := range []store.FederationRelationship{
		{TrustDomain: "operator.org", BundleEndpointURL: "https://operator.org/b", Profile: "https_web"},
		{TrustDomain: "cluster2.org", BundleEndpointURL: "https://cluster2.org/b", Profile: "https_web", Owner: "k8s_controller/other"},
		{TrustDomain: "gone.org", BundleEndpointURL: "https://gone.org/b", Profile: "https_web", Owner: owner}, // no resource asks for it
		{TrustDomain: "manual.org", BundleEndpointURL: "https://manual.org/b", Profile: "https_web"},           // nor for this one
	} {
		if _, err := st.PutFederationRelationship(ctx, r, nil); err != nil {
			t.Fatal(err)
		}
	}
	heldDoc, _ := testBundle(t, "held.org")
	_, heldRoot := testBundle(t, "held.org")
	if _, err := st.SetBundle(ctx, "held.org", []store.Authority{{TrustDomain: "held.org", Kind: store.X509Authority, KeyID: "held", Data: heldRoot,
		ExpiresAt: time.Now().Add(time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	partnerDoc, partnerRoot := testBundle(t, "partner.org")
	wrongDoc, _ := testBundle(t, "partner.org")
	c.start(t, st, func(o *Options) { o.ClassName, o.WatchClassless = "eu", true })

	spiffe := func(td, url, bundle string) ClusterFederatedTrustDomainSpec {
		return ClusterFederatedTrustDomainSpec{TrustDomain: td, BundleEndpointURL: url, TrustDomainBundle: bundle,
			BundleEndpointProfile: BundleEndpointProfile{Type: "https_spiffe", EndpointSPIFFEID: "spiffe://" + td + "/spire/server"}}
	}
	web := func(td, url, class string) ClusterFederatedTrustDomainSpec {
		return ClusterFederatedTrustDomainSpec{TrustDomain: td, BundleEndpointURL: url, ClassName: class,
			BundleEndpointProfile: BundleEndpointProfile{Type: "https_web"}}
	}
	c.applyFederation(t, "partner", spiffe("partner.org", "https://signet.partner.org:8443", partnerDoc))
	c.applyFederation(t, "held", spiffe("held.org", "https://signet.held.org:8443", heldDoc))
	c.applyFederation(t, "vendor", web("vendor.example", "https://vendor.example/bundle", "eu"))
	c.applyFederation(t, "operator", web("operator.org", "https://elsewhere.org/b", ""))
	c.applyFederation(t, "cluster2", web("cluster2.org", "https://elsewhere.org/b", ""))
	c.applyFederation(t, "own", web("example.org", "https://example.org/b", ""))
	c.applyFederation(t, "bad-bundle", spiffe("badbundle.org", "https://badbundle.org", wrongDoc))
	c.applyFederation(t, "other-class", web("us.org", "https://us.org/b", "us"))

	operatorRel := "operator.org https://operator.org/b https_web  "
	manualRel := "manual.org https://manual.org/b https_web  "
	cluster2Rel := "cluster2.org https://cluster2.org/b https_web  k8s_controller/other"
	partnerRel := "partner.org https://signet.partner.org:8443 https_spiffe spiffe://partner.org/spire/server " + owner
	heldRel := "held.org https://signet.held.org:8443 https_spiffe spiffe://held.org/spire/server " + owner
	vendorRel := "vendor.example https://vendor.example/bundle https_web  " + owner
	wantRelationships(t, st, operatorRel, manualRel, cluster2Rel, partnerRel, heldRel, vendorRel)
	wantFedStatus(t, c, "partner", metav1.ConditionTrue, ReasonReconciled, "federation relationship with partner.org set")
	wantFedStatus(t, c, "vendor", metav1.ConditionTrue, ReasonReconciled, "vendor.example set")
	wantFedStatus(t, c, "operator", metav1.ConditionFalse, ReasonNotOwned, "with operator.org is an operator's")
	wantFedStatus(t, c, "cluster2", metav1.ConditionFalse, ReasonNotOwned, "managed by k8s_controller/other")
	wantFedStatus(t, c, "own", metav1.ConditionFalse, ReasonInvalidSpec, "example.org is this server's own trust domain")
	wantFedStatus(t, c, "bad-bundle", metav1.ConditionFalse, ReasonInvalidSpec, "trustDomainBundle: bundle of badbundle.org")
	if got := c.fedStatus(t, "other-class"); len(got.Conditions) != 0 {
		t.Errorf("another class's resource got this controller's status %+v", got)
	}
	// The bundle bootstraps partner.org; held.org keeps the bundle it had;
	// nothing of the refused bundle is stored.
	if got := roots(t, st, "partner.org"); len(got) != 1 || !slices.Equal(got[0], partnerRoot) {
		t.Errorf("partner.org's bundle holds %d roots, want the resource's", len(got))
	}
	if got := roots(t, st, "held.org"); len(got) != 1 || !slices.Equal(got[0], heldRoot) {
		t.Errorf("held.org's bundle holds %d roots, want the one held before", len(got))
	}
	if got := roots(t, st, "badbundle.org"); len(got) != 0 {
		t.Errorf("the refused bundle was stored: %d roots", len(got))
	}

	// The spec changes the relationship in place.
	before, err := st.GetFederationRelationship(ctx, "partner.org")
	if err != nil {
		t.Fatal(err)
	}
	c.applyFederation(t, "partner", spiffe("partner.org", "https://signet.partner.org:9443", partnerDoc))
	partnerRel = strings.Replace(partnerRel, ":8443", ":9443", 1)
	wantRelationships(t, st, operatorRel, manualRel, cluster2Rel, partnerRel, heldRel, vendorRel)
	after, err := st.GetFederationRelationship(ctx, "partner.org")
	if err != nil {
		t.Fatal(err)
	}
	if !after.CreatedAt.Equal(before.CreatedAt) || after.Revision <= before.Revision {
		t.Errorf("the relationship was not updated in place: %+v, then %+v", before, after)
	}

	// A younger resource for partner.org (whose name sorts first) is masked
	// by the older one, until that one goes.
	time.Sleep(1100 * time.Millisecond) // creation timestamps have one-second resolution
	c.applyFederation(t, "a-partner", web("partner.org", "https://partner.org/bundle", ""))
	wantFedStatus(t, c, "a-partner", metav1.ConditionFalse, ReasonMasked, "set by the older ClusterFederatedTrustDomain partner")
	if got := relationships(t, st); !slices.Contains(got, partnerRel) {
		t.Fatalf("the younger resource's relationship replaced the older one's: %v", got)
	}
	if err := c.dyn.Resource(FederatedTrustDomainGVR).Delete(ctx, "partner", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	partnerRel = "partner.org https://partner.org/bundle https_web  " + owner
	wantRelationships(t, st, operatorRel, manualRel, cluster2Rel, partnerRel, heldRel, vendorRel)
	wantFedStatus(t, c, "a-partner", metav1.ConditionTrue, ReasonReconciled, "partner.org set")

	// Deleting the resource deletes its relationship; the bundle stays.
	if err := c.dyn.Resource(FederatedTrustDomainGVR).Delete(ctx, "a-partner", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wantRelationships(t, st, operatorRel, manualRel, cluster2Rel, heldRel, vendorRel)
	if _, err := st.GetFederationRelationship(ctx, "partner.org"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("partner.org's relationship: %v, want ErrNotFound", err)
	}
	if got := roots(t, st, "partner.org"); len(got) != 1 {
		t.Errorf("partner.org's bundle went with its relationship")
	}
}

// raceStore is the real store, with writes made right after the controller
// reads: what another server or an operator may do meanwhile, which the
// controller's writes must see in their own transactions.
type raceStore struct {
	store.Store
	afterListRelationships, afterListBundles func(context.Context) error
}

func (s raceStore) ListFederationRelationships(ctx context.Context) ([]store.FederationRelationship, error) {
	list, err := s.Store.ListFederationRelationships(ctx)
	if err == nil && s.afterListRelationships != nil {
		err = s.afterListRelationships(ctx)
	}
	return list, err
}

func (s raceStore) ListBundleTrustDomains(ctx context.Context) ([]string, error) {
	list, err := s.Store.ListBundleTrustDomains(ctx)
	if err == nil && s.afterListBundles != nil {
		err = s.afterListBundles(ctx)
	}
	return list, err
}

// TestFederationRaces: an operator's relationship created after the
// controller read the store's is not overwritten (the resource is marked
// NotOwned), and a bundle fetched after the controller looked for one is
// not replaced by the bootstrap bundle.
func TestFederationRaces(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	operator := store.FederationRelationship{TrustDomain: "operator.org", BundleEndpointURL: "https://operator.example/b", Profile: "https_web"}
	bootstrapDoc, _ := testBundle(t, "partner.org")
	_, fetchedRoot := testBundle(t, "partner.org")
	base := sqliteStore(t)
	st := raceStore{Store: base,
		afterListRelationships: func(ctx context.Context) error {
			_, err := base.PutFederationRelationship(ctx, operator, nil)
			return err
		},
		afterListBundles: func(ctx context.Context) error {
			_, err := base.SetBundle(ctx, "partner.org", []store.Authority{{TrustDomain: "partner.org", Kind: store.X509Authority,
				KeyID: "fetched", Data: fetchedRoot, ExpiresAt: time.Now().Add(time.Hour)}})
			return err
		}}
	ctrl, err := New(Options{Client: c.client, Dynamic: c.dyn, Store: st, TrustDomain: td, Cluster: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	resource := func(name string, spec ClusterFederatedTrustDomainSpec) *unstructured.Unstructured {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&spec)
		if err != nil {
			t.Fatal(err)
		}
		return &unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{"name": name}, "spec": m}}
	}
	results := ctrl.desiredFederations([]*unstructured.Unstructured{
		resource("operator", ClusterFederatedTrustDomainSpec{TrustDomain: "operator.org", BundleEndpointURL: "https://signet.operator.org:8443",
			BundleEndpointProfile: BundleEndpointProfile{Type: "https_web"}}),
		resource("partner", ClusterFederatedTrustDomainSpec{TrustDomain: "partner.org", BundleEndpointURL: "https://signet.partner.org:8443",
			BundleEndpointProfile: BundleEndpointProfile{Type: "https_spiffe"}, TrustDomainBundle: bootstrapDoc}),
	})
	if failures, err := ctrl.applyFederations(ctx, results); err != nil || failures != 0 {
		t.Fatalf("applyFederations: %d failures, %v", failures, err)
	}
	if r := results[0]; r.reason != ReasonNotOwned || !strings.Contains(r.message, "an operator's") {
		t.Errorf("result %s: %s, want %s", r.reason, r.message, ReasonNotOwned)
	}
	got, err := st.GetFederationRelationship(ctx, "operator.org")
	if err != nil {
		t.Fatal(err)
	}
	operator.Revision, operator.CreatedAt = got.Revision, got.CreatedAt
	if got != operator {
		t.Errorf("stored %+v, want the operator's %+v", got, operator)
	}
	if r := results[1]; r.reason != "" {
		t.Errorf("partner: %s %s", r.reason, r.message)
	}
	if got := roots(t, st, "partner.org"); len(got) != 1 || !slices.Equal(got[0], fetchedRoot) {
		t.Errorf("partner.org's bundle holds %d roots, want the fetched one alone", len(got))
	}
}
