// Package helper is `signet helper`: a standard SPIFFE Workload API client
// (go-spiffe v2) that keeps an X.509-SVID, its key, trust bundles, JWT-SVIDs
// and JWT bundles on disk for applications that only read PEM and JSON
// files (nginx, PostgreSQL, ...), and tells them when the files change.
//
// It reads spiffe-helper's helper.conf unchanged (see [ParseConfig]), so it
// works against Signet's agent and SPIRE's agent alike.
//
// The file set is written atomically as a whole (see [Writer]): every
// rotation lands in a fresh directory and a single symlink swap publishes it,
// so an application reloading after the swap always sees a certificate that
// matches its key. After the swap the application is told: a signal to the
// PID in a pid file, a command, or a supervised child (see [Reloader]).
package helper
