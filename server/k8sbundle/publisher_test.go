package k8sbundle

import (
	"context"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/signetid/signet/internal/kubetest"
	"github.com/signetid/signet/server/nodeattest"
)

// source is a bundle that changes when the test says so.
type source struct {
	mu      sync.Mutex
	bundle  []byte
	changed chan struct{}
}

func (s *source) current() ([]byte, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bundle, s.changed
}

func (s *source) set(b string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bundle = []byte(b)
	close(s.changed)
	s.changed = make(chan struct{})
}

func waitData(t *testing.T, api *kubetest.APIServer, key, want string) *corev1.ConfigMap {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		cm := api.ConfigMap("signet-system", "signet-trust-bundle")
		if cm != nil && cm.Data[key] == want {
			return cm
		}
		if time.Now().After(deadline) {
			t.Fatalf("ConfigMap %v, want %s = %q", cm, key, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPublisherFollowsTheBundle(t *testing.T) {
	api := kubetest.NewAPIServer(t)
	client, err := nodeattest.KubeClient(api.Kubeconfig(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Client: client, Namespace: "signet-system", Name: "signet-trust-bundle"})
	if err != nil {
		t.Fatal(err)
	}
	src := &source{bundle: []byte("roots-1"), changed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, src.current) }()

	// Created when missing.
	waitData(t, api, DefaultKey, "roots-1")

	// Someone adds a key of their own; a rotation replaces only ours.
	cm := api.ConfigMap("signet-system", "signet-trust-bundle")
	cm.Data["note"] = "kept"
	api.PutConfigMap(cm)
	src.set("roots-1\nroots-2")
	cm = waitData(t, api, DefaultKey, "roots-1\nroots-2")
	if cm.Data["note"] != "kept" {
		t.Fatalf("another key was dropped: %v", cm.Data)
	}

	// An unchanged bundle is not written again.
	puts := api.Calls("PUT /api/v1/namespaces/signet-system/configmaps/signet-trust-bundle")
	src.set("roots-1\nroots-2")
	src.set("roots-2")
	waitData(t, api, DefaultKey, "roots-2")
	if got := api.Calls("PUT /api/v1/namespaces/signet-system/configmaps/signet-trust-bundle"); got != puts+1 {
		t.Fatalf("%d updates for one change", got-puts)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestPublishErrors(t *testing.T) {
	api := kubetest.NewAPIServer(t)
	client, err := nodeattest.KubeClient(api.Kubeconfig(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Client: client, Name: "x"}); err == nil {
		t.Fatal("no namespace accepted")
	}
	p, err := New(Config{Client: client, Namespace: "signet-system", Name: "signet-trust-bundle"})
	if err != nil {
		t.Fatal(err)
	}
	api.PutConfigMap(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "signet-system", Name: "signet-trust-bundle"}})
	if err := p.Publish(context.Background(), []byte("roots")); err != nil {
		t.Fatalf("ConfigMap without data: %v", err)
	}
	api.Close()
	if err := p.Publish(context.Background(), []byte("roots-2")); err == nil {
		t.Fatal("publish to a stopped API server succeeded")
	}
}
