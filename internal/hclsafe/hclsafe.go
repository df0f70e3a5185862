// Package hclsafe runs HCL parsing and decoding so that malformed input is an
// error, not a crash: hashicorp/hcl v1 panics on some inputs (an invalid
// escape such as "\700" in a string), and configuration files are user input.
package hclsafe

import "fmt"

// Do runs fn, turning a panic inside it into an error.
func Do(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed HCL: %v", r)
		}
	}()
	return fn()
}
