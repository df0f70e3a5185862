-- A join token is marked spent, with the hex SHA-256 of the public key it
-- attested, instead of deleted: the agent that spent it may retry with the
-- same key (its answer lost) until the token expires; nothing else may.
ALTER TABLE join_tokens ADD COLUMN spent_key TEXT NOT NULL DEFAULT '';
