package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// changesChannel is the NOTIFY channel every write transaction signals on;
// PostgreSQL delivers it to every listener when the transaction commits.
const changesChannel = "signet_changes"

// writeLockKey is the transaction-level advisory lock every write (and
// migration) takes first: writes from all servers sharing the database are
// serialized, so read-modify-write code needs no retry loop. ("signet" in ASCII.)
const writeLockKey int64 = 0x7369676e6574

// The change listener waits at most listenIdle for a notification, then
// pings its connection, which must answer within listenPingTimeout: a path
// that died silently (a failed-over primary, a proxy or NAT that dropped
// the session but keeps the socket open) would otherwise hold it forever,
// deaf to every other server's writes.
const (
	listenIdle        = 5 * time.Second
	listenPingTimeout = 5 * time.Second
)

// pgDB is the PostgreSQL store: a connection pool for queries and one
// dedicated connection LISTENing for other servers' changes.
type pgDB struct {
	pool   *pgxpool.Pool
	log    *slog.Logger
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func openPostgres(ctx context.Context, url string, logger *slog.Logger) (*sqlStore, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's parse errors leave the password out.
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	where := fmt.Sprintf("%s@%s:%d/%s", cfg.ConnConfig.User, cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres store %s: %w", where, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres store %s: %w", where, err)
	}
	db := &pgDB{pool: pool, log: logger}
	if err := migrate(ctx, db, map[string]string{"{{bytes}}": "BYTEA"}, logger); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres store %s: %w", where, err)
	}
	s := &sqlStore{db: db, log: logger, changes: newBroadcaster()}
	// Listen before Open returns, so no change committed after it is missed.
	conn, err := db.listen(ctx)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres store %s: %w", where, err)
	}
	lctx, cancel := context.WithCancel(context.Background())
	db.cancel = cancel
	db.wg.Add(1)
	go func() {
		defer db.wg.Done()
		db.listenLoop(lctx, conn, s.changes.signal)
	}()
	logger.Info("store: opened", "backend", "postgres", "database", where)
	return s, nil
}

// listenerAppName names the change listener's connection in
// pg_stat_activity.
const listenerAppName = "signet change listener"

// listen opens a connection outside the pool and LISTENs on it.
func (d *pgDB) listen(ctx context.Context) (*pgx.Conn, error) {
	cfg := d.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = listenerAppName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect change listener: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+changesChannel); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("listen for changes: %w", err)
	}
	return conn, nil
}

// listenLoop signals for every notification, and reconnects with backoff
// when the connection is lost or stops answering, signalling once it is
// back: changes made in between were not heard.
func (d *pgDB) listenLoop(ctx context.Context, conn *pgx.Conn, signal func()) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.MaxInterval = 10 * time.Second
	b.MaxElapsedTime = 0 // never give up
	for {
		var err error
		for conn != nil {
			var notified bool
			if notified, err = awaitNotification(ctx, conn); err != nil {
				cctx, cancel := context.WithTimeout(context.Background(), listenPingTimeout)
				conn.Close(cctx)
				cancel()
				conn = nil
				break
			}
			if notified {
				signal()
			}
		}
		if ctx.Err() != nil {
			return
		}
		wait := b.NextBackOff()
		d.log.Warn("store: lost the PostgreSQL change listener; reconnecting", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		conn, err = d.listen(cctx)
		cancel()
		if err != nil {
			d.log.Warn("store: reconnecting the PostgreSQL change listener failed", "err", err)
			continue
		}
		b.Reset()
		d.log.Info("store: PostgreSQL change listener reconnected")
		signal()
	}
}

// awaitNotification waits up to listenIdle for a notification on conn and
// reports whether one came. After a quiet listenIdle it pings conn, and an
// unanswered ping is an error: the connection is to be replaced.
func awaitNotification(ctx context.Context, conn *pgx.Conn) (bool, error) {
	wctx, cancel := context.WithTimeout(ctx, listenIdle)
	_, err := conn.WaitForNotification(wctx)
	quiet := wctx.Err() != nil && ctx.Err() == nil
	cancel()
	switch {
	case err == nil:
		return true, nil
	case !quiet:
		return false, err
	}
	// The deadline interrupted the wait without breaking the connection.
	pctx, cancel := context.WithTimeout(ctx, listenPingTimeout)
	defer cancel()
	if err := conn.Ping(pctx); err != nil {
		return false, fmt.Errorf("no notification for %s and no answer to a ping: %w", listenIdle, err)
	}
	return false, nil
}

func (d *pgDB) write(ctx context.Context, fn func(*tx) error) (bool, error) {
	pgTx, err := d.pool.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("begin: %w", err)
	}
	defer pgTx.Rollback(context.Background()) // no-op after commit
	if _, err := pgTx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, writeLockKey); err != nil {
		return false, fmt.Errorf("take write lock: %w", err)
	}
	t := &tx{querier: pgQuerier{pgTx}}
	if err := fn(t); err != nil {
		return false, err
	}
	if t.changed {
		if _, err := pgTx.Exec(ctx, `SELECT pg_notify($1, '')`, changesChannel); err != nil {
			return false, fmt.Errorf("notify: %w", err)
		}
	}
	if err := pgTx.Commit(ctx); err != nil {
		return false, fmt.Errorf("commit: %w", err)
	}
	return t.changed, nil
}

func (d *pgDB) read(ctx context.Context, fn func(querier) error) error {
	pgTx, err := d.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer pgTx.Rollback(context.Background())
	return fn(pgQuerier{pgTx})
}

func (d *pgDB) isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

func (d *pgDB) ping(ctx context.Context) error { return d.pool.Ping(ctx) }

func (d *pgDB) close() error {
	if d.cancel != nil {
		d.cancel()
		d.wg.Wait()
	}
	d.pool.Close()
	return nil
}

// pgQuerier adapts a pgx transaction.
type pgQuerier struct{ tx pgx.Tx }

func (q pgQuerier) exec(ctx context.Context, sql string, args ...any) (int64, error) {
	tag, err := q.tx.Exec(ctx, sql, args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

func (q pgQuerier) query(ctx context.Context, sql string, args ...any) (rows, error) {
	return q.tx.Query(ctx, sql, args...)
}

func (q pgQuerier) queryRow(ctx context.Context, sql string, args ...any) scanner {
	return pgRow{q.tx.QueryRow(ctx, sql, args...)}
}

type pgRow struct{ pgx.Row }

func (r pgRow) Scan(dest ...any) error {
	err := r.Row.Scan(dest...)
	if errors.Is(err, pgx.ErrNoRows) {
		return errNoRows
	}
	return err
}
