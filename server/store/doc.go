// Package store is Signet's persistent state: registration entries, join
// tokens, attested nodes and bundle authorities, behind one interface with two
// implementations sharing one schema and its migrations: embedded SQLite
// (pure Go, the default) and PostgreSQL (several servers on one store, changes
// announced with LISTEN/NOTIFY). Open picks one from a datastore URL.
//
// Both engines run the same SQL (migrations/*.sql and the queries in
// sqlstore.go): $n placeholders, portable types (times are BIGINT Unix
// nanoseconds, booleans INTEGER 0/1), INSERT ... ON CONFLICT and RETURNING.
// The one schema difference is the bytes type, a {{bytes}} placeholder.
//
// Writes are serialized: on SQLite by one writer connection using BEGIN
// IMMEDIATE (WAL, synchronous=FULL, so a commit is on disk when a method
// returns); on PostgreSQL by a transaction-level advisory lock that every
// write and migration takes first, so servers sharing a database never
// interleave read-modify-write sequences. Every write that changes entries,
// nodes or authorities bumps the global revision and, on PostgreSQL, does
// NOTIFY signet_changes; each Store LISTENs on a dedicated connection
// (pinged when quiet, replaced when it stops answering) and signals its
// Changes subscribers. Join tokens are not part of the revision.
package store
