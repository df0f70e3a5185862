// Package apicli holds the logic of `signet agent api ...` and `signet agent
// healthcheck`: small Workload API clients built on go-spiffe's workloadapi
// package, so they behave exactly like any SPIFFE-aware workload.
package apicli
