package k8sreg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/signetid/signet/internal/kubetest"
	"github.com/signetid/signet/internal/logtest"
)

func TestWatchErrorHint(t *testing.T) {
	pods := schema.GroupResource{Resource: "pods"}
	tests := []struct {
		name, resource string
		err            error
		want           string
		level          slog.Level
	}{
		{"CRD missing", Resource, fmt.Errorf("failed to list: %w", apierrors.NewNotFound(GVR.GroupResource(), "")),
			"install the ClusterSPIFFEID CRD (deploy/base/crd-clusterspiffeid.yaml", slog.LevelError},
		{"static CRD missing", StaticEntryResource, apierrors.NewNotFound(StaticEntryGVR.GroupResource(), ""),
			"install the ClusterStaticEntry CRD (deploy/base/crd-clusterstaticentry.yaml", slog.LevelError},
		{"federation CRD missing", FederatedTrustDomainResource, apierrors.NewNotFound(FederatedTrustDomainGVR.GroupResource(), ""),
			"install the ClusterFederatedTrustDomain CRD (deploy/base/crd-clusterfederatedtrustdomain.yaml", slog.LevelError},
		{"RBAC short", "pods", apierrors.NewForbidden(pods, "", errors.New("no")),
			"may not list and watch pods", slog.LevelError},
		{"bad credentials", "nodes", apierrors.NewUnauthorized("who"), "does not accept the server's credentials", slog.LevelError},
		{"watch expired", "pods", apierrors.NewResourceExpired("too old"), "watch restarted", slog.LevelDebug},
		{"connection dropped", "pods", io.ErrUnexpectedEOF, "watch restarted", slog.LevelDebug},
		{"API server down", "namespaces", errors.New("dial tcp 127.0.0.1:6443: connect: connection refused"),
			"cannot list or watch namespaces", slog.LevelWarn},
		// A missing core resource is not the CRD's absence.
		{"other not found", "pods", apierrors.NewNotFound(pods, ""), "cannot list or watch pods", slog.LevelWarn},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg, level := watchErrorHint(tc.resource, tc.err)
			if !strings.Contains(msg, tc.want) || level != tc.level {
				t.Errorf("hint = %q at %v, want one containing %q at %v", msg, level, tc.want, tc.level)
			}
		})
	}
}

// TestStartupProblemsNamed runs the controller against a real API server
// that lacks the CRDs, then as an identity without RBAC: each time the log
// says what to fix, and the fix takes effect without a restart (each
// product starts).
func TestStartupProblemsNamed(t *testing.T) {
	api := kubetest.StartRealAPIServer(t)
	ctx := context.Background()
	run := func(t *testing.T, kubeconfig string) *logtest.Buffer {
		client, dyn, err := Clients(kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		logs := &logtest.Buffer{}
		ctrl, err := New(Options{Client: client, Dynamic: dyn, Store: sqliteStore(t), TrustDomain: td, Cluster: "prod", Logger: logs.Logger()})
		if err != nil {
			t.Fatal(err)
		}
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- ctrl.Run(runCtx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("controller: %v", err)
			}
		})
		return logs
	}

	t.Run("CRD missing", func(t *testing.T) {
		logs := run(t, api.Kubeconfig(t, t.TempDir()))
		logs.WaitFor(t, "install the ClusterSPIFFEID CRD", time.Minute)
		logs.WaitFor(t, "install the ClusterStaticEntry CRD", time.Minute)
		logs.WaitFor(t, "install the ClusterFederatedTrustDomain CRD", time.Minute)
		if strings.Contains(logs.String(), "kubernetes controller started") {
			t.Fatal("the controller started without its CRDs")
		}
		applyCRDs(t, api, crdFiles...)
		for _, p := range []string{specEntries, staticEntries, federations} {
			logs.WaitFor(t, `kubernetes controller started" cluster=prod product="`+p+`"`, time.Minute)
		}
	})

	t.Run("RBAC short", func(t *testing.T) {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "no-rights"}}
		if _, err := api.Client().CoreV1().ServiceAccounts("default").Create(ctx, sa, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		tok, err := api.TokenRequest(ctx, "default", "no-rights", "", "")
		if err != nil {
			t.Fatal(err)
		}
		logs := run(t, api.KubeconfigFor(t, t.TempDir(), "no-rights", tok))
		for _, r := range []string{"pods", "namespaces", "nodes", "endpointslices", Resource, StaticEntryResource, FederatedTrustDomainResource} {
			logs.WaitFor(t, "may not list and watch "+r, time.Minute)
		}
	})
}
