package k8sreg

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
)

// elected gives a controller a Lease, with a client of its own as the
// server's, and short timings, so that the test sees handovers within
// seconds.
func (c *cluster) elected(t *testing.T, identity string) func(*Options) {
	client, _, err := Clients(c.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	return func(o *Options) {
		o.LeaderElection = &LeaderElection{Namespace: "signet-system", Name: "signet-controller", Client: client, Identity: identity,
			LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 250 * time.Millisecond}
	}
}

func (c *cluster) leaseHolder(t *testing.T) string {
	t.Helper()
	l, err := c.client.CoordinationV1().Leases("signet-system").Get(context.Background(), "signet-controller", metav1.GetOptions{})
	if err != nil {
		return ""
	}
	if l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// TestLeaderElection: of two servers' controllers on one Lease, one
// reconciles and the other stands by, writing nothing (each has a store of
// its own here, to tell their writes apart). The leader stopping hands the
// Lease over at once; a leader whose Lease someone else takes stops, and
// leads again once that Lease expires.
func TestLeaderElection(t *testing.T) {
	c := newCluster(t)
	c.namespace(t, "signet-system", nil)
	c.namespace(t, "payments", testNS)
	agent := c.node(t, "node-1")
	stA, stB := sqliteStore(t), sqliteStore(t)
	a, stopA := c.start(t, stA, c.elected(t, "server-a"))
	waitFor(t, "server-a to lead", func() error {
		if !a.Leading() || c.leaseHolder(t) != "server-a" {
			return fmt.Errorf("leading %v, lease held by %q", a.Leading(), c.leaseHolder(t))
		}
		return nil
	})
	b, _ := c.start(t, stB, c.elected(t, "server-b"))

	c.apply(t, "workloads", ClusterSPIFFEIDSpec{SPIFFEIDTemplate: nsSA, NamespaceSelector: testNSSelector})
	web := c.pod(t, "payments", "web", "node-1", nil)
	webEntry := "spiffe://example.org/ns/payments/sa/sa-web " + agent + " k8s:pod-uid:" + string(web.UID)
	wantEntries(t, stA, webEntry)
	if b.Leading() {
		t.Fatal("server-b leads while server-a holds the lease")
	}
	if got := entries(t, stB); len(got) != 0 {
		t.Fatalf("server-b, standing by, wrote %v", got)
	}

	// server-a shuts down and releases the Lease: server-b takes over
	// without waiting for it to expire.
	stopA()
	if h := c.leaseHolder(t); a.Leading() || h == "server-a" {
		t.Fatalf("server-a stopped but leads (%v) or holds the lease (%q)", a.Leading(), h)
	}
	wantEntries(t, stB, webEntry)
	if h := c.leaseHolder(t); h != "server-b" {
		t.Fatalf("lease held by %q, want server-b", h)
	}

	// Another holder takes the Lease (as a server that missed server-b's
	// renewals would): server-b stops, campaigns, and leads again when
	// that Lease expires; meanwhile a new pod waits for it.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		leases := c.client.CoordinationV1().Leases("signet-system")
		l, err := leases.Get(context.Background(), "signet-controller", metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.NewMicroTime(time.Now())
		l.Spec = coordinationv1.LeaseSpec{HolderIdentity: ptr("intruder"), LeaseDurationSeconds: ptr[int32](3),
			AcquireTime: &now, RenewTime: &now}
		_, err = leases.Update(context.Background(), l, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "server-b to stand by", func() error {
		if b.Leading() {
			return fmt.Errorf("server-b leads; lease held by %q", c.leaseHolder(t))
		}
		return nil
	})
	api := c.pod(t, "payments", "api", "node-1", nil)
	apiEntry := "spiffe://example.org/ns/payments/sa/sa-api " + agent + " k8s:pod-uid:" + string(api.UID)
	wantEntries(t, stB, webEntry, apiEntry)
	if !b.Leading() || c.leaseHolder(t) != "server-b" {
		t.Fatalf("server-b reconciled without the lease (held by %q)", c.leaseHolder(t))
	}
}

func ptr[T any](v T) *T { return &v }

// TestLeaderElectionOptions: bad Lease settings are refused by New, and an
// unset identity is made unique per server.
func TestLeaderElectionOptions(t *testing.T) {
	unused := &rest.Config{Host: "https://127.0.0.1:1"} // never dialled: New only checks
	client, dyn := kubernetes.NewForConfigOrDie(unused), dynamic.NewForConfigOrDie(unused)
	st := sqliteStore(t)
	for _, tc := range []struct {
		name string
		le   LeaderElection
		want string
	}{
		{"no namespace", LeaderElection{Name: "x"}, `lease namespace ""`},
		{"bad name", LeaderElection{Namespace: "ns", Name: "X_1"}, `lease name "X_1"`},
		{"renew past lease", LeaderElection{Namespace: "ns", Name: "x", LeaseDuration: time.Second}, "want lease duration (1s) > renew deadline (10s)"},
		{"defaults", LeaderElection{Namespace: "ns", Name: "x"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			le := tc.le
			ctrl, err := New(Options{Client: client, Dynamic: dyn, Store: st, TrustDomain: td, Cluster: "prod", LeaderElection: &le})
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("New: %v, want %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			host, _ := os.Hostname()
			got := ctrl.opts.LeaderElection
			if !strings.HasPrefix(got.Identity, host+"_") || len(got.Identity) < len(host)+30 || got.LeaseDuration != DefaultLeaseDuration {
				t.Fatalf("identity %q, lease duration %v", got.Identity, got.LeaseDuration)
			}
		})
	}
}
