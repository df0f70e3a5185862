package attestor

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/signetid/signet/internal/selector"
)

// Attestor describes the process pid as selectors.
type Attestor interface {
	Attest(ctx context.Context, pid int32) ([]selector.Selector, error)
}

// Func adapts a function to Attestor.
type Func func(ctx context.Context, pid int32) ([]selector.Selector, error)

// Attest calls f.
func (f Func) Attest(ctx context.Context, pid int32) ([]selector.Selector, error) {
	return f(ctx, pid)
}

// Multi returns an Attestor that runs every attestor concurrently and
// returns the union of their selectors, sorted and without duplicates. If any
// attestor fails the whole attestation fails: a partial view of a workload
// could match an entry meant for something else.
func Multi(attestors ...Attestor) Attestor {
	return multi(attestors)
}

type multi []Attestor

func (m multi) Attest(ctx context.Context, pid int32) ([]selector.Selector, error) {
	results := make([][]selector.Selector, len(m))
	errs := make([]error, len(m))
	var wg sync.WaitGroup
	for i, a := range m {
		wg.Go(func() {
			results[i], errs[i] = a.Attest(ctx, pid)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("attest pid %d: %w", pid, err)
	}
	var all []selector.Selector
	for _, r := range results {
		all = append(all, r...)
	}
	return selector.Sort(all), nil
}
