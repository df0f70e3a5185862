// Package cache is the agent's SVID cache: the X509-SVIDs and keys of every
// entry the agent serves, kept fresh (rotated at half their lifetime, with
// jitter), persisted under the data directory so a restart during a server
// outage keeps serving, and pushed to every subscriber on each change. It is
// the Provider the Workload API and the Delegated Identity API serve from.
package cache
