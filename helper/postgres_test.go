package helper

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/signetid/signet/internal/nginxtest"
)

const pgBin = "/usr/lib/postgresql/15/bin"

type pgCluster struct {
	data string
	port int
	uid  int
	gid  int
}

func postgresIDs(t testing.TB) (int, int) {
	t.Helper()
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("postgres system user: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid
}

// asPostgres runs a PostgreSQL tool as the postgres system user (the tools
// refuse to run as root).
func asPostgres(uid, gid int, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(pgBin, name), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	return cmd
}

// startPostgres initdbs and starts a private cluster with ssl=on reading the
// helper's files and a `hostssl ... cert` rule.
func startPostgres(t testing.TB, certDir string) *pgCluster {
	t.Helper()
	uid, gid := postgresIDs(t)
	base, err := os.MkdirTemp("", "signet-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chown(base, uid, gid); err != nil {
		t.Fatal(err)
	}
	c := &pgCluster{data: filepath.Join(base, "data"), port: nginxtest.FreePort(t), uid: uid, gid: gid}
	if out, err := asPostgres(uid, gid, "initdb", "-D", c.data, "-U", "postgres", "--auth-local=trust", "--auth-host=reject").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	conf := fmt.Sprintf(`
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
ssl = on
ssl_cert_file = '%[3]s/svid.pem'
ssl_key_file = '%[3]s/svid_key.pem'
ssl_ca_file = '%[3]s/bundle.pem'
`, c.port, base, certDir)
	appendFile(t, filepath.Join(c.data, "postgresql.conf"), conf)
	// SVIDs carry their identity in the URI SAN and may have an empty
	// subject, so map any verified client certificate to the postgres role.
	if err := os.WriteFile(filepath.Join(c.data, "pg_hba.conf"), []byte("local all all trust\nhostssl all all 127.0.0.1/32 cert clientname=DN map=svid\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	appendFile(t, filepath.Join(c.data, "pg_ident.conf"), "svid /^.*$ postgres\n")
	for _, f := range []string{"pg_hba.conf", "pg_ident.conf", "postgresql.conf"} {
		_ = os.Chown(filepath.Join(c.data, f), uid, gid)
	}
	if out, err := asPostgres(uid, gid, "pg_ctl", "-D", c.data, "-l", filepath.Join(base, "log"), "-w", "-t", "60", "start").CombinedOutput(); err != nil {
		b, _ := os.ReadFile(filepath.Join(base, "log"))
		t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, b)
	}
	t.Cleanup(func() {
		_ = asPostgres(uid, gid, "pg_ctl", "-D", c.data, "-m", "immediate", "-w", "stop").Run()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(base, "log"))
			t.Logf("postgres log:\n%s", b)
		}
	})
	return c
}

func appendFile(t testing.TB, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// reloadCommand is `pg_ctl reload`, run as postgres.
func (c *pgCluster) reloadCommand() []string {
	return []string{"setpriv", "--reuid=" + strconv.Itoa(c.uid), "--regid=" + strconv.Itoa(c.gid), "--clear-groups", filepath.Join(pgBin, "pg_ctl"), "-D", c.data, "reload"}
}

// psql connects with a client SVID (sslmode=verify-ca) and runs a query.
func psqlWithSVID(t testing.TB, port int, svid *x509svid.SVID, bundle *x509bundle.Bundle) (string, error) {
	t.Helper()
	dir := t.TempDir()
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	bundlePEM, _ := bundle.Marshal()
	for name, b := range map[string][]byte{"c.pem": certPEM, "k.pem": keyPEM, "ca.pem": bundlePEM} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	conn := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=verify-ca sslcert=%s sslkey=%s sslrootcert=%s connect_timeout=10",
		port, filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem"), filepath.Join(dir, "ca.pem"))
	out, err := exec.Command("psql", conn, "-Atc", "select 'connected as ' || current_user || ' ssl=' || ssl from pg_stat_ssl where pid = pg_backend_pid()").CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// pgServerSerial does PostgreSQL's SSLRequest and returns the serial of the
// certificate the server presents.
func pgServerSerial(port int, conf *tls.Config) (*big.Int, error) {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	req := make([]byte, 8)
	binary.BigEndian.PutUint32(req[0:], 8)
	binary.BigEndian.PutUint32(req[4:], 80877103)
	if _, err := c.Write(req); err != nil {
		return nil, err
	}
	b := make([]byte, 1)
	if _, err := c.Read(b); err != nil || b[0] != 'S' {
		return nil, fmt.Errorf("SSLRequest answer %q: %v", b, err)
	}
	tc := tls.Client(c, conf.Clone())
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	return tc.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// TestPostgresRotationWithPgCtlReload: ssl=on from the helper's files, key
// 0600 owned by postgres via uid/gid, reload through `pg_ctl reload`; psql
// with a client SVID connects before and after rotation.
func TestPostgresRotationWithPgCtlReload(t *testing.T) {
	ca := newTestCA(t, "example.org")
	agent := newFakeAgent(t, ca, "spiffe://example.org/db")
	agent.start()
	first := agent.rotate(time.Hour)
	uid, gid := postgresIDs(t)
	certDir := filepath.Join(t.TempDir(), "certs")
	if err := os.Chmod(filepath.Dir(certDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(filepath.Dir(certDir)), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := NewConfig()
	cfg.AgentAddress, cfg.CertDir, cfg.UID, cfg.GID = agent.addr(), certDir, uid, gid
	once := cfg
	once.DaemonMode = false
	if err := Run(context.Background(), once, WithLogger(quietLog())); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(certDir, "svid_key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if sys := st.Sys().(*syscall.Stat_t); st.Mode().Perm() != 0o600 || int(sys.Uid) != uid {
		t.Fatalf("server key mode %#o uid %d, want 0600 owned by postgres", st.Mode().Perm(), sys.Uid)
	}
	pg := startPostgres(t, certDir)
	cfg.ReloadCommand = pg.reloadCommand()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, WithLogger(quietLog())) }()
	defer func() { cancel(); <-done }()

	client := ca.svid(t, "spiffe://example.org/psql", time.Hour)
	if out, err := psqlWithSVID(t, pg.port, client, ca.bundle()); err != nil || !strings.Contains(out, "connected as postgres ssl=t") {
		t.Fatalf("psql before rotation: %v: %s", err, out)
	}
	conf := tlsconfig.TLSClientConfig(ca.bundle(), tlsconfig.AuthorizeID(first.ID))
	next := agent.rotate(20 * time.Second)
	waitFor(t, func() bool {
		s, err := pgServerSerial(pg.port, conf)
		return err == nil && s.Cmp(next.Certificates[0].SerialNumber) == 0
	})
	if out, err := psqlWithSVID(t, pg.port, client, ca.bundle()); err != nil || !strings.Contains(out, "connected as postgres ssl=t") {
		t.Fatalf("psql after rotation: %v: %s", err, out)
	}
}
