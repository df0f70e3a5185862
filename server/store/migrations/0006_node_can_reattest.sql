-- The node attestor can attest the node again (x509pop, k8s_psat): such an
-- agent renews by attesting again with fresh evidence, which the server
-- checks anew; RenewAgent refuses it. Join-token agents renew in place.
ALTER TABLE nodes ADD COLUMN can_reattest INTEGER NOT NULL DEFAULT 0;
-- Agents attested before could always attest again by these methods: mark
-- them, or they would renew in place, unchecked, for as long as they run.
UPDATE nodes SET can_reattest = 1 WHERE attestation_type IN ('x509pop', 'k8s_psat');
