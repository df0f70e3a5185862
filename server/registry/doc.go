// Package registry holds registration entries: their validation (every ID,
// selector and TTL checked before anything is stored), their conversion to
// and from the API, the authorization rule that decides which entries an
// agent may serve, and the look-up of downstream entries that decides which
// callers are downstream servers.
package registry
