package hclsafe_test

import (
	"testing"

	"github.com/hashicorp/hcl/hcl/token"

	"github.com/signetid/signet/internal/hclsafe"
)

func TestUnknownKeys(t *testing.T) {
	if err := hclsafe.UnknownKeys(nil); err != nil {
		t.Fatalf("no unused keys: %v", err)
	}
	err := hclsafe.UnknownKeys(map[string][]token.Pos{"svid_tll": {{Line: 2}}, "a.b": nil})
	if err == nil || err.Error() != "unknown key(s): a.b, svid_tll (line 2)" {
		t.Fatalf("UnknownKeys = %v", err)
	}
}
