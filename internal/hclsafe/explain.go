package hclsafe

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// hcl v1's decoder reports a string given where a list is wanted as
// "At L:C: unknown slice type: *ast.LiteralType", naming neither the key
// nor the fix.
var sliceTypeErr = regexp.MustCompile(`At (\d+):\d+: unknown slice type: \*ast\.LiteralType`)

// Explain rewrites the decoder errors of data that name no key into ones
// that name it and say what is wanted; other errors are returned as they
// are.
func Explain(data []byte, err error) error {
	if err == nil {
		return nil
	}
	m := sliceTypeErr.FindStringSubmatch(err.Error())
	if m == nil {
		return err
	}
	line, _ := strconv.Atoi(m[1])
	lines := strings.Split(string(data), "\n")
	if line < 1 || line > len(lines) {
		return err
	}
	key, _, found := strings.Cut(lines[line-1], "=")
	key = strings.Trim(strings.TrimSpace(key), `"`)
	if !found || key == "" {
		return err
	}
	return fmt.Errorf("line %d: %s wants a list, e.g. %s = [\"...\"]", line, key, key)
}
