// Package k8sbundle keeps the trust domain's X.509 roots in a Kubernetes
// ConfigMap, where agent pods read their --trust-bundle: a fresh cluster's
// agents can verify the server without a manual copy, and the file follows
// the server's CA rotations (SPIRE's k8sbundle notifier does the same).
package k8sbundle
