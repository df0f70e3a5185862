-- The subject key ID (hex) of the CA that signed the agent's current SVID,
-- so an operator sees which agents still depend on an old CA before
-- revoking it. Empty for agents not attested or renewed since.
ALTER TABLE nodes ADD COLUMN svid_issuer TEXT NOT NULL DEFAULT '';
