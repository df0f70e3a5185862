// Package test holds Signet's end-to-end tests: they build and run the real
// signet binary and talk to it with real clients (go-spiffe v2, nginx,
// PostgreSQL, bind mounts). Shared helpers live in harness_test.go.
package test
