-- Signet store schema, version 1, shared by SQLite and PostgreSQL: portable
-- types only. Times are BIGINT Unix nanoseconds (0 = unset) and booleans
-- INTEGER 0/1, so both engines round-trip them exactly and alike.
-- {{bytes}} is the one dialect difference: BLOB on SQLite, BYTEA on PostgreSQL.

-- One global counter, bumped by every change to entries, nodes or authorities.
CREATE TABLE store_revision (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value BIGINT NOT NULL
);
INSERT INTO store_revision (id, value) VALUES (1, 0);

CREATE TABLE entries (
    id             TEXT PRIMARY KEY,
    spiffe_id      TEXT NOT NULL,
    parent_id      TEXT NOT NULL,    -- '' for node-alias entries
    node           INTEGER NOT NULL,
    selectors_hash TEXT NOT NULL,    -- hex SHA-256 of the sorted selector set
    x509_ttl       BIGINT NOT NULL,  -- nanoseconds, 0 = server default
    jwt_ttl        BIGINT NOT NULL,
    dns_names      TEXT NOT NULL,    -- JSON array, never queried
    hint           TEXT NOT NULL,
    federates_with TEXT NOT NULL,    -- JSON array of trust domain names
    admin          INTEGER NOT NULL,
    expires_at     BIGINT NOT NULL,
    revision       BIGINT NOT NULL,
    created_at     BIGINT NOT NULL
);
-- The selector set goes in as a hash: selector values are long, index rows are not.
CREATE UNIQUE INDEX entries_identity ON entries (spiffe_id, parent_id, node, selectors_hash);
CREATE INDEX entries_parent_id ON entries (parent_id);

CREATE TABLE entry_selectors (
    entry_id TEXT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    type     TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (entry_id, type, value)
);
CREATE INDEX entry_selectors_selector ON entry_selectors (type, value);

-- Only the SHA-256 of a token is kept.
CREATE TABLE join_tokens (
    hash       TEXT PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    spiffe_id  TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX join_tokens_expires_at ON join_tokens (expires_at);

CREATE TABLE nodes (
    spiffe_id          TEXT PRIMARY KEY,
    attestation_type   TEXT NOT NULL,
    serial_number      TEXT NOT NULL,
    prev_serial_number TEXT NOT NULL,
    expires_at         BIGINT NOT NULL,
    attested_at        BIGINT NOT NULL
);

CREATE TABLE node_selectors (
    spiffe_id TEXT NOT NULL REFERENCES nodes (spiffe_id) ON DELETE CASCADE,
    type      TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (spiffe_id, type, value)
);

-- A trust domain's bundle sequence (spiffe_sequence), bumped when its
-- authorities really change.
CREATE TABLE bundles (
    trust_domain TEXT PRIMARY KEY,
    sequence     BIGINT NOT NULL
);

CREATE TABLE authorities (
    trust_domain TEXT NOT NULL,
    kind         TEXT NOT NULL,
    key_id       TEXT NOT NULL,
    data         {{bytes}} NOT NULL,
    expires_at   BIGINT NOT NULL,
    PRIMARY KEY (trust_domain, kind, key_id)
);
