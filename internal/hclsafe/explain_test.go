package hclsafe_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/hcl"

	"github.com/signetid/signet/internal/hclsafe"
)

func TestExplain(t *testing.T) {
	var out struct {
		Block struct {
			IDs []string `hcl:"ids"`
		} `hcl:"block"`
	}
	data := []byte("block {\n  ids = \"123\"\n}\n")
	err := hclsafe.Explain(data, hcl.Decode(&out, string(data)))
	if err == nil || err.Error() != `line 2: ids wants a list, e.g. ids = ["..."]` {
		t.Fatalf("Explain = %v, want the key, its line and the fix", err)
	}
	if err := hclsafe.Explain(data, nil); err != nil {
		t.Fatalf("Explain(nil) = %v", err)
	}
	other := errors.New("At 1:1: something else")
	if err := hclsafe.Explain(data, other); err != other {
		t.Fatalf("Explain changed another error: %v", err)
	}
	// A position past the file keeps the decoder's error.
	if err := hclsafe.Explain([]byte("x"), errors.New("At 9:1: unknown slice type: *ast.LiteralType")); !strings.HasPrefix(err.Error(), "At 9:1") {
		t.Fatalf("Explain = %v", err)
	}
}
