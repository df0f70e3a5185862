package k8sreg

import (
	"fmt"
	"os"
	"strings"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Clients connects to a cluster's API server with the kubeconfig file at
// path, or, when path is empty, as the pod the server runs in.
func Clients(kubeconfig string) (kubernetes.Interface, dynamic.Interface, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig == "" {
		if cfg, err = rest.InClusterConfig(); err != nil {
			return nil, nil, fmt.Errorf("in-cluster Kubernetes config (set kubeconfig when the server runs outside the cluster): %w", err)
		}
	} else if cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig); err != nil {
		return nil, nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	cfg.UserAgent = "signet-server/k8s-controller"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes dynamic client: %w", err)
	}
	return client, dyn, nil
}

// podNamespaceFile is where the kubelet puts the pod's namespace, beside
// its service account token.
const podNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// PodNamespace is the namespace of the pod the server runs in.
func PodNamespace() (string, error) {
	b, err := os.ReadFile(podNamespaceFile)
	if err != nil {
		return "", fmt.Errorf("the server's pod namespace: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
