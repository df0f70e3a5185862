package attestor_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/signetid/signet/agent/attestor"
	"github.com/signetid/signet/internal/selector"
)

func fixed(sels ...string) attestor.Attestor {
	return attestor.Func(func(context.Context, int32) ([]selector.Selector, error) {
		var out []selector.Selector
		for _, s := range sels {
			p, err := selector.Parse(s)
			if err != nil {
				return nil, err
			}
			out = append(out, p)
		}
		return out, nil
	})
}

func TestMultiUnion(t *testing.T) {
	m := attestor.Multi(fixed("unix:uid:1", "unix:gid:2"), fixed("k8s:ns:a", "unix:uid:1"))
	sels, err := m.Attest(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"k8s:ns:a", "unix:gid:2", "unix:uid:1"}
	if got := selector.Strings(sels); !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestMultiFailsIfAnyFails(t *testing.T) {
	boom := errors.New("boom")
	m := attestor.Multi(fixed("unix:uid:1"), attestor.Func(func(context.Context, int32) ([]selector.Selector, error) {
		return nil, boom
	}))
	if sels, err := m.Attest(t.Context(), 1); !errors.Is(err, boom) || sels != nil {
		t.Fatalf("got %v, %v; want nil, boom", sels, err)
	}
}
