package nodeattest

import (
	"context"
	"crypto/rsa"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/signetid/signet/internal/pemkey"
	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/api/gcpiit"
	"github.com/signetid/signet/server/api/gcpiit/gcpiittest"
)

// newGCPIIT is a gcp_iit attestor that fetches certs' certificates and
// trusts project-a and project-b.
func newGCPIIT(t testing.TB, certs *gcpiittest.Certs, template string) *GCPIIT {
	t.Helper()
	p, err := NewGCPIIT(td, GCPIITConfig{ProjectIDs: []string{"project-a", "project-b"}, CertsURL: certs.URL, AgentPathTemplate: template})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var testInstance = gcpiittest.Instance("project-a", "us-west1-b", "blog-server", "4567890123456789012")

// A token Google signed for SPIRE's audience, with the Compute Engine
// claims, names the agent by project and instance, with SPIRE's selectors,
// trusted on first use. Google's certificates are fetched once and kept.
func TestGCPIITAttest(t *testing.T) {
	signer := gcpiittest.NewSigner(t)
	certs := gcpiittest.NewCerts(t, signer)
	p := newGCPIIT(t, certs, "")
	for range 2 {
		tok := signer.Token(t, gcpiittest.Claims(testInstance, gcpiit.Audience))
		res, err := p.Attest(context.Background(), []byte(tok+"\n"), time.Now())
		if err != nil {
			t.Fatalf("Attest: %v", err)
		}
		if res.AgentID.String() != "spiffe://example.org/agent/gcp_iit/project-a/4567890123456789012" || res.Type != "gcp_iit" || !res.TrustOnFirstUse || res.CanReattest {
			t.Fatalf("result %+v", res)
		}
		want := "gcp_iit:instance-name:blog-server gcp_iit:project-id:project-a gcp_iit:zone:us-west1-b"
		if got := strings.Join(selector.Strings(res.Selectors), " "); got != want {
			t.Fatalf("selectors %s, want %s", got, want)
		}
	}
	if n := certs.Fetches(); n != 1 {
		t.Fatalf("Google's certificates fetched %d times for two attestations, want once (kept until Expires)", n)
	}
	p = newGCPIIT(t, certs, "{{ .PluginName }}/{{ .ProjectNumber }}/{{ .Zone }}/{{ .InstanceName }}/{{ .InstanceID }}")
	res, err := p.Attest(context.Background(), []byte(signer.Token(t, gcpiittest.Claims(testInstance, gcpiit.Audience))), time.Now())
	if err != nil || res.AgentID.String() != "spiffe://example.org/agent/gcp_iit/123456789012/us-west1-b/blog-server/"+testInstance.InstanceID {
		t.Fatalf("templated: %v, %v", res.AgentID, err)
	}
}

// Everything but Google's signature of an unexpired instance token for
// SPIRE's audience and an allowed project is refused, naming why.
func TestGCPIITRefused(t *testing.T) {
	signer := gcpiittest.NewSigner(t)
	certs := gcpiittest.NewCerts(t, signer)
	p := newGCPIIT(t, certs, "")
	attacker := gcpiittest.NewSigner(t)
	impostor := gcpiittest.NewSigner(t)
	impostor.KeyID = signer.KeyID // Google's kid, another key
	claims := func(mutate func(*gcpiit.Claims)) gcpiit.Claims {
		c := gcpiittest.Claims(testInstance, gcpiit.Audience)
		mutate(&c)
		return c
	}
	tests := []struct {
		name  string
		token string
		now   time.Time
		want  string
	}{
		{"unknown key", attacker.Token(t, gcpiittest.Claims(testInstance, gcpiit.Audience)), time.Now(), "which is not among Google's certificates"},
		{"another key under Google's kid", impostor.Token(t, gcpiittest.Claims(testInstance, gcpiit.Audience)), time.Now(), "signature does not verify with Google's key"},
		{"expired", signer.Token(t, gcpiittest.Claims(testInstance, gcpiit.Audience)), time.Now().Add(2 * time.Hour), "token is expired"},
		{"not yet valid", signer.Token(t, claims(func(c *gcpiit.Claims) { c.NotBefore = josejwt.NewNumericDate(time.Now().Add(time.Hour)) })), time.Now(), "not valid yet"},
		{"issued in the future", signer.Token(t, claims(func(c *gcpiit.Claims) { c.IssuedAt = josejwt.NewNumericDate(time.Now().Add(5 * time.Minute)) })), time.Now(), "issued in the future"},
		{"expired beyond the minute's leeway", signer.Token(t, gcpiittest.Claims(testInstance, gcpiit.Audience)), time.Now().Add(time.Hour + 2*time.Minute), "token is expired"},
		{"another audience", signer.Token(t, gcpiittest.Claims(testInstance, "https://other.example.org")), time.Now(), "invalid audience claim"},
		{"no expiry", signer.Token(t, claims(func(c *gcpiit.Claims) { c.Expiry = nil })), time.Now(), "the token has no expiry"},
		{"another issuer", signer.Token(t, claims(func(c *gcpiit.Claims) { c.Issuer = "https://evil.example.org" })), time.Now(), "not Google's"},
		{"no Compute Engine claims (format=standard)", signer.Token(t, claims(func(c *gcpiit.Claims) { c.Google = gcpiit.Google{} })), time.Now(), "names no Compute Engine instance"},
		{"instance ID not a number", signer.Token(t, gcpiittest.Claims(gcpiittest.Instance("project-a", "z", "n", "12/34"), gcpiit.Audience)), time.Now(), `the instance ID "12/34" is not a number`},
		{"project not allowed", signer.Token(t, gcpiittest.Claims(gcpiittest.Instance("project-z", "z", "n", "1"), gcpiit.Audience)), time.Now(), "project project-z is not in projectid_allow_list"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.Attest(context.Background(), []byte(tc.token), tc.now)
			if !errors.Is(err, ErrGCPIITRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Attest: %v; want ErrGCPIITRefused containing %q", err, tc.want)
			}
		})
	}
	// Within the minute's leeway of the clock skew, it attests.
	skewed := signer.Token(t, claims(func(c *gcpiit.Claims) { c.IssuedAt = josejwt.NewNumericDate(time.Now().Add(30 * time.Second)) }))
	if _, err := p.Attest(context.Background(), []byte(skewed), time.Now()); err != nil {
		t.Fatalf("issued 30 s ahead (clock skew): %v", err)
	}
	if _, err := p.Attest(context.Background(), []byte(signer.Token(t, gcpiittest.Claims(testInstance, gcpiit.Audience))), time.Now().Add(time.Hour+30*time.Second)); err != nil {
		t.Fatalf("expired 30 s ago (clock skew): %v", err)
	}
	p = newGCPIIT(t, certs, "k8s_psat/{{ .InstanceID }}")
	if _, err := p.Attest(context.Background(), []byte(signer.Token(t, gcpiittest.Claims(testInstance, gcpiit.Audience))), time.Now()); !errors.Is(err, ErrGCPIITRefused) || !strings.Contains(err.Error(), "belong to k8s_psat agents") {
		t.Fatalf("template into k8s_psat's namespace: %v", err)
	}
}

// Payloads that are not RS256 JWTs naming their key are malformed.
func TestGCPIITMalformed(t *testing.T) {
	signer := gcpiittest.NewSigner(t)
	p := newGCPIIT(t, gcpiittest.NewCerts(t, signer), "")
	claims := gcpiittest.Claims(testInstance, gcpiit.Audience)
	noKid, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: signer.Key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	noKidToken, err := josejwt.Signed(noKid).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, payload, want string }{
		{"not a JWT", "hello", "not an RS256 JWT"},
		{"RS384", signer.TokenWith(t, jose.RS384, claims), "not an RS256 JWT"},
		{"PS256", signer.TokenWith(t, jose.PS256, claims), "not an RS256 JWT"},
		{"unsigned", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "not an RS256 JWT"},
		{"no kid", noKidToken, "names no signing key (kid)"},
		{"too big", strings.Repeat("a", maxGCPIITPayload+1), "the limit is"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.Attest(context.Background(), []byte(tc.payload), time.Now())
			if !errors.Is(err, ErrGCPIITMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Attest: %v; want ErrGCPIITMalformed containing %q", err, tc.want)
			}
		})
	}
}

// Google rotates its keys: a token naming a key the server does not hold
// refetches the certificates, at most every 30 s. Certificates that cannot
// be fetched are an error of neither kind (the agent API answers
// Unavailable), unless some were fetched before: those are kept.
func TestGCPIITCertificates(t *testing.T) {
	ctx := context.Background()
	oldKey, newKey := gcpiittest.NewSigner(t), gcpiittest.NewSigner(t)
	certs := gcpiittest.NewCerts(t, oldKey)
	p := newGCPIIT(t, certs, "")
	now := time.Now()
	if _, err := p.Attest(ctx, []byte(oldKey.Token(t, gcpiittest.Claims(testInstance, gcpiit.Audience))), now); err != nil {
		t.Fatal(err)
	}
	certs.SetSigners(oldKey, newKey)
	rotated := []byte(newKey.Token(t, gcpiittest.Claims(testInstance, gcpiit.Audience)))
	if _, err := p.Attest(ctx, rotated, now.Add(time.Second)); !errors.Is(err, ErrGCPIITRefused) || certs.Fetches() != 1 {
		t.Fatalf("new key within 30 s of the fetch: %v, %d fetches; want refused without a refetch", err, certs.Fetches())
	}
	if _, err := p.Attest(ctx, rotated, now.Add(31*time.Second)); err != nil || certs.Fetches() != 2 {
		t.Fatalf("new key 31 s later: %v, %d fetches; want attested after one refetch", err, certs.Fetches())
	}
	certs.Close()
	later := gcpiittest.Claims(testInstance, gcpiit.Audience)
	later.Expiry = josejwt.NewNumericDate(now.Add(3 * time.Hour))
	if _, err := p.Attest(ctx, []byte(newKey.Token(t, later)), now.Add(2*time.Hour)); err != nil {
		t.Fatalf("certificates expired and endpoint down: %v; want the last ones kept", err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String() + "/oauth2/v1/certs"
	ln.Close()
	fresh, err := NewGCPIIT(td, GCPIITConfig{ProjectIDs: []string{"project-a"}, CertsURL: down})
	if err != nil {
		t.Fatal(err)
	}
	_, err = fresh.Attest(ctx, rotated, now)
	if err == nil || errors.Is(err, ErrGCPIITRefused) || errors.Is(err, ErrGCPIITMalformed) || !strings.Contains(err.Error(), "fetch Google certificates") {
		t.Fatalf("certificates endpoint down: %v; want a fetch error of neither kind", err)
	}

	for body, want := range map[string]string{
		`[]`:               "not a JSON object",
		`{}`:               "holds no certificate",
		`{"k": "not PEM"}`: "key k: not a PEM certificate",
		`{"k": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}`: "key k:",
	} {
		if _, err := parseGoogleCerts([]byte(body)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseGoogleCerts(%s): %v, want %q", body, err, want)
		}
	}
}

// The block's settings are checked at start, without reaching Google.
func TestGCPIITConfig(t *testing.T) {
	tests := []struct {
		cfg  GCPIITConfig
		want string
	}{
		{GCPIITConfig{}, "projectid_allow_list is required"},
		{GCPIITConfig{ProjectIDs: []string{"a b"}}, `"a b" is not a project ID`},
		{GCPIITConfig{ProjectIDs: []string{"p"}, CertsURL: "http://certs.example.org/certs"}, "plain http is allowed only to a loopback host"},
		{GCPIITConfig{ProjectIDs: []string{"p"}, CertsURL: "ftp://certs.example.org/certs"}, "want an https URL"},
		{GCPIITConfig{ProjectIDs: []string{"p"}, CertsURL: "certs"}, "want an https URL"},
		{GCPIITConfig{ProjectIDs: []string{"p"}, AgentPathTemplate: "{{ .Hostname }}"}, "unknown field .Hostname; the fields are "},
		{GCPIITConfig{ProjectIDs: []string{"p"}, AgentPathTemplate: "{{ .PluginName }}/{{ .ProjectID }}/{{ .Zone }}/{{ .InstanceName }}"},
			`agent_path_template "{{ .PluginName }}/{{ .ProjectID }}/{{ .Zone }}/{{ .InstanceName }}" does not use {{ .InstanceID }}: every instance would get the same agent ID`},
		{GCPIITConfig{ProjectIDs: []string{"p"}, AgentPathTemplate: "{{ .PluginName }}/{{ .Zone }}/{{ .InstanceID }}"}, ""},
		{GCPIITConfig{ProjectIDs: []string{"p"}}, ""},
	}
	for _, tc := range tests {
		err := tc.cfg.Check()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Check(%+v): %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

// FuzzGCPIITPayload feeds arbitrary payloads to a configured attestor: it
// never panics, and accepts only the configured signer's tokens.
func FuzzGCPIITPayload(f *testing.F) {
	key, err := pemkey.Read("testdata/fuzz-signer-key.pem")
	if err != nil {
		f.Fatal(err)
	}
	signer := gcpiittest.NewSignerWithKey(f, key.(*rsa.PrivateKey))
	p := newGCPIIT(f, gcpiittest.NewCerts(f, signer), "")
	f.Add([]byte(signer.Token(f, gcpiittest.Claims(testInstance, gcpiit.Audience))))
	f.Add([]byte(signer.Token(f, gcpiittest.Claims(gcpiittest.Instance("project-z", "z", "n", "1"), "aud"))))
	f.Add([]byte("eyJhbGciOiJSUzI1NiIsImtpZCI6IngifQ.e30.c2ln"))
	f.Fuzz(func(t *testing.T, payload []byte) {
		res, err := p.Attest(context.Background(), payload, time.Now())
		if err != nil {
			if !errors.Is(err, ErrGCPIITRefused) && !errors.Is(err, ErrGCPIITMalformed) {
				t.Fatalf("error of no known kind: %v", err)
			}
			return
		}
		tok, kid, err := ParseGCPIITPayload(payload)
		var c gcpiit.Claims
		if err != nil || kid != signer.KeyID || tok.Claims(&signer.Key.PublicKey, &c) != nil || !p.projects[c.Google.ComputeEngine.ProjectID] || !res.TrustOnFirstUse {
			t.Fatalf("accepted %q as %v", payload, res.AgentID)
		}
	})
}

// certsEndpoint is a certificates endpoint whose answers the test decides:
// answer(n) for the n-th fetch (from 1) writes the response.
func certsEndpoint(t *testing.T, answer func(n int, w http.ResponseWriter, r *http.Request)) (string, func() int) {
	t.Helper()
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		i := n
		mu.Unlock()
		answer(i, w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/oauth2/v1/certs", func() int { mu.Lock(); defer mu.Unlock(); return n }
}

// Callers cannot make the server hammer Google's endpoint, nor hold up
// each other: while it fails and nothing is held, attestations answer the
// last error without a fetch for 5 s; a caller that gives up does not
// abort the fetch others rely on; a token whose key is held is checked
// while a fetch (for another key) is under way.
func TestGCPIITCertificateFetches(t *testing.T) {
	signer := gcpiittest.NewSigner(t)
	token := []byte(signer.Token(t, gcpiittest.Claims(testInstance, gcpiit.Audience)))
	now := time.Now()

	t.Run("endpoint failing", func(t *testing.T) {
		url, fetches := certsEndpoint(t, func(n int, w http.ResponseWriter, r *http.Request) {
			if n == 1 {
				http.Error(w, "backend error", http.StatusServiceUnavailable)
				return
			}
			w.Write(gcpiittest.CertsJSON(signer))
		})
		p, err := NewGCPIIT(td, GCPIITConfig{ProjectIDs: []string{"project-a"}, CertsURL: url})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 20 {
			_, err := p.Attest(context.Background(), token, now.Add(time.Duration(i)*100*time.Millisecond))
			if err == nil || errors.Is(err, ErrGCPIITRefused) || !strings.Contains(err.Error(), "503") {
				t.Fatalf("attestation %d with the endpoint failing: %v; want its error", i, err)
			}
		}
		if n := fetches(); n != 1 {
			t.Fatalf("%d fetches for 20 attestations in 2 s with the endpoint failing, want 1", n)
		}
		if _, err := p.Attest(context.Background(), token, now.Add(6*time.Second)); err != nil || fetches() != 2 {
			t.Fatalf("6 s later: %v after %d fetches; want attested after a second fetch", err, fetches())
		}
	})

	t.Run("caller gives up", func(t *testing.T) {
		newKey := gcpiittest.NewSigner(t)
		url, fetches := certsEndpoint(t, func(n int, w http.ResponseWriter, r *http.Request) {
			if n == 1 {
				w.Write(gcpiittest.CertsJSON(signer))
				return
			}
			w.Write(gcpiittest.CertsJSON(signer, newKey))
		})
		p, err := NewGCPIIT(td, GCPIITConfig{ProjectIDs: []string{"project-a"}, CertsURL: url})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Attest(context.Background(), token, now); err != nil {
			t.Fatal(err)
		}
		gone, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := p.Attest(gone, []byte(newKey.Token(t, gcpiittest.Claims(testInstance, gcpiit.Audience))), now.Add(31*time.Second)); err == nil {
			t.Fatal("a caller that gave up was answered")
		}
		if _, err := p.Attest(context.Background(), []byte(newKey.Token(t, gcpiittest.Claims(testInstance, gcpiit.Audience))), now.Add(32*time.Second)); err != nil || fetches() != 2 {
			t.Fatalf("the new key after a caller gave up on its fetch: %v, %d fetches; want attested, the fetch completed", err, fetches())
		}
	})

	t.Run("known key during a fetch", func(t *testing.T) {
		rotated := gcpiittest.NewSigner(t)
		started, release := make(chan struct{}), make(chan struct{})
		url, _ := certsEndpoint(t, func(n int, w http.ResponseWriter, r *http.Request) {
			if n == 1 {
				w.Write(gcpiittest.CertsJSON(signer))
				return
			}
			// The second fetch answers only once the test releases
			// it; a server that made the held key wait for it would
			// see the fetch time out first, and refuse the new key.
			close(started)
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
			w.Write(gcpiittest.CertsJSON(signer, rotated))
		})
		p, err := NewGCPIIT(td, GCPIITConfig{ProjectIDs: []string{"project-a"}, CertsURL: url})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Attest(context.Background(), token, now); err != nil {
			t.Fatal(err)
		}
		waiting := make(chan error, 1)
		go func() {
			_, err := p.Attest(context.Background(), []byte(rotated.Token(t, gcpiittest.Claims(testInstance, gcpiit.Audience))), now.Add(31*time.Second))
			waiting <- err
		}()
		<-started
		_, err = p.Attest(context.Background(), token, now.Add(32*time.Second))
		close(release)
		if err != nil {
			t.Fatalf("a token of a held key during a fetch: %v", err)
		}
		if err := <-waiting; err != nil {
			t.Fatalf("the new key, its fetch released after a held key's token was checked: %v; want attested (the held key's check did not wait for the fetch)", err)
		}
	})
}

// The certificates endpoint's redirects are not followed (they could lead
// to plain http, or off the loopback host a test URL was allowed for), and
// an Expires years ahead keeps the certificates a day at most: a key
// Google withdrew is refused the next day.
func TestGCPIITCertificateEndpoint(t *testing.T) {
	signer := gcpiittest.NewSigner(t)
	token := []byte(signer.Token(t, gcpiittest.Claims(testInstance, gcpiit.Audience)))
	elsewhere := gcpiittest.NewCerts(t, signer)
	url, fetches := certsEndpoint(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL, http.StatusFound)
	})
	p, err := NewGCPIIT(td, GCPIITConfig{ProjectIDs: []string{"project-a"}, CertsURL: url})
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Attest(context.Background(), token, time.Now())
	if err == nil || !strings.Contains(err.Error(), "302 Found redirecting to \""+elsewhere.URL+"\", which is not followed") || elsewhere.Fetches() != 0 || fetches() != 1 {
		t.Fatalf("a redirecting endpoint: %v, %d fetches of the target; want refused, the redirect not followed", err, elsewhere.Fetches())
	}

	now := time.Now()
	withdrawn := gcpiittest.NewSigner(t)
	url, _ = certsEndpoint(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Expires", now.AddDate(5, 0, 0).UTC().Format(http.TimeFormat))
		if n == 1 {
			w.Write(gcpiittest.CertsJSON(signer, withdrawn))
			return
		}
		w.Write(gcpiittest.CertsJSON(signer))
	})
	p, err = NewGCPIIT(td, GCPIITConfig{ProjectIDs: []string{"project-a"}, CertsURL: url})
	if err != nil {
		t.Fatal(err)
	}
	at := func(d time.Duration) []byte {
		c := gcpiittest.Claims(testInstance, gcpiit.Audience)
		c.IssuedAt, c.Expiry = josejwt.NewNumericDate(now.Add(d)), josejwt.NewNumericDate(now.Add(d+time.Hour))
		return []byte(withdrawn.Token(t, c))
	}
	if _, err := p.Attest(context.Background(), at(0), now); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Attest(context.Background(), at(25*time.Hour), now.Add(25*time.Hour)); !errors.Is(err, ErrGCPIITRefused) {
		t.Fatalf("a withdrawn key a day later, Expires 5 years ahead: %v; want refused after a refetch", err)
	}
}

// The fuzz target's signer is the same in every run: two signers of its
// key share the kid, and a token of one attests against the other's
// certificates, so stored fuzz inputs reach signature verification.
func TestGCPIITFuzzSignerStable(t *testing.T) {
	key, err := pemkey.Read("testdata/fuzz-signer-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	a, b := gcpiittest.NewSignerWithKey(t, key.(*rsa.PrivateKey)), gcpiittest.NewSignerWithKey(t, key.(*rsa.PrivateKey))
	if a.KeyID != b.KeyID || len(a.KeyID) != 40 {
		t.Fatalf("kids %q and %q, want one of 40 hex digits", a.KeyID, b.KeyID)
	}
	if _, err := newGCPIIT(t, gcpiittest.NewCerts(t, b), "").Attest(context.Background(), []byte(a.Token(t, gcpiittest.Claims(testInstance, gcpiit.Audience))), time.Now()); err != nil {
		t.Fatalf("a token of one fuzz signer against the other's certificates: %v", err)
	}
}
