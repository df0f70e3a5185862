// Package server is the Signet identity server of one trust domain: it
// wires the store, the CA, the in-memory catalog, the agent API (mutual TLS
// 1.3), the local admin API and the health/metrics listener. run.go shows the
// data flow; each piece lives in its own subpackage.
package server
