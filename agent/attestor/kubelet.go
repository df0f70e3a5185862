package attestor

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/scheme"
)

const (
	// kubeletTimeout bounds one GET /pods (through its context) and one
	// TLS handshake.
	kubeletTimeout = 10 * time.Second
	// maxPodListBytes bounds the kubelet's answer: a node's pod list is a
	// few MiB at most.
	maxPodListBytes = 64 << 20
)

// kubeletClient lists the pods of one kubelet (GET /pods).
type kubeletClient struct {
	podsURL   string
	tokenPath string // "" on plain http: a token must not travel in clear
	http      *http.Client
}

// newKubeletClient checks what it can now (the CA and the token are read
// again later, as they rotate) and returns a client for base.
func newKubeletClient(base *url.URL, tokenPath, caPath string, skipVerify bool) (*kubeletClient, error) {
	c := &kubeletClient{podsURL: base.JoinPath("pods").String(), tokenPath: tokenPath}
	transport := &http.Transport{
		// The kubelet is local: never through an HTTP proxy from the
		// environment, which would see the token.
		Proxy:               nil,
		TLSHandshakeTimeout: kubeletTimeout,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     90 * time.Second,
	}
	if base.Scheme == "https" {
		if tokenPath != "" {
			if _, err := readToken(tokenPath); err != nil {
				return nil, err
			}
		}
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		switch {
		case skipVerify:
			cfg.InsecureSkipVerify = true
		default:
			if _, err := loadCAPool(caPath); err != nil {
				return nil, err
			}
			// Go's own check is replaced, not dropped: verifyKubelet reads
			// the CA at each handshake (it rotates) and knows about
			// loopback (below).
			cfg.InsecureSkipVerify = true
			cfg.VerifyConnection = verifyKubelet(caPath, base.Hostname())
		}
		transport.TLSClientConfig = cfg
	}
	c.http = &http.Client{
		Transport: transport,
		// GET /pods is never redirected; a redirect would carry the token
		// elsewhere or serve another node's pods.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c, nil
}

// verifyKubelet checks the kubelet's serving certificate against the CA in
// caPath and, unless host is a loopback address, against host. A kubelet's
// certificate names its node (hostname, node IPs), never 127.0.0.1: when
// the agent reaches its own node's kubelet over loopback, the CA's signature
// is what identifies it (as SPIRE does).
func verifyKubelet(caPath, host string) func(tls.ConnectionState) error {
	loopback := false
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		loopback = true
	}
	return func(cs tls.ConnectionState) error {
		roots, err := loadCAPool(caPath)
		if err != nil {
			return err
		}
		if len(cs.PeerCertificates) == 0 {
			return errors.New("kubelet presented no certificate")
		}
		opts := x509.VerifyOptions{
			Roots:         roots,
			Intermediates: x509.NewCertPool(),
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		if !loopback {
			opts.DNSName = host
		}
		for _, c := range cs.PeerCertificates[1:] {
			opts.Intermediates.AddCert(c)
		}
		if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
			return fmt.Errorf("kubelet serving certificate not trusted (CA file %s): %w", caPath, err)
		}
		return nil
	}
}

// loadCAPool reads PEM certificates from path.
func loadCAPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read kubelet CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("kubelet CA %s holds no PEM certificate", path)
	}
	return pool, nil
}

// readToken reads the bearer token. It is never put in an error or a log.
func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read kubelet token: %w", err)
	}
	tok := string(bytes.TrimSpace(b))
	switch {
	case tok == "":
		return "", fmt.Errorf("kubelet token %s is empty", path)
	case strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r > '~' }):
		return "", fmt.Errorf("kubelet token %s holds characters a bearer token cannot", path)
	}
	return tok, nil
}

// pods fetches the kubelet's pod list. The token is read for every request:
// the kubelet rotates projected tokens in place.
func (c *kubeletClient) pods(ctx context.Context) (*corev1.PodList, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.podsURL, nil)
	if err != nil {
		return nil, fmt.Errorf("kubelet request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if c.tokenPath != "" {
		tok, err := readToken(c.tokenPath)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("list pods from the kubelet: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPodListBytes+1))
	if err != nil {
		return nil, fmt.Errorf("list pods from the kubelet: read %s: %w", c.podsURL, err)
	}
	if resp.StatusCode != http.StatusOK {
		hint := ""
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			hint = " (the agent's service account needs get on nodes/proxy)"
		}
		return nil, fmt.Errorf("list pods from the kubelet: GET %s: %s%s: %q", c.podsURL, resp.Status, hint, clipBody(body))
	}
	if len(body) > maxPodListBytes {
		return nil, fmt.Errorf("list pods from the kubelet: GET %s: answer larger than %d bytes", c.podsURL, maxPodListBytes)
	}
	// The API machinery's decoder reads the kind and version the answer
	// states (and requires them), so anything but a PodList is refused
	// rather than read as an empty one.
	obj, gvk, err := scheme.Codecs.UniversalDeserializer().Decode(body, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("list pods from the kubelet: GET %s: decode v1 PodList: %w", c.podsURL, err)
	}
	list, ok := obj.(*corev1.PodList)
	if !ok {
		return nil, fmt.Errorf("list pods from the kubelet: GET %s: answer is a %s, not a v1 PodList", c.podsURL, gvk)
	}
	return list, nil
}

func clipBody(b []byte) string {
	const max = 512
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}
