-- The entry's holder is a downstream Signet server, which this server signs
-- intermediate CAs for (SPIRE's downstream). Existing entries are not.
ALTER TABLE entries ADD COLUMN downstream INTEGER NOT NULL DEFAULT 0;
