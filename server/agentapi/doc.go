// Package agentapi serves the AgentService to node agents over mutual TLS
// 1.3: join-token attestation, agent SVID renewal, the Sync push stream of
// authorized entries and bundles, batch X509-SVID signing and JWT-SVID
// minting. Every RPC but Attest authenticates the agent by its X509-SVID and
// checks it is still attested; every signing request is checked against the
// entries the agent is authorized for.
package agentapi
