-- An operator tainted the authority (forced rotation): it still verifies,
-- but agents re-sign at once everything issued under it. The mark only goes
-- from 0 to 1; revoking the authority deletes its row. A federated bundle's
-- authorities are never tainted.
ALTER TABLE authorities ADD COLUMN tainted INTEGER NOT NULL DEFAULT 0;
