package store

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"sort"
	"strconv"
	"strings"
)

// Migrations are numbered NNNN_name.sql and applied in order, each once. The
// files are shared by both engines; dialect placeholders are replaced first.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int64
	name    string
	sql     string
}

func loadMigrations() ([]migration, error) {
	files, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	var ms []migration
	for _, f := range files {
		name := strings.TrimSuffix(strings.TrimPrefix(f, "migrations/"), ".sql")
		num, _, _ := strings.Cut(name, "_")
		v, err := strconv.ParseInt(num, 10, 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must start with a positive number", f)
		}
		b, err := migrationFiles.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", f, err)
		}
		ms = append(ms, migration{version: v, name: name, sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i := range ms {
		if ms[i].version != int64(i+1) {
			return nil, fmt.Errorf("migrations are not numbered 1, 2, 3...: %s", ms[i].name)
		}
	}
	return ms, nil
}

// migrate brings the schema up to date in one write transaction: on
// PostgreSQL under the store's write lock, so servers starting together
// apply each migration once; on SQLite under BEGIN IMMEDIATE.
func migrate(ctx context.Context, db backend, placeholders map[string]string, logger *slog.Logger) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	latest := ms[len(ms)-1].version
	_, err = db.write(ctx, func(t *tx) error {
		if _, err := t.exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)`); err != nil {
			return fmt.Errorf("create schema_version: %w", err)
		}
		var cur int64
		if err := t.queryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&cur); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if cur > latest {
			return fmt.Errorf("database schema version %d is newer than this signet knows (%d): upgrade signet", cur, latest)
		}
		for _, m := range ms[cur:] {
			sql := m.sql
			for k, v := range placeholders {
				sql = strings.ReplaceAll(sql, k, v)
			}
			if _, err := t.exec(ctx, sql); err != nil {
				return fmt.Errorf("apply migration %s: %w", m.name, err)
			}
			if _, err := t.exec(ctx, `INSERT INTO schema_version (version) VALUES ($1)`, m.version); err != nil {
				return fmt.Errorf("record migration %s: %w", m.name, err)
			}
			logger.Info("store: applied schema migration", "migration", m.name)
		}
		return nil
	})
	return err
}
