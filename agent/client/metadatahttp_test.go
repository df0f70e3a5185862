package client

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/signetid/signet/server/api/awsiid"
	"github.com/signetid/signet/server/api/awsiid/awsiidtest"
)

// A metadata service that redirects is refused, naming the redirect: the
// client does not follow it, so the IMDSv2 token (or the GCE request) never
// reaches the other host and its answer never becomes the evidence.
func TestMetadataRedirectRefused(t *testing.T) {
	var mu sync.Mutex
	var elsewhere []string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		elsewhere = append(elsewhere, r.Method+" "+r.URL.Path+" token="+r.Header.Get(awsiid.TokenHeader))
		mu.Unlock()
		_, _ = w.Write([]byte("a.b.c"))
	}))
	t.Cleanup(other.Close)
	redirecting := func(redirectPUT bool) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPut && !redirectPUT {
				_, _ = w.Write([]byte("SECRET-TOKEN"))
				return
			}
			http.Redirect(w, r, other.URL+r.URL.Path, http.StatusFound)
		}))
		t.Cleanup(s.Close)
		return s
	}
	tests := []struct {
		name string
		att  NodeAttestor
		want string
	}{
		{"aws_iid, the token request", AWSIID(redirecting(true).URL), "aws_iid: IMDSv2 token request: "},
		{"aws_iid, the document read", AWSIID(redirecting(false).URL), "aws_iid: read: "},
		{"gcp_iit", GCPIIT(strings.TrimPrefix(redirecting(false).URL, "http://"), ""), "gcp_iit: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.att.Evidence(context.Background(), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "302 Found redirecting to \""+other.URL) ||
				!strings.Contains(err.Error(), "never redirects") {
				t.Fatalf("Evidence: %v; want a refused redirect to %s", err, other.URL)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if len(elsewhere) != 0 {
		t.Fatalf("the other host was asked %q", elsewhere)
	}
}

// The metadata clients keep no connection open: each request of an
// attestation opens its own.
func TestMetadataNoKeepAlive(t *testing.T) {
	signer := awsiidtest.NewSigner(t)
	doc := awsiidtest.Doc("111122223333", "us-test-1", "i-1")
	imds := awsiidtest.NewIMDS(t, doc, signer.Sign(t, doc))
	var conns atomic.Int32
	counting := httptest.NewUnstartedServer(imds.Config.Handler)
	counting.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	counting.Start()
	t.Cleanup(counting.Close)
	if _, err := AWSIID(counting.URL).Evidence(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if n := conns.Load(); n != 3 {
		t.Fatalf("%d connections for a token and two reads, want 3 (no keep-alive)", n)
	}
}

// A token request answered 200 with no token is an error saying so, not a
// bare "200 OK".
func TestAWSIIDEmptyToken(t *testing.T) {
	imds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			return
		}
		_, _ = w.Write([]byte("x"))
	}))
	t.Cleanup(imds.Close)
	_, err := AWSIID(imds.URL).Evidence(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), "200 OK with an empty token") {
		t.Fatalf("Evidence: %v, want an error naming the empty token", err)
	}
}
