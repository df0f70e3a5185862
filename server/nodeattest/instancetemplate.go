package nodeattest

import (
	"bytes"
	"fmt"
	"reflect"
	"regexp"
	"strings"
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
		return fmt.Errorf("%s: agent_path_template: %w", attestor, templateError(err, a))
	}
	if err := tmpl.Execute(&rb, b); err != nil {
		return fmt.Errorf("%s: agent_path_template: %w", attestor, templateError(err, b))
	}
	if ra.String() == rb.String() {
		return fmt.Errorf("%s: agent_path_template %q does not use {{ .InstanceID }}: every instance would get the same agent ID, "+
			"and as %s is trusted on first use only the first instance could attest (evicting it for another cuts it off); include .InstanceID",
			attestor, clipText(text), attestor)
	}
	return nil
}

// unknownFieldRE matches text/template's error for a field the data lacks,
// which names a Go type the operator never sees.
var unknownFieldRE = regexp.MustCompile(`can't evaluate field (\w+) in type \S+`)

// templateError restates an agent_path_template execution error over data
// in the config's terms: an unknown field is named with the fields there
// are.
func templateError(err error, data any) error {
	m := unknownFieldRE.FindStringSubmatch(err.Error())
	if m == nil {
		return err
	}
	return fmt.Errorf("unknown field .%s; the fields are %s", m[1], strings.Join(templateFields(reflect.TypeOf(data)), ", "))
}

// templateFields lists the exported fields a template can use on values of
// type t, those of embedded structs included, as ".Name".
func templateFields(t reflect.Type) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var out []string
	for f := range t.Fields() {
		switch {
		case f.Anonymous && f.Type.Kind() == reflect.Struct:
			out = append(out, templateFields(f.Type)...)
		case f.IsExported():
			out = append(out, "."+f.Name)
		}
	}
	return out
}
