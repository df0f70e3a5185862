// Package catalog keeps the server's in-memory view of its store: every
// registration entry indexed for authorization, the attested agents, and the
// trust bundles. It reloads on every store change (local writes, and writes
// by other servers sharing a PostgreSQL store) and wakes everyone waiting for
// a new snapshot, so agent streams are pushed without polling. As a backstop
// for a lost store signal it also compares the store's revision every few
// seconds (Options.PollInterval).
package catalog
