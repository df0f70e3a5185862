package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Attestation types the server knows.
const (
	JoinTokenType = "join_token"
	K8sPSATType   = "k8s_psat"
)

// Evidence is what the agent presents in one attestation.
type Evidence struct {
	// Type is the attestation type (JoinTokenType, K8sPSATType).
	Type    string
	Payload []byte
	// SingleUse evidence is spent by being presented (join tokens): the
	// agent never presents it twice, even across restarts.
	SingleUse bool
}

// NodeAttestor produces the evidence for each (re-)attestation, so it may
// re-read a file that changed since the last one.
type NodeAttestor interface {
	Evidence() (Evidence, error)
}

// errNoEvidence means the agent has nothing to attest with.
var errNoEvidence = errors.New("no join token available (give a fresh --join-token)")

// JoinToken attests with the join token token returns ("" when there is
// none).
func JoinToken(token func() string) NodeAttestor { return joinToken(token) }

type joinToken func() string

func (t joinToken) Evidence() (Evidence, error) {
	tok := t()
	if tok == "" {
		return Evidence{}, errNoEvidence
	}
	return Evidence{Type: JoinTokenType, Payload: []byte(tok), SingleUse: true}, nil
}

// PSAT attests with the Kubernetes projected service account token in the
// file at tokenPath, for the cluster the server knows as cluster. The file
// is read at every attestation: the kubelet rotates the token.
func PSAT(cluster, tokenPath string) NodeAttestor { return psat{cluster: cluster, path: tokenPath} }

type psat struct{ cluster, path string }

func (p psat) Evidence() (Evidence, error) {
	b, err := os.ReadFile(p.path)
	if err != nil {
		return Evidence{}, fmt.Errorf("read projected service account token (mount one with audience signet-server): %w", err)
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return Evidence{}, fmt.Errorf("projected service account token %s is empty", p.path)
	}
	payload, err := json.Marshal(struct {
		Cluster string `json:"cluster"`
		Token   string `json:"token"`
	}{p.cluster, token})
	if err != nil {
		return Evidence{}, fmt.Errorf("encode k8s_psat attestation: %w", err)
	}
	return Evidence{Type: K8sPSATType, Payload: payload}, nil
}
