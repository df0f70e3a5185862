// Package registry holds registration entries: their validation (every ID,
// selector and TTL checked before anything is stored), their conversion to
// and from the API, and the authorization rule that decides which entries an
// agent may serve.
package registry
