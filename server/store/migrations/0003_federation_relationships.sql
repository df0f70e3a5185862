-- Federation relationships kept in the store (`signet server federation
-- create`, ClusterFederatedTrustDomain resources), beside those of the
-- servers' configuration files. Every server sharing the store fetches
-- their bundles.
CREATE TABLE federation_relationships (
    trust_domain        TEXT PRIMARY KEY,
    bundle_endpoint_url TEXT NOT NULL,
    profile             TEXT NOT NULL,  -- https_spiffe or https_web
    endpoint_spiffe_id  TEXT NOT NULL,  -- https_spiffe only, '' otherwise
    owner               TEXT NOT NULL,  -- '' for an operator's; the Kubernetes controller's name for its own
    revision            BIGINT NOT NULL,
    created_at          BIGINT NOT NULL
);
