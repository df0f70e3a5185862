package client

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/crypto/ssh"

	"github.com/signetid/signet/server/api/awsiid"
	"github.com/signetid/signet/server/api/gcpiit"
	"github.com/signetid/signet/server/api/sshpop"
	"github.com/signetid/signet/server/api/x509pop"

	"github.com/signetid/signet/internal/pemkey"
)

// Attestation types the server knows.
const (
	JoinTokenType = "join_token"
	K8sPSATType   = "k8s_psat"
	X509PoPType   = x509pop.Type
	SSHPoPType    = sshpop.Type
	AWSIIDType    = awsiid.Type
	GCPIITType    = gcpiit.Type
)

// Evidence is what the agent presents in one attestation.
type Evidence struct {
	// Type is the attestation type (JoinTokenType, K8sPSATType, X509PoPType,
	// SSHPoPType, AWSIIDType, GCPIITType).
	Type    string
	Payload []byte
	// SingleUse evidence is spent by being presented (join tokens): the
	// agent never presents it twice, even across restarts.
	SingleUse bool
	// TrustOnFirstUse evidence (aws_iid, gcp_iit) can be replayed, so the
	// server attests a node with it once, and then again only for the key
	// of the node's agent: the agent presents the key of its last SVID,
	// expired or not, when it has one.
	TrustOnFirstUse bool
}

// NodeAttestor produces the evidence for each (re-)attestation, so it may
// re-read a file that changed since the last one, or ask a metadata
// service again (ctx bounds that). agentKey is the DER
// SubjectPublicKeyInfo of the agent key the server is asked to certify,
// which evidence may be bound to (x509pop and sshpop sign it).
type NodeAttestor interface {
	Evidence(ctx context.Context, agentKey []byte) (Evidence, error)
}

// errNoEvidence means the agent has nothing to attest with.
var errNoEvidence = errors.New("no join token available (give a fresh --join-token)")

// JoinToken attests with the join token token returns ("" when there is
// none).
func JoinToken(token func() string) NodeAttestor { return joinToken(token) }

type joinToken func() string

func (t joinToken) Evidence(context.Context, []byte) (Evidence, error) {
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

func (p psat) Evidence(context.Context, []byte) (Evidence, error) {
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

// X509PoP attests with the host's machine certificate: certPath holds the
// PEM leaf then its intermediates, keyPath its private key (PKCS #8, SEC 1
// EC or PKCS #1 RSA). Both are read at every attestation, as certificates
// get renewed; the agent may attest again with the same one at any time.
func X509PoP(td spiffeid.TrustDomain, certPath, keyPath string) NodeAttestor {
	return x509PoP{td: td, certPath: certPath, keyPath: keyPath}
}

type x509PoP struct {
	td                spiffeid.TrustDomain
	certPath, keyPath string
}

func (x x509PoP) Evidence(_ context.Context, agentKey []byte) (Evidence, error) {
	chain, err := readPEMChain(x.certPath)
	if err != nil {
		return Evidence{}, err
	}
	key, err := pemkey.Read(x.keyPath)
	if err != nil {
		return Evidence{}, fmt.Errorf("x509pop: %w", err)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return Evidence{}, fmt.Errorf("x509pop certificate %s: %w", x.certPath, err)
	}
	if !pemkey.Matches(key, leaf.PublicKey) {
		return Evidence{}, fmt.Errorf("x509pop key %s is not the key of the first certificate in %s", x.keyPath, x.certPath)
	}
	sig, err := x509pop.Sign(key, x509pop.Message(x.td, agentKey))
	if err != nil {
		return Evidence{}, fmt.Errorf("x509pop: sign with %s: %w", x.keyPath, err)
	}
	payload, err := json.Marshal(x509pop.Payload{Chain: chain, Signature: sig})
	if err != nil {
		return Evidence{}, fmt.Errorf("encode x509pop attestation: %w", err)
	}
	return Evidence{Type: X509PoPType, Payload: payload}, nil
}

// SSHPoP attests with the host's OpenSSH host certificate: keyPath holds
// the host's private key as sshd keeps it (OpenSSH or PEM format,
// unencrypted), certPath its certificate (a -cert.pub file). Both are read
// at every attestation, as host certificates get renewed; the agent may
// attest again with the same one at any time.
func SSHPoP(td spiffeid.TrustDomain, keyPath, certPath string) NodeAttestor {
	return sshPoP{td: td, keyPath: keyPath, certPath: certPath}
}

type sshPoP struct {
	td                spiffeid.TrustDomain
	keyPath, certPath string
}

func (s sshPoP) Evidence(_ context.Context, agentKey []byte) (Evidence, error) {
	text, err := os.ReadFile(s.certPath)
	if err != nil {
		return Evidence{}, fmt.Errorf("read sshpop host certificate: %w", err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(text)
	if err != nil {
		return Evidence{}, fmt.Errorf("sshpop host certificate %s: %w", s.certPath, err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		return Evidence{}, fmt.Errorf("sshpop host certificate %s holds a plain %s public key, not a certificate (sign it with ssh-keygen -s ca -h)", s.certPath, pub.Type())
	}
	keyData, err := os.ReadFile(s.keyPath)
	if err != nil {
		return Evidence{}, fmt.Errorf("read sshpop host key: %w", err)
	}
	key, err := ssh.ParsePrivateKey(keyData)
	var encrypted *ssh.PassphraseMissingError
	switch {
	case errors.As(err, &encrypted):
		return Evidence{}, fmt.Errorf("sshpop host key %s is encrypted; give an unencrypted host key, as sshd reads it", s.keyPath)
	case err != nil:
		return Evidence{}, fmt.Errorf("sshpop host key %s: %w", s.keyPath, err)
	}
	if !bytes.Equal(key.PublicKey().Marshal(), cert.Key.Marshal()) {
		return Evidence{}, fmt.Errorf("sshpop host key %s is not the key of the certificate in %s", s.keyPath, s.certPath)
	}
	sig, err := sshpop.Sign(key, sshpop.Message(s.td, agentKey))
	if err != nil {
		return Evidence{}, fmt.Errorf("sshpop: sign with %s: %w", s.keyPath, err)
	}
	payload, err := json.Marshal(sshpop.Payload{Certificate: cert.Marshal(), Signature: sshpop.MarshalSignature(sig)})
	if err != nil {
		return Evidence{}, fmt.Errorf("encode sshpop attestation: %w", err)
	}
	return Evidence{Type: SSHPoPType, Payload: payload}, nil
}

// readPEMChain reads the DER of every CERTIFICATE block in path.
func readPEMChain(path string) ([][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read x509pop certificate: %w", err)
	}
	var chain [][]byte
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		if block.Type == "CERTIFICATE" {
			chain = append(chain, block.Bytes)
		}
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("x509pop certificate %s holds no PEM certificate", path)
	}
	return chain, nil
}
