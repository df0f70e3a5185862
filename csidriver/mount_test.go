package csidriver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
)

func unpublishReq(target string) *csi.NodeUnpublishVolumeRequest {
	return &csi.NodeUnpublishVolumeRequest{VolumeId: "csi-0123456789abcdef", TargetPath: target}
}

func TestPublishShowsSocketDirReadOnly(t *testing.T) {
	requireRoot(t)
	e := newTestEnv(t)
	ctx := context.Background()
	if err := os.WriteFile(filepath.Join(e.socketDir, "marker"), []byte("agent"), 0o644); err != nil {
		t.Fatal(err)
	}
	target := e.target("pod-a")
	if err := e.d.Publish(ctx, goodPublish(target)); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(target, "marker"))
	if err != nil || string(got) != "agent" {
		t.Fatalf("socket dir contents not visible at target: %q, %v", got, err)
	}
	err = os.WriteFile(filepath.Join(target, "written-by-pod"), nil, 0o644)
	if !errors.Is(err, unix.EROFS) {
		t.Fatalf("writing through the target: got %v, want EROFS", err)
	}
	if n := mountsAt(t, target); n != 1 {
		t.Fatalf("%d mounts at target, want 1", n)
	}
}

func TestPublishTwiceMountsOnce(t *testing.T) {
	requireRoot(t)
	e := newTestEnv(t)
	ctx := context.Background()
	target := e.target("pod-a")
	for i := range 3 {
		if err := e.d.Publish(ctx, goodPublish(target)); err != nil {
			t.Fatalf("publish #%d: %v", i+1, err)
		}
	}
	if n := mountsAt(t, target); n != 1 {
		t.Fatalf("%d mounts at target after 3 publishes, want 1", n)
	}
}

func TestUnpublishTwice(t *testing.T) {
	requireRoot(t)
	e := newTestEnv(t)
	ctx := context.Background()
	target := e.target("pod-a")
	if err := e.d.Publish(ctx, goodPublish(target)); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := e.d.Unpublish(ctx, unpublishReq(target)); err != nil {
			t.Fatalf("unpublish #%d: %v", i+1, err)
		}
	}
	if n := mountsAt(t, target); n != 0 {
		t.Fatalf("%d mounts left at target", n)
	}
	if exists(t, target) {
		t.Fatal("target dir not removed")
	}
	if !exists(t, e.socketDir) {
		t.Fatal("socket dir removed")
	}
}

func TestUnpublishAfterMountVanished(t *testing.T) {
	requireRoot(t)
	e := newTestEnv(t)
	ctx := context.Background()
	target := e.target("pod-a")
	if err := e.d.Publish(ctx, goodPublish(target)); err != nil {
		t.Fatal(err)
	}
	if err := unix.Unmount(target, 0); err != nil { // as a node reboot would
		t.Fatal(err)
	}
	if err := e.d.Unpublish(ctx, unpublishReq(target)); err != nil {
		t.Fatalf("unpublish of an unmounted target: %v", err)
	}
	if exists(t, target) {
		t.Fatal("target dir not removed")
	}
}

func TestUnpublishPeelsStackedMounts(t *testing.T) {
	requireRoot(t)
	e := newTestEnv(t)
	target := e.target("pod-a")
	if err := os.MkdirAll(target, 0o750); err != nil {
		t.Fatal(err)
	}
	for range 3 { // what older drivers left after kubelet restarts
		if err := unix.Mount(e.socketDir, target, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.d.Unpublish(context.Background(), unpublishReq(target)); err != nil {
		t.Fatal(err)
	}
	if n := mountsAt(t, target); n != 0 {
		t.Fatalf("%d mounts left", n)
	}
	if exists(t, target) {
		t.Fatal("target dir not removed")
	}
}

func TestPublishOverDifferentMountRefused(t *testing.T) {
	requireRoot(t)
	e := newTestEnv(t)
	target := e.target("pod-a")
	other := t.TempDir()
	if err := os.MkdirAll(target, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(other, target, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	wantCode(t, e.d.Publish(context.Background(), goodPublish(target)), codes.FailedPrecondition)
	if n := mountsAt(t, target); n != 1 {
		t.Fatalf("%d mounts at target, want the 1 that was there", n)
	}
}

func TestPublishRefusedLeavesNothingMounted(t *testing.T) {
	requireRoot(t)
	e := newTestEnv(t)
	// A symlink planted under the pods root pointing outside it.
	outside := t.TempDir()
	if err := os.MkdirAll(filepath.Join(e.podsRoot, "evil"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(e.podsRoot, "evil", "volumes")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(e.podsRoot, "linkpod"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(e.podsRoot, "linkpod", "mount")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		req    *csi.NodePublishVolumeRequest
		wantOK bool
	}{
		{"traversal", goodPublish(e.podsRoot + "/../../etc"), false},
		{"kubelet-style traversal", goodPublish("/var/lib/kubelet/pods/../../etc"), false},
		{"relative", goodPublish("pods/uid/mount"), false},
		{"outside root", goodPublish(filepath.Join(outside, "mount")), false},
		{"symlinked parent escapes root", goodPublish(filepath.Join(e.podsRoot, "evil", "volumes", "mount")), false},
		{"symlink target", goodPublish(filepath.Join(e.podsRoot, "linkpod", "mount")), false},
		{"not ephemeral", func() *csi.NodePublishVolumeRequest {
			r := goodPublish(e.target("pv"))
			delete(r.VolumeContext, ctxEphemeral)
			return r
		}(), false},
		{"read-write", func() *csi.NodePublishVolumeRequest {
			r := goodPublish(e.target("rw"))
			r.Readonly = false
			return r
		}(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := totalMounts(t)
			err := e.d.Publish(context.Background(), tc.req)
			wantCode(t, err, codes.InvalidArgument)
			if after := totalMounts(t); after != before {
				t.Fatalf("mount count changed from %d to %d", before, after)
			}
			if n := mountsUnder(t, e.podsRoot); n != 0 {
				t.Fatalf("%d mounts under the pods root", n)
			}
			if n := mountsUnder(t, outside); n != 0 {
				t.Fatalf("%d mounts outside the root", n)
			}
		})
	}
	if exists(t, e.target("pv")) || exists(t, e.target("rw")) {
		t.Fatal("a refused publish created its target dir")
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Fatalf("a refused publish created %v outside the root", entries)
	}
}

func TestUnpublishOutsideRootRefused(t *testing.T) {
	requireRoot(t)
	e := newTestEnv(t)
	outside := t.TempDir()
	if err := unix.Mount(e.socketDir, outside, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmountUnder(t, outside) })
	wantCode(t, e.d.Unpublish(context.Background(), unpublishReq(outside)), codes.InvalidArgument)
	wantCode(t, e.d.Unpublish(context.Background(), unpublishReq(e.podsRoot+"/../"+filepath.Base(outside))), codes.InvalidArgument)
	if n := mountsAt(t, outside); n != 1 {
		t.Fatalf("mount outside the root was touched: %d mounts", n)
	}
}

func TestPublishMissingSocketDir(t *testing.T) {
	requireRoot(t)
	e := newTestEnv(t)
	if err := os.Remove(e.socketDir); err != nil {
		t.Fatal(err)
	}
	target := e.target("pod-a")
	wantCode(t, e.d.Publish(context.Background(), goodPublish(target)), codes.FailedPrecondition)
	if n := mountsUnder(t, e.podsRoot); n != 0 {
		t.Fatalf("%d mounts under the pods root", n)
	}
}

// TestRecreatedSocketVisibleThroughTarget is what keeps pods working across
// agent restarts: the agent removes and re-creates its socket in the dir,
// and the pod's bind mount of the dir shows the new one.
func TestRecreatedSocketVisibleThroughTarget(t *testing.T) {
	requireRoot(t)
	e := newTestEnv(t)
	sock := filepath.Join(e.socketDir, "agent.sock")
	first := serveUnix(t, sock, "first agent")
	target := e.target("pod-a")
	if err := e.d.Publish(context.Background(), goodPublish(target)); err != nil {
		t.Fatal(err)
	}
	inPod := filepath.Join(target, "agent.sock")
	if got := readUnix(t, inPod); got != "first agent" {
		t.Fatalf("through target: %q", got)
	}
	first.Close() // removes the socket file, as an agent exit does
	if exists(t, inPod) {
		t.Fatal("old socket still visible through target")
	}
	serveUnix(t, sock, "second agent")
	if got := readUnix(t, inPod); got != "second agent" {
		t.Fatalf("through target after restart: %q", got)
	}
}

func TestPublishMissingPodsRoot(t *testing.T) {
	requireRoot(t)
	e := newTestEnv(t)
	if err := os.Remove(e.podsRoot); err != nil {
		t.Fatal(err)
	}
	wantCode(t, e.d.Publish(context.Background(), goodPublish(e.target("pod-a"))), codes.FailedPrecondition)
	if exists(t, e.podsRoot) {
		t.Fatal("publish created the missing pods root")
	}
}
