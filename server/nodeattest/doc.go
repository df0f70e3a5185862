// Package nodeattest proves a node agent's identity to the server and names
// it. Join tokens are single-use, expiring secrets of which the store keeps
// only a hash; the agent ID is derived from the token's public ID (or set by
// whoever generated the token).
package nodeattest
