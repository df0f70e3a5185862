package csidriver

import (
	"context"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkPublishUnpublish is one NodePublishVolume + NodeUnpublishVolume
// through the plain functions (validation, mountinfo checks, bind + ro
// remount via mount-utils, unmount, target removal).
func BenchmarkPublishUnpublish(b *testing.B) {
	requireRoot(b)
	e := newTestEnv(b)
	ctx := context.Background()
	target := e.target("bench")
	pub, unpub := goodPublish(target), unpublishReq(target)
	b.ResetTimer()
	for range b.N {
		if err := e.d.Publish(ctx, pub); err != nil {
			b.Fatal(err)
		}
		if err := e.d.Unpublish(ctx, unpub); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBareBindMount is the floor: a bind mount and unmount syscall
// pair on the same dirs, no checks, no read-only remount.
func BenchmarkBareBindMount(b *testing.B) {
	requireRoot(b)
	e := newTestEnv(b)
	target := e.target("bench")
	if err := os.MkdirAll(target, 0o750); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if err := unix.Mount(e.socketDir, target, "", unix.MS_BIND, ""); err != nil {
			b.Fatal(err)
		}
		if err := unix.Unmount(target, 0); err != nil {
			b.Fatal(err)
		}
	}
}
