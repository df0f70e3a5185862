// Package nodeattest proves a node agent's identity to the server and names
// it. Join tokens are single-use, expiring secrets of which the store keeps
// only a hash; the agent ID is derived from the token's public ID (or set by
// whoever generated the token). Kubernetes projected service account tokens
// (k8s_psat), machine certificates of an existing PKI (x509pop) and OpenSSH
// host certificates of an SSH CA (sshpop) are not spent: the agent may
// attest with them again and takes the same ID, and it must
// (Result.CanReattest): it renews by attesting again, so the server checks
// that evidence anew at every renewal.
package nodeattest
