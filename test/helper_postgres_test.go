package test

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
)

const pgBin = "/usr/lib/postgresql/15/bin"

// pgServerSerial does PostgreSQL's SSLRequest and returns the serial of the
// certificate the server presents (chain not verified: only the serial is
// compared; psql below verifies the chain).
func pgServerSerial(port int) (*big.Int, error) {
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
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	return tc.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// The Done-means test with the real agent: PostgreSQL with ssl=on from the
// helper's files (key 0600 owned by postgres via --uid/--gid), a hostssl
// cert rule, `pg_ctl reload` after rotation; psql with a client SVID
// connects before and after.
func TestHelperPostgresRotation(t *testing.T) {
	t.Parallel() // mostly waits: runs beside the other long end-to-end tests
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	d := startDev(t, "--svid-ttl", "20s")
	// Three identities for this process: PostgreSQL's, the client's, whose
	// first DNS name (its subject CN) pg_ident.conf maps to a role, and
	// another workload's, which must not log in.
	for _, e := range []struct{ name, dns string }{{"pg-server", "localhost"}, {"pg-client", "billing"}, {"other", "other"}} {
		d.createEntry(t, "--parent-id", d.AgentID, "--spiffe-id", "spiffe://example.org/"+e.name, "--selector", "unix:uid:0",
			"--hint", e.name, "--dns", e.dns)
	}
	base, err := os.MkdirTemp("", "signet-e2e-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	_ = os.Chmod(base, 0o755)
	_ = os.Chown(base, uid, gid) // postgres writes its log and socket here
	certDir, data, clientDir := filepath.Join(base, "certs"), filepath.Join(base, "data"), filepath.Join(base, "client")
	ctx := context.Background()
	otherDir := filepath.Join(base, "other")
	if out, err := runSignet(t, ctx, "helper", "--once", "--socket", d.Addr(), "--cert-dir", certDir, "--uid", "postgres", "--gid", "postgres", "--hint", "pg-server"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	// The client SVIDs for psql, 0600 owned by root.
	for hint, dir := range map[string]string{"pg-client": clientDir, "other": otherDir} {
		if out, err := runSignet(t, ctx, "helper", "--once", "--socket", d.Addr(), "--cert-dir", dir, "--hint", hint); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	st, err := os.Stat(filepath.Join(certDir, "svid_key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if sys := st.Sys().(*syscall.Stat_t); st.Mode().Perm() != 0o600 || int(sys.Uid) != uid {
		t.Fatalf("server key mode %#o uid %d, want 0600 owned by postgres", st.Mode().Perm(), sys.Uid)
	}
	asPG := func(args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(pgBin, args[0]), args[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		return cmd
	}
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	_ = os.Chown(data, uid, gid)
	if out, err := asPG("initdb", "-D", data, "-U", "postgres", "--auth-local=trust", "--auth-host=reject").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := fmt.Sprintf("listen_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = '%s'\nssl = on\nssl_cert_file = '%[3]s/svid.pem'\nssl_key_file = '%[3]s/svid_key.pem'\nssl_ca_file = '%[3]s/bundle.pem'\n", port, base, certDir)
	f, _ := os.OpenFile(filepath.Join(data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(conf)
	f.Close()
	// As examples/postgres: the certificate's CN (the client entry's first
	// DNS name) maps to one role.
	os.WriteFile(filepath.Join(data, "pg_hba.conf"), []byte("local all all trust\nhostssl all all 127.0.0.1/32 cert map=svid\n"), 0o600)
	os.WriteFile(filepath.Join(data, "pg_ident.conf"), []byte("svid billing postgres\n"), 0o600)
	for _, n := range []string{"pg_hba.conf", "pg_ident.conf"} {
		_ = os.Chown(filepath.Join(data, n), uid, gid)
	}
	if out, err := asPG("pg_ctl", "-D", data, "-l", filepath.Join(base, "log"), "-w", "-t", "60", "start").CombinedOutput(); err != nil {
		b, _ := os.ReadFile(filepath.Join(base, "log"))
		t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, b)
	}
	t.Cleanup(func() {
		_ = asPG("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop").Run()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(base, "log"))
			t.Logf("postgres log:\n%s", b)
		}
	})
	psqlAs := func(dir string) (string, error) {
		conn := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=verify-ca sslcert=%[2]s/svid.pem sslkey=%[2]s/svid_key.pem sslrootcert=%[2]s/bundle.pem connect_timeout=10", port, dir)
		out, err := exec.Command("psql", conn, "-Atc", "select 'ssl=' || ssl from pg_stat_ssl where pid = pg_backend_pid()").CombinedOutput()
		return string(out), err
	}
	psql := func() {
		t.Helper()
		if out, err := psqlAs(clientDir); err != nil || !strings.Contains(out, "ssl=t") {
			t.Fatalf("psql: %v: %s", err, out)
		}
	}
	psql()
	// A valid SVID of the same trust domain, but not the mapped identity.
	if out, err := psqlAs(otherDir); err == nil || !strings.Contains(out, "certificate authentication failed") {
		t.Fatalf("psql with another workload's SVID: %v: %s; want certificate authentication refused", err, out)
	}
	before, err := pgServerSerial(port)
	if err != nil {
		t.Fatal(err)
	}
	reload := fmt.Sprintf("setpriv --reuid=%d --regid=%d --clear-groups %s -D %s reload", uid, gid, filepath.Join(pgBin, "pg_ctl"), data)
	startSignet(t, nil, "helper", "--socket", d.Addr(), "--cert-dir", certDir, "--uid", "postgres", "--gid", "postgres", "--hint", "pg-server", "--reload-cmd", reload)
	deadline := time.Now().Add(90 * time.Second)
	for {
		s, err := pgServerSerial(port)
		if err == nil && s.Cmp(before) != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("PostgreSQL still serves serial %x after 90s (%v)", before, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	psql()
}
