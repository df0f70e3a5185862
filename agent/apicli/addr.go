package apicli

import (
	"fmt"
	"path/filepath"
	"strings"
)

// EnvSocket is the standard variable naming the Workload API endpoint.
const EnvSocket = "SPIFFE_ENDPOINT_SOCKET"

// DefaultSocket is the agent's default Workload API socket.
const DefaultSocket = "/run/signet/sockets/agent.sock"

// ResolveAddr returns the go-spiffe address of the Workload API: flagValue
// if set, else envValue (from SPIFFE_ENDPOINT_SOCKET), else DefaultSocket.
// Each may be `unix:///abs/path` (or another go-spiffe address) or a bare
// filesystem path.
func ResolveAddr(flagValue, envValue string) (string, error) {
	v := flagValue
	if v == "" {
		v = envValue
	}
	if v == "" {
		v = DefaultSocket
	}
	if strings.HasPrefix(v, "unix:") || strings.HasPrefix(v, "tcp:") {
		return v, nil
	}
	abs, err := filepath.Abs(v)
	if err != nil {
		return "", fmt.Errorf("workload API socket %q: %w", v, err)
	}
	return "unix://" + abs, nil
}
