// Package store is Signet's persistent state: registration entries, join
// tokens, attested nodes and bundle authorities, behind one interface with two
// implementations sharing one schema and its migrations: embedded SQLite
// (pure Go, the default) and PostgreSQL (several servers on one store, changes
// announced with LISTEN/NOTIFY). Open picks one from a datastore URL.
package store
