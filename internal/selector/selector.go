package selector

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Selector is one observed property: Type names the attestor ("unix",
// "k8s", "systemd", "join_token"), Value what it saw ("uid:1000"). Value may hold colons.
type Selector struct {
	Type  string
	Value string
}

// String returns the canonical `type:value` form.
func (s Selector) String() string { return s.Type + ":" + s.Value }

// maxLength bounds one selector; real values (paths, image refs) are far shorter.
const maxLength = 1024

var typeRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// knownKeys lists, for the attestor types Signet ships, the keys their values
// start with. A selector of a known type with an unknown key is refused, so a
// typo like `unix:usr:postgres` is caught instead of silently never matching.
var knownKeys = map[string]map[string]func(string) error{
	"unix": {
		"uid":               isUint,
		"gid":               isUint,
		"supplementary_gid": isUint,
		"user":              nonEmpty,
		"group":             nonEmpty,
		"path":              isAbsPath,
		"sha256":            isSHA256,
	},
	"k8s": {
		"ns":                   nonEmpty,
		"sa":                   nonEmpty,
		"pod-label":            isLabel,
		"pod-name":             nonEmpty,
		"pod-uid":              nonEmpty,
		"node-name":            nonEmpty,
		"container-name":       nonEmpty,
		"container-image":      nonEmpty,
		"pod-owner":            isKindName,
		"pod-owner-uid":        isKindName,
		"pod-image":            nonEmpty,
		"pod-image-count":      isUint,
		"pod-init-image":       nonEmpty,
		"pod-init-image-count": isUint,
	},
	// The systemd unit a process runs in (SPIRE's systemd:id), read from
	// its cgroup. SPIRE's systemd:fragment_path needs systemd's D-Bus API,
	// which Signet does not use, so it is no key here.
	"systemd": {
		"id": isSystemdUnitID,
	},
	// Node selectors of agents attested with Kubernetes projected service
	// account tokens (SPIRE's names); node-alias entries match them.
	"k8s_psat": {
		"cluster":          nonEmpty,
		"agent_ns":         nonEmpty,
		"agent_sa":         nonEmpty,
		"agent_pod_name":   nonEmpty,
		"agent_pod_uid":    nonEmpty,
		"agent_node_name":  nonEmpty,
		"agent_node_uid":   nonEmpty,
		"agent_node_ip":    nonEmpty,
		"agent_node_label": isLabel,
		"agent_pod_label":  isLabel,
	},
	// Node selectors of agents attested with a machine certificate
	// (SPIRE's x509pop names).
	"x509pop": {
		"subject":      prefixed("cn:"),
		"ca":           isFingerprint,
		"serialnumber": isHex,
		"san":          isKeyValue,
	},
	// Node selectors of agents attested with an OpenSSH host certificate
	// (Signet's; SPIRE's sshpop has none): each principal, and the CA's
	// key fingerprint as `ssh-keygen -l` prints it.
	"sshpop": {
		"principal": nonEmpty,
		"ca":        isSSHFingerprint,
	},
	// Node selectors of agents attested with an EC2 instance identity
	// document (SPIRE's aws_iid names), from the signed document alone.
	"aws_iid": {
		"account_id": nonEmpty,
		"az":         nonEmpty,
		"image":      prefixed("id:"),
		"instance":   prefixed("id:"),
		"region":     nonEmpty,
	},
	// Node selectors of agents attested with a GCE instance identity
	// token (SPIRE's gcp_iit names), from the token's claims alone.
	"gcp_iit": {
		"project-id":    nonEmpty,
		"zone":          nonEmpty,
		"instance-name": nonEmpty,
	},
}

// apiOnlyKeys are selector keys SPIRE's attestors read from a cloud API
// Signet does not call: no Signet agent has them, so entries naming them
// are refused, saying so.
var apiOnlyKeys = map[string]map[string]string{
	"aws_iid": {
		"tag":     "instance tags",
		"sg":      "security groups",
		"iamrole": "the instance profile's IAM roles",
	},
	"gcp_iit": {
		"tag":      "instance tags",
		"sa":       "the instance's service accounts",
		"label":    "instance labels",
		"metadata": "instance metadata",
	},
}

// freeForm are the selector types with no fixed keys: the join token's node
// selector (join_token:<token-id>), which node-alias entries match.
var freeForm = map[string]bool{"join_token": true}

func knownTypes() []string {
	out := []string{}
	for t := range knownKeys {
		out = append(out, t)
	}
	for t := range freeForm {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// Parse parses and validates one `type:value` selector.
func Parse(s string) (Selector, error) {
	typ, value, ok := strings.Cut(s, ":")
	if !ok {
		return Selector{}, fmt.Errorf("invalid selector %q: want type:value, e.g. unix:uid:1000", clip(s))
	}
	sel := Selector{Type: typ, Value: value}
	if err := sel.Validate(); err != nil {
		return Selector{}, err
	}
	return sel, nil
}

// ParseAll parses a list of selectors and refuses an empty list.
func ParseAll(in []string) ([]Selector, error) {
	if len(in) == 0 {
		return nil, fmt.Errorf("at least one selector is required")
	}
	out := make([]Selector, 0, len(in))
	for _, s := range in {
		sel, err := Parse(s)
		if err != nil {
			return nil, err
		}
		out = append(out, sel)
	}
	return Sort(out), nil
}

// Validate checks a selector that arrived already split (from the API).
func (s Selector) Validate() error {
	full := s.String()
	switch {
	case s.Type == "":
		return fmt.Errorf("invalid selector %q: type is empty", clip(full))
	case !typeRE.MatchString(s.Type):
		return fmt.Errorf("invalid selector %q: type %q must be lower-case letters, digits and '_'", clip(full), clip(s.Type))
	case s.Value == "":
		return fmt.Errorf("invalid selector %q: value is empty", clip(full))
	case len(full) > maxLength:
		return fmt.Errorf("invalid selector %q: %d bytes; the limit is %d", clip(full), len(full), maxLength)
	case strings.ContainsFunc(s.Value, isControl):
		return fmt.Errorf("invalid selector %q: value holds a control character", clip(full))
	}
	if freeForm[s.Type] {
		return nil
	}
	keys, known := knownKeys[s.Type]
	if !known {
		// A selector no attestor produces can never match: refuse it, and
		// catch the common slip of leaving the type out (uid:1000).
		for _, t := range []string{"unix", "k8s", "systemd"} {
			if _, ok := knownKeys[t][s.Type]; ok {
				return fmt.Errorf("invalid selector %q: unknown type %q; did you mean %s:%s?", clip(full), s.Type, t, clip(full))
			}
		}
		return fmt.Errorf("invalid selector %q: unknown type %q (known: %s)", clip(full), clip(s.Type), strings.Join(knownTypes(), ", "))
	}
	key, arg, ok := strings.Cut(s.Value, ":")
	check, keyKnown := keys[key]
	if !keyKnown {
		for k := range keys {
			// Older SPIRE wrote systemd:Id: point at the spelling that matches.
			if strings.EqualFold(k, key) {
				return fmt.Errorf("invalid selector %q: unknown %s key %q; did you mean %s:%s:%s?", clip(full), s.Type, clip(key), s.Type, k, clip(arg))
			}
		}
		if what, ok := apiOnlyKeys[s.Type][key]; ok {
			return fmt.Errorf("invalid selector %q: %s:%s is not provided: SPIRE reads %s from the cloud provider's API, which Signet does not call; use %s", clip(full), s.Type, key, what, strings.Join(prefixedKeys(s.Type, keys), ", "))
		}
		if s.Type == "systemd" && strings.EqualFold(strings.ReplaceAll(key, "_", ""), "fragmentpath") {
			return fmt.Errorf("invalid selector %q: systemd:fragment_path is not provided (it needs systemd's D-Bus API); use systemd:id:<unit>", clip(full))
		}
		return fmt.Errorf("invalid selector %q: unknown %s key %q (known: %s)", clip(full), s.Type, clip(key), strings.Join(sortedKeys(keys), ", "))
	}
	if !ok {
		return fmt.Errorf("invalid selector %q: want %s:%s:<value>", clip(full), s.Type, key)
	}
	if err := check(arg); err != nil {
		return fmt.Errorf("invalid selector %q: %w", clip(full), err)
	}
	return nil
}

// Sort returns the selectors sorted and without duplicates, in place.
func Sort(sels []Selector) []Selector {
	slices.SortFunc(sels, Compare)
	return slices.Compact(sels)
}

// Compare orders selectors by type, then value.
func Compare(a, b Selector) int {
	if c := strings.Compare(a.Type, b.Type); c != 0 {
		return c
	}
	return strings.Compare(a.Value, b.Value)
}

// Strings returns the canonical forms of sels.
func Strings(sels []Selector) []string {
	out := make([]string, len(sels))
	for i, s := range sels {
		out[i] = s.String()
	}
	return out
}

// Set is a workload's (or node's) selectors, indexed for subset checks.
type Set map[Selector]struct{}

// NewSet indexes sels.
func NewSet(sels ...Selector) Set {
	set := make(Set, len(sels))
	for _, s := range sels {
		set[s] = struct{}{}
	}
	return set
}

// Includes reports whether every selector of sub is in the set; an empty sub
// matches nothing (an entry without selectors must never match everyone).
func (set Set) Includes(sub []Selector) bool {
	if len(sub) == 0 {
		return false
	}
	for _, s := range sub {
		if _, ok := set[s]; !ok {
			return false
		}
	}
	return true
}

// isUint accepts a uid or gid as the kernel reports it: decimal, no sign and
// no leading zeros ("01000" would never match the attested "1000").
func isUint(v string) error {
	if _, err := strconv.ParseUint(v, 10, 32); err != nil || (len(v) > 1 && v[0] == '0') {
		return fmt.Errorf("%q is not a numeric id (decimal, no leading zeros)", v)
	}
	return nil
}

func nonEmpty(v string) error {
	if v == "" {
		return fmt.Errorf("value is empty")
	}
	return nil
}

func isAbsPath(v string) error {
	if !strings.HasPrefix(v, "/") {
		return fmt.Errorf("path %q is not absolute", v)
	}
	return nil
}

var sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)

func isSHA256(v string) error {
	if !sha256RE.MatchString(v) {
		return fmt.Errorf("%q is not a lower-case hex SHA-256 digest", v)
	}
	return nil
}

func isLabel(v string) error {
	k, _, ok := strings.Cut(v, ":")
	if !ok || k == "" {
		return fmt.Errorf("a label selector wants <label-key>:<value>, e.g. k8s:pod-label:app:web")
	}
	return nil
}

// prefixed wants the sub-key p before a non-empty value
// (x509pop:subject:cn:<common name>).
func prefixed(p string) func(string) error {
	return func(v string) error {
		if rest, ok := strings.CutPrefix(v, p); !ok || rest == "" {
			return fmt.Errorf("want %s<value>", p)
		}
		return nil
	}
}

var fingerprintRE = regexp.MustCompile(`^fingerprint:[0-9a-f]{40}$`)

func isFingerprint(v string) error {
	if !fingerprintRE.MatchString(v) {
		return fmt.Errorf("want fingerprint:<lower-case hex SHA-1 of the CA certificate>")
	}
	return nil
}

var sshFingerprintRE = regexp.MustCompile(`^fingerprint:SHA256:[A-Za-z0-9+/]{43}$`)

func isSSHFingerprint(v string) error {
	if !sshFingerprintRE.MatchString(v) {
		return fmt.Errorf("want fingerprint:SHA256:<the CA key's fingerprint, as ssh-keygen -lf ca.pub prints it>")
	}
	return nil
}

var hexRE = regexp.MustCompile(`^([0-9a-f]{2})+$`)

func isHex(v string) error {
	if !hexRE.MatchString(v) {
		return fmt.Errorf("%q is not lower-case hex with an even number of digits", v)
	}
	return nil
}

func isKeyValue(v string) error {
	k, val, ok := strings.Cut(v, ":")
	if !ok || k == "" || val == "" {
		return fmt.Errorf("want <key>:<value>")
	}
	return nil
}

func isKindName(v string) error {
	k, n, ok := strings.Cut(v, ":")
	if !ok || k == "" || n == "" {
		return fmt.Errorf("an owner selector wants <kind>:<name or uid>, e.g. k8s:pod-owner:ReplicaSet:web-7d4b9")
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func sortedKeys(m map[string]func(string) error) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// prefixedKeys names a type's keys as type:key, sorted.
func prefixedKeys(typ string, keys map[string]func(string) error) []string {
	out := sortedKeys(keys)
	for i, k := range out {
		out[i] = typ + ":" + k
	}
	return out
}

func clip(s string) string {
	const max = 96
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
