package store

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

func TestSQLiteFileAndPragmas(t *testing.T) {
	ctx := testCtx(t)
	dir := filepath.Join(t.TempDir(), "new", "data")
	path := filepath.Join(dir, "signet.db")
	s := openStore(t, path) // a bare path, in a directory that does not exist yet
	if _, err := s.CreateEntry(ctx, workload(t, "/w", "unix:uid:1")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, path, path + "-wal"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		want := os.FileMode(0o600)
		if fi.IsDir() {
			want = 0o700 | os.ModeDir
		}
		if fi.Mode() != want {
			t.Errorf("%s has mode %v, want %v", p, fi.Mode(), want)
		}
	}
	db := s.(*sqlStore).db.(*sqliteDB)
	for pragma, want := range map[string]string{"journal_mode": "wal", "synchronous": "2", "foreign_keys": "1"} {
		var got string
		if err := db.w.QueryRowContext(ctx, "PRAGMA "+pragma).Scan(&got); err != nil || got != want {
			t.Errorf("writer PRAGMA %s = %q, %v; want %q", pragma, got, err, want)
		}
		if err := db.r.QueryRowContext(ctx, "PRAGMA "+pragma).Scan(&got); err != nil || got != want {
			t.Errorf("reader PRAGMA %s = %q, %v; want %q", pragma, got, err, want)
		}
	}
}

func TestSQLiteExistingFileMadePrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "signet.db")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	openStore(t, "sqlite://"+path)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode())
	}
}

// Two stores on one SQLite file (two processes, in effect) must not see
// SQLITE_BUSY: BEGIN IMMEDIATE plus busy_timeout queue them.
func TestSQLiteTwoOpensOneFile(t *testing.T) {
	ctx := testCtx(t)
	path := filepath.Join(t.TempDir(), "signet.db")
	stores := []Store{openStore(t, path), openStore(t, path)}
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := stores[i%2].CreateEntry(ctx, workload(t, fmt.Sprintf("/w/%d", i), "unix:uid:1"))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("CreateEntry: %v", err)
		}
	}
	if rev := revision(t, stores[1]); rev != 40 {
		t.Fatalf("revision %d, want 40", rev)
	}
}

func TestSQLiteRefusesNewerSchema(t *testing.T) {
	ctx := testCtx(t)
	path := filepath.Join(t.TempDir(), "signet.db")
	s := openStore(t, path)
	if _, err := s.(*sqlStore).db.(*sqliteDB).w.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (9999)`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s2, err := Open(ctx, path, nil); err == nil {
		s2.Close()
		t.Fatal("Open of a database from a newer signet succeeded")
	}
}

// TestSQLiteCrashKeepsAcknowledgedWrites writes in a child process that is
// then SIGKILLed without closing the store: every write it acknowledged must
// be there when the store is opened again.
func TestSQLiteCrashKeepsAcknowledgedWrites(t *testing.T) {
	if path := os.Getenv("SIGNET_STORE_CRASH_DB"); path != "" {
		s, err := Open(context.Background(), path, nil)
		if err != nil {
			fmt.Println("open:", err)
			os.Exit(2)
		}
		for i := range 20 {
			e, err := s.CreateEntry(context.Background(), workload(t, fmt.Sprintf("/crash/%d", i), "unix:uid:1"))
			if err != nil {
				fmt.Println("create:", err)
				os.Exit(2)
			}
			fmt.Println(e.ID) // acknowledged
		}
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	path := filepath.Join(t.TempDir(), "signet.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestSQLiteCrashKeepsAcknowledgedWrites$")
	cmd.Env = append(os.Environ(), "SIGNET_STORE_CRASH_DB="+path)
	out, err := cmd.Output()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die by SIGKILL (%v): %s", err, out)
	}
	ids := strings.Fields(string(out))
	if len(ids) != 20 {
		t.Fatalf("child acknowledged %d writes, want 20: %s", len(ids), out)
	}
	s := openStore(t, path)
	for _, id := range ids {
		if _, err := s.GetEntry(testCtx(t), id); err != nil {
			t.Errorf("acknowledged entry lost after crash: %v", err)
		}
	}
}

// TestUpgradeFromSchema1 opens a database written by a signet that knew only
// migration 1: the upgrade keeps its agents, none of them banned.
func TestUpgradeFromSchema1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v1.db")
	v1, err := migrationFiles.ReadFile("migrations/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		strings.ReplaceAll(string(v1), "{{bytes}}", "BLOB"),
		`CREATE TABLE schema_version (version BIGINT NOT NULL)`,
		`INSERT INTO schema_version (version) VALUES (1)`,
		`INSERT INTO nodes (spiffe_id, attestation_type, serial_number, prev_serial_number, expires_at, attested_at)
		 VALUES ('spiffe://example.org/agent/join_token/old', 'join_token', '0a', '', 0, 0)`,
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatalf("build a schema-1 database: %v", err)
		}
	}
	db.Close()

	s := openStore(t, "sqlite://"+path)
	n, err := s.GetNode(context.Background(), "spiffe://example.org/agent/join_token/old")
	if err != nil || n.SerialNumber != "0a" || n.Banned {
		t.Fatalf("agent after the upgrade = %+v, %v; want it kept, serial 0a, not banned", n, err)
	}
	if err := s.BanNode(context.Background(), n.SPIFFEID); err != nil {
		t.Fatalf("BanNode after the upgrade: %v", err)
	}
}
