-- A banned node keeps its row, with no valid serial: it cannot renew, and
-- attesting again under its ID is refused until an admin evicts (deletes) it.
ALTER TABLE nodes ADD COLUMN banned INTEGER NOT NULL DEFAULT 0;
