// Package oidcdiscovery serves the trust domain's JWT signing keys as an
// OpenID Connect provider, as SPIRE's oidc-discovery-provider does, so that
// JWT-SVIDs whose iss is the server's jwt_issuer can be verified by any OIDC
// relying party: AWS IAM OIDC federation, GCP workload identity federation,
// Vault's JWT auth, OIDC libraries.
//
// It answers two documents under the issuer's path:
// /.well-known/openid-configuration (OpenID Connect Discovery 1.0) and /keys
// (a JWKS of the JWT authorities of the trust domain's bundle, the same one
// agents get, so with several servers on one store every server's keys are
// there). Both are marshalled once per bundle sequence, not per request.
//
// With serving_cert_file it serves HTTPS itself (TLS 1.2 and later; the files
// are read again when they change); without, plain HTTP, for a
// TLS-terminating proxy in front. Relying parties fetch the documents from
// the issuer URL, so that URL must reach this listener.
package oidcdiscovery
