package store

import (
	"context"
	"log/slog"
)

// Open opens (creating and migrating as needed) the store a datastore URL
// names:
//
//   - sqlite:///abs/path/to.db, or a bare file path: embedded SQLite. The
//     file (and its directory, 0700) is created with mode 0600.
//   - postgres://... or postgresql://...: PostgreSQL; several servers may
//     share one database.
//
// A nil logger discards logs.
func Open(ctx context.Context, url string, logger *slog.Logger) (Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	t, err := parseURL(url)
	if err != nil {
		return nil, err
	}
	if t.kind == postgresBackend {
		return openPostgres(ctx, t.url, logger)
	}
	return openSQLite(ctx, t.path, logger)
}
