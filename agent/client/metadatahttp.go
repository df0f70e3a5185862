package client

import (
	"fmt"
	"net"
	"net/http"
	"time"
)

// metadataHTTPClient is the HTTP client for a cloud metadata service
// (EC2's IMDS, GCE's metadata server). It never goes through a proxy,
// never follows a redirect (the services answer directly; a redirect would
// carry the IMDSv2 token or the Metadata-Flavor request to another host,
// whose answer would become the evidence), and keeps no connection open
// between attestations.
func metadataHTTPClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:             nil,
			DialContext:       (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// refuseRedirect is an error for a redirect answered to url (the client
// does not follow it), naming where it pointed; nil for any other answer.
func refuseRedirect(url string, resp *http.Response) error {
	if resp.StatusCode < 300 || resp.StatusCode > 399 {
		return nil
	}
	return fmt.Errorf("%s answered %s redirecting to %q: a metadata service never redirects, and the request (its token) is not sent elsewhere", url, resp.Status, clip(resp.Header.Get("Location")))
}
