// Package dev runs `signet dev`: a server and an agent in one process on an
// embedded SQLite store, with the calling user registered, so a developer has
// a working SPIFFE Workload API in one command.
package dev
