package hclsafe

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/hcl/token"
)

// UnknownKeys turns the keys the decoder did not use (a struct's
// `hcl:",unusedKeyPositions"` field, keyed as the caller wants them named)
// into one error listing each with its line, or nil when there are none:
// a typo must never fall back to a default silently.
func UnknownKeys(unused map[string][]token.Pos) error {
	if len(unused) == 0 {
		return nil
	}
	keys := make([]string, 0, len(unused))
	for k, pos := range unused {
		if len(pos) > 0 {
			k = fmt.Sprintf("%s (line %d)", k, pos[0].Line)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return fmt.Errorf("unknown key(s): %s", strings.Join(keys, ", "))
}
