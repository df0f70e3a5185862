// Package nodeattest proves a node agent's identity to the server and names
// it. Join tokens are single-use, expiring secrets of which the store keeps
// only a hash; the agent ID is derived from the token's public ID (or set by
// whoever generated the token). Kubernetes projected service account tokens
// (k8s_psat), machine certificates of an existing PKI (x509pop) and OpenSSH
// host certificates of an SSH CA (sshpop) are not spent: the agent may
// attest with them again and takes the same ID, and it must
// (Result.CanReattest): it renews by attesting again, so the server checks
// that evidence anew at every renewal. A cloud's signed instance identity
// (aws_iid, gcp_iit) names the instance but is not bound to a secret:
// whoever read it can replay it, so it is trusted on first use (Result.TrustOnFirstUse):
// it attests the instance's agent once, that agent renews in place, and
// the same evidence attests again only with that agent's key (its SVID
// expired) or once the agent is evicted.
package nodeattest
