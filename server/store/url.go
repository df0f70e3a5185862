package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// acceptedForms names the datastore URLs Open takes, for error messages.
const acceptedForms = "use sqlite:///abs/path/to.db, a file path, or postgres://user@host:port/db"

type backendKind int

const (
	sqliteBackend backendKind = iota + 1
	postgresBackend
)

// target is a parsed datastore URL.
type target struct {
	kind backendKind
	// path is the SQLite database file, cleaned; absolute for sqlite:// URLs,
	// as given (relative or absolute) for bare paths.
	path string
	// url is the PostgreSQL connection URL, as given.
	url string
}

// parseURL tells which store a datastore URL names. Error messages never
// repeat a postgres URL: it may hold a password.
func parseURL(raw string) (target, error) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return target{}, errors.New("datastore URL is empty: " + acceptedForms)
	}
	scheme, rest, hasScheme := strings.Cut(s, "://")
	if !hasScheme {
		if strings.HasPrefix(strings.ToLower(s), "sqlite:") || strings.HasPrefix(strings.ToLower(s), "postgres") {
			return target{}, fmt.Errorf("datastore URL %q is missing \"://\": %s", clip(s), acceptedForms)
		}
		return sqlitePath(s)
	}
	switch strings.ToLower(scheme) {
	case "postgres", "postgresql":
		if rest == "" {
			return target{}, errors.New("postgres datastore URL names no host or database: " + acceptedForms)
		}
		return target{kind: postgresBackend, url: s}, nil
	case "sqlite", "sqlite3":
		if !strings.HasPrefix(rest, "/") {
			return target{}, fmt.Errorf("sqlite datastore URL %q needs an absolute path, with three slashes: sqlite:///abs/path/to.db", clip(s))
		}
		return sqlitePath(rest)
	default:
		if strings.ContainsAny(scheme, "/\\") {
			// "./dir://x" is a path with an odd name, not a URL.
			return sqlitePath(s)
		}
		return target{}, fmt.Errorf("unsupported datastore URL scheme %q: %s", clip(scheme), acceptedForms)
	}
}

func sqlitePath(p string) (target, error) {
	switch {
	case strings.ContainsAny(p, "?#\x00"):
		// The SQLite driver would read what follows "?" as its own options.
		return target{}, fmt.Errorf("sqlite datastore path %q must not contain ?, # or NUL: %s", clip(p), acceptedForms)
	case strings.HasSuffix(p, "/") || strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..") || p == "." || p == "..":
		return target{}, fmt.Errorf("sqlite datastore path %q is a directory, not a database file", clip(p))
	case p == ":memory:" || strings.HasPrefix(p, "file:"):
		return target{}, fmt.Errorf("sqlite datastore path %q: in-memory and file: URI databases are not supported: %s", clip(p), acceptedForms)
	}
	return target{kind: sqliteBackend, path: filepath.Clean(p)}, nil
}

// clip bounds user input echoed in an error.
func clip(s string) string {
	if len(s) > 256 {
		return s[:256] + "..."
	}
	return s
}
