package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// sqliteDB is the embedded store. Writes go through a single connection
// opening every transaction with BEGIN IMMEDIATE, so writers queue in Go
// instead of failing with SQLITE_BUSY (busy_timeout covers another process
// on the same file); reads use a small pool of query-only connections,
// which WAL lets run alongside the writer.
type sqliteDB struct {
	w, r *sql.DB
}

// sqlitePragmas: WAL with synchronous=FULL syncs the log at every commit, so
// an acknowledged write survives a crash or power loss.
const sqlitePragmas = "_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=synchronous(FULL)"

func openSQLite(ctx context.Context, path string, logger *slog.Logger) (*sqlStore, error) {
	path, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open sqlite store: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	// Create the file 0600 before SQLite does (it would follow the umask);
	// its -wal and -shm files take the database file's mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	f.Close()
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}

	w, err := sql.Open("sqlite", path+"?"+sqlitePragmas+"&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	// Connect the writer first: it switches the file to WAL.
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", path+"?"+sqlitePragmas+"&_pragma=query_only(1)")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	r.SetMaxOpenConns(4)
	r.SetMaxIdleConns(4)
	db := &sqliteDB{w: w, r: r}
	var mode string
	if err := w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		db.close()
		return nil, fmt.Errorf("open sqlite store %s: journal mode is %q, not wal (%v)", path, mode, err)
	}
	if err := migrate(ctx, db, map[string]string{"{{bytes}}": "BLOB"}, logger); err != nil {
		db.close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	logger.Info("store: opened", "backend", "sqlite", "path", path)
	return &sqlStore{db: db, log: logger, changes: newBroadcaster(), signalCommits: true}, nil
}

func (d *sqliteDB) write(ctx context.Context, fn func(*tx) error) (bool, error) {
	sqlTx, err := d.w.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("begin: %w", err)
	}
	t := &tx{querier: sqlQuerier{sqlTx}}
	if err := fn(t); err != nil {
		_ = sqlTx.Rollback()
		return false, err
	}
	if err := sqlTx.Commit(); err != nil {
		return false, fmt.Errorf("commit: %w", err)
	}
	return t.changed, nil
}

func (d *sqliteDB) read(ctx context.Context, fn func(querier) error) error {
	sqlTx, err := d.r.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer sqlTx.Rollback()
	return fn(sqlQuerier{sqlTx})
}

func (d *sqliteDB) isUniqueViolation(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return true
	}
	return false
}

func (d *sqliteDB) ping(ctx context.Context) error {
	if err := d.w.PingContext(ctx); err != nil {
		return err
	}
	return d.r.PingContext(ctx)
}

func (d *sqliteDB) close() error {
	return errors.Join(d.r.Close(), d.w.Close())
}

// sqlQuerier adapts a database/sql transaction.
type sqlQuerier struct{ tx *sql.Tx }

func (q sqlQuerier) exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := q.tx.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (q sqlQuerier) query(ctx context.Context, query string, args ...any) (rows, error) {
	rs, err := q.tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return sqlRows{rs}, nil
}

func (q sqlQuerier) queryRow(ctx context.Context, query string, args ...any) scanner {
	return sqlRow{q.tx.QueryRowContext(ctx, query, args...)}
}

type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { _ = r.Rows.Close() }

type sqlRow struct{ *sql.Row }

func (r sqlRow) Scan(dest ...any) error {
	err := r.Row.Scan(dest...)
	if errors.Is(err, sql.ErrNoRows) {
		return errNoRows
	}
	return err
}
