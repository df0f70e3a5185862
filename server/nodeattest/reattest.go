package nodeattest

// Reattests reports whether agents of this attestation type renew by
// attesting again with fresh evidence (x509pop, sshpop, k8s_psat), never
// in place: their evidence is checked anew each time, and an agent whose
// record is gone attests again by itself. Join-token agents (SPIRE's
// "TOFU" kind) cannot: their token is spent; nor aws_iid and gcp_iit
// ones, whose evidence attests once (Result.TrustOnFirstUse).
func Reattests(attestationType string) bool {
	switch attestationType {
	case X509PoPType, SSHPoPType, K8sPSATType:
		return true
	}
	return false
}
