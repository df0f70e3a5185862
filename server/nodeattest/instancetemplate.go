package nodeattest

import (
	"bytes"
	"fmt"
	"text/template"
)

// requireInstanceID refuses an agent_path_template of a trust-on-first-use
// attestor (aws_iid, gcp_iit) whose rendering does not change with the
// instance ID: every instance would get the same agent ID, so only the
// first could attest, and evicting it to let another in would cut the
// first off. a and b are template data differing only in the instance ID.
func requireInstanceID(attestor, text string, tmpl *template.Template, a, b any) error {
	var ra, rb bytes.Buffer
	if err := tmpl.Execute(&ra, a); err != nil {
		return fmt.Errorf("%s: agent_path_template: %w", attestor, err)
	}
	if err := tmpl.Execute(&rb, b); err != nil {
		return fmt.Errorf("%s: agent_path_template: %w", attestor, err)
	}
	if ra.String() == rb.String() {
		return fmt.Errorf("%s: agent_path_template %q does not use {{ .InstanceID }}: every instance would get the same agent ID, "+
			"and as %s is trusted on first use only the first instance could attest (evicting it for another cuts it off); include .InstanceID",
			attestor, clipText(text), attestor)
	}
	return nil
}
