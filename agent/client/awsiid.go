package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/signetid/signet/server/api/awsiid"
)

// DefaultEC2MetadataEndpoint is EC2's instance metadata service (SPIRE's
// ec2_metadata_endpoint default).
const DefaultEC2MetadataEndpoint = "http://169.254.169.254/"

const (
	// imdsTimeout bounds fetching the evidence (a token and two reads); the
	// service answers in milliseconds on an instance.
	imdsTimeout = 10 * time.Second
	// imdsTokenTimeout bounds the token request: an answer that never
	// comes (a container beyond the instance's metadata hop limit drops
	// it) falls back to IMDSv1, as the AWS SDK does.
	imdsTokenTimeout = 2 * time.Second
	// imdsTokenTTL is the IMDSv2 session token's lifetime: it serves one
	// attestation's two reads.
	imdsTokenTTL = 300
	// maxIMDSResponse bounds a response (a document is under 1 KiB, its
	// signature about 2 KiB).
	maxIMDSResponse = 64 << 10
)

// AWSIID attests with the EC2 instance identity document and its
// RSA-2048 signature, read from the instance metadata service at endpoint
// ("" for DefaultEC2MetadataEndpoint) at every attestation. IMDSv2 is
// used: a session token, then reads presenting it. As SPIRE's agent (through
// the AWS SDK) does, a token request the service refuses with 403, 404 or
// 405, or that gets no answer, falls back to IMDSv1 reads without a token,
// which instances requiring tokens refuse.
func AWSIID(endpoint string) NodeAttestor {
	if endpoint == "" {
		endpoint = DefaultEC2MetadataEndpoint
	}
	if !strings.HasSuffix(endpoint, "/") {
		endpoint += "/"
	}
	return awsIID{
		endpoint: endpoint,
		client:   metadataHTTPClient(),
	}
}

type awsIID struct {
	endpoint string
	client   *http.Client
}

func (a awsIID) Evidence(ctx context.Context, _ []byte) (Evidence, error) {
	ctx, cancel := context.WithTimeout(ctx, imdsTimeout)
	defer cancel()
	token, v1Reason, err := a.token(ctx)
	if err != nil {
		return Evidence{}, err
	}
	doc, err := a.get(ctx, awsiid.DocumentPath, token, v1Reason)
	if err != nil {
		return Evidence{}, err
	}
	sig, err := a.get(ctx, awsiid.RSA2048Path, token, v1Reason)
	if err != nil {
		return Evidence{}, err
	}
	payload, err := json.Marshal(awsiid.Payload{Document: string(doc), RSA2048: string(sig)})
	if err != nil {
		return Evidence{}, fmt.Errorf("encode aws_iid attestation: %w", err)
	}
	return Evidence{Type: AWSIIDType, Payload: payload, TrustOnFirstUse: true}, nil
}

// token asks for an IMDSv2 session token. When the service refuses with
// 403, 404 or 405, or does not answer, it returns no token and why, and
// the reads go without one (IMDSv1); a 400 (or any other refusal) is an
// error.
func (a awsIID) token(ctx context.Context) (token, v1Reason string, err error) {
	url := a.endpoint + awsiid.TokenPath
	tokenCtx, cancel := context.WithTimeout(ctx, imdsTokenTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(tokenCtx, http.MethodPut, url, nil)
	if err != nil {
		return "", "", fmt.Errorf("aws_iid: ec2_metadata_endpoint %s: %w", a.endpoint, err)
	}
	req.Header.Set(awsiid.TokenTTLHeader, strconv.Itoa(imdsTokenTTL))
	resp, err := a.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return "", "", fmt.Errorf("aws_iid: IMDSv2 token request to %s: %w", url, err)
		}
		return "", fmt.Sprintf("the IMDSv2 token request got no answer (%v)", err), nil
	}
	defer resp.Body.Close()
	if err := refuseRedirect(url, resp); err != nil {
		return "", "", fmt.Errorf("aws_iid: IMDSv2 token request: %w", err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxIMDSResponse))
	switch {
	case err != nil:
		return "", "", fmt.Errorf("aws_iid: IMDSv2 token from %s: %w", url, err)
	case resp.StatusCode == http.StatusOK && len(strings.TrimSpace(string(body))) == 0:
		return "", "", fmt.Errorf("aws_iid: IMDSv2 token request to %s: %s with an empty token: not an instance metadata service answer", url, resp.Status)
	case resp.StatusCode == http.StatusOK:
		return string(body), "", nil
	case resp.StatusCode == http.StatusForbidden, resp.StatusCode == http.StatusNotFound, resp.StatusCode == http.StatusMethodNotAllowed:
		return "", fmt.Sprintf("the IMDSv2 token request was refused (%s)", resp.Status), nil
	}
	return "", "", fmt.Errorf("aws_iid: IMDSv2 token request to %s: %s", url, resp.Status)
}

// get reads path with the session token (none: IMDSv1, for v1Reason).
func (a awsIID) get(ctx context.Context, path, token, v1Reason string) ([]byte, error) {
	url := a.endpoint + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("aws_iid: ec2_metadata_endpoint %s: %w", a.endpoint, err)
	}
	if token != "" {
		req.Header.Set(awsiid.TokenHeader, token)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("aws_iid: read %s: %w", url, err)
	}
	defer resp.Body.Close()
	if err := refuseRedirect(url, resp); err != nil {
		return nil, fmt.Errorf("aws_iid: read: %w", err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxIMDSResponse+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("aws_iid: read %s: %w", url, err)
	case resp.StatusCode == http.StatusUnauthorized && token == "":
		return nil, fmt.Errorf("aws_iid: read %s: %s: the instance requires IMDSv2 tokens, and %s; in a container, raise the instance's metadata hop limit to 2 (http-put-response-hop-limit)", url, resp.Status, v1Reason)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("aws_iid: read %s: %s", url, resp.Status)
	case len(body) == 0:
		return nil, fmt.Errorf("aws_iid: read %s: empty answer", url)
	case len(body) > maxIMDSResponse:
		return nil, fmt.Errorf("aws_iid: read %s: answer over %d bytes", url, maxIMDSResponse)
	}
	return body, nil
}
