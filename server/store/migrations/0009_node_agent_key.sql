-- The hex SHA-256 of the agent key (SubjectPublicKeyInfo) of the node's
-- current SVID, and of the SVID prev_serial_number names: an agent trusted
-- on first use (aws_iid, gcp_iit) whose SVID expired attests again with the
-- same evidence by proving it holds one of them. Empty for agents not
-- attested or renewed since.
ALTER TABLE nodes ADD COLUMN agent_key_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN prev_agent_key_hash TEXT NOT NULL DEFAULT '';
