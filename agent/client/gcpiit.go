package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/signetid/signet/server/api/gcpiit"
)

const (
	// gceTimeout bounds the identity request; the metadata server answers
	// in milliseconds on an instance.
	gceTimeout = 10 * time.Second
	// maxGCEResponse bounds the answer (a token is about 1 KiB).
	maxGCEResponse = 16 << 10
)

// GCPIIT attests with the GCE instance identity token of serviceAccount
// ("" for the instance's default one), asked of the metadata server at
// host ("" for metadata.google.internal) at every attestation, for
// SPIRE's audience and with the Compute Engine claims (format=full), as
// SPIRE's agent asks for it.
func GCPIIT(host, serviceAccount string) NodeAttestor {
	if host == "" {
		host = gcpiit.DefaultHost
	}
	if serviceAccount == "" {
		serviceAccount = gcpiit.DefaultServiceAccount
	}
	return gcpIIT{
		url:            "http://" + host + gcpiit.IdentityPath(serviceAccount) + "?" + gcpiit.Query().Encode(),
		serviceAccount: serviceAccount,
		client:         metadataHTTPClient(),
	}
}

type gcpIIT struct {
	url, serviceAccount string
	client              *http.Client
}

func (g gcpIIT) Evidence(ctx context.Context, _ []byte) (Evidence, error) {
	ctx, cancel := context.WithTimeout(ctx, gceTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.url, nil)
	if err != nil {
		return Evidence{}, fmt.Errorf("gcp_iit: identity token request: %w", err)
	}
	req.Header.Set(gcpiit.MetadataFlavorHeader, gcpiit.MetadataFlavor)
	resp, err := g.client.Do(req)
	if err != nil {
		return Evidence{}, fmt.Errorf("gcp_iit: ask the metadata server for the instance identity token: %w (is this a GCE instance?)", err)
	}
	defer resp.Body.Close()
	if err := refuseRedirect(g.url, resp); err != nil {
		return Evidence{}, fmt.Errorf("gcp_iit: %w", err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxGCEResponse+1))
	switch {
	case err != nil:
		return Evidence{}, fmt.Errorf("gcp_iit: read the instance identity token from %s: %w", g.url, err)
	case resp.StatusCode == http.StatusNotFound:
		return Evidence{}, fmt.Errorf("gcp_iit: %s: %s: the instance has no service account %q (service_account)", g.url, resp.Status, g.serviceAccount)
	case resp.StatusCode != http.StatusOK:
		return Evidence{}, fmt.Errorf("gcp_iit: %s: %s: %s", g.url, resp.Status, clip(strings.TrimSpace(string(body))))
	case len(body) > maxGCEResponse:
		return Evidence{}, fmt.Errorf("gcp_iit: %s: answer over %d bytes", g.url, maxGCEResponse)
	}
	token := strings.TrimSpace(string(body))
	if strings.Count(token, ".") != 2 {
		return Evidence{}, fmt.Errorf("gcp_iit: %s answered something other than a token", g.url)
	}
	return Evidence{Type: GCPIITType, Payload: []byte(token), TrustOnFirstUse: true}, nil
}

// clip shortens a server's message for an error.
func clip(s string) string {
	const max = 200
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
