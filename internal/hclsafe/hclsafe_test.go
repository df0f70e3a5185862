package hclsafe_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/hcl"

	"github.com/signetid/signet/internal/hclsafe"
)

func TestDo(t *testing.T) {
	var out struct {
		Listen string `hcl:"listen"`
	}
	// The library panics on this escape; Do makes it an error.
	err := hclsafe.Do(func() error { return hcl.Decode(&out, `listen = "\700"`) })
	if err == nil || !strings.Contains(err.Error(), "malformed HCL") {
		t.Fatalf("Do = %v, want a malformed-HCL error", err)
	}
	if err := hclsafe.Do(func() error { return hcl.Decode(&out, `listen = "127.0.0.1:1"`) }); err != nil || out.Listen != "127.0.0.1:1" {
		t.Fatalf("valid input: %v, %+v", err, out)
	}
	want := errors.New("plain error")
	if err := hclsafe.Do(func() error { return want }); err != want {
		t.Fatalf("Do changed fn's error: %v", err)
	}
}
