// Package agentapi serves the AgentService to node agents over mutual TLS
// 1.3: node attestation (join token, k8s_psat, x509pop, sshpop, aws_iid,
// gcp_iit), agent SVID renewal (in place for join-token agents and those
// trusted on first use, aws_iid and gcp_iit; agents that can attest again
// must, so their evidence is checked anew), the Sync push stream of
// authorized entries and bundles, batch X509-SVID signing and JWT-SVID
// minting. Every RPC but Attest authenticates the agent by its X509-SVID and
// checks it is still attested; every signing request is checked against the
// entries the agent is authorized for.
package agentapi
