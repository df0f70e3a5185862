package csidriver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// maxUnmounts bounds how many stacked mounts one unpublish peels off (a
// node may carry stacks left by older drivers).
const maxUnmounts = 64

// errNotDir marks a target that exists as something other than a directory
// (a symlink could redirect the mount).
var errNotDir = errors.New("exists and is not a directory")

// nodeServer is the CSI Node service: a thin adapter over Driver.Publish
// and Driver.Unpublish.
type nodeServer struct {
	csi.UnimplementedNodeServer
	d *Driver
}

func (s *nodeServer) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	if err := s.d.Publish(ctx, req); err != nil {
		return nil, err
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

func (s *nodeServer) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	if err := s.d.Unpublish(ctx, req); err != nil {
		return nil, err
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// NodeGetCapabilities lists none: no staging, stats or expansion.
func (s *nodeServer) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	return &csi.NodeGetCapabilitiesResponse{}, nil
}

func (s *nodeServer) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: s.d.cfg.NodeID}, nil
}

// Publish bind-mounts the agent's socket directory read-only on the
// request's target path. It is idempotent: a target already showing the
// socket dir read-only is left as is, never mounted twice. Errors carry gRPC
// codes; a refused or failed publish leaves nothing mounted.
func (d *Driver) Publish(ctx context.Context, req *csi.NodePublishVolumeRequest) error {
	target := req.GetTargetPath()
	vc := req.GetVolumeContext()
	log := d.log.With("volume_id", req.GetVolumeId(), "target", target,
		"pod_uid", vc[ctxPodUID], "pod", vc[ctxPodNamespace]+"/"+vc[ctxPodName],
		"service_account", vc[ctxServiceAccount])
	if err := ValidatePublishRequest(req, d.cfg.PodsRoot); err != nil {
		log.Warn("publish refused", "err", err)
		return status.Error(codes.InvalidArgument, err.Error())
	}
	unlock := d.locks.lock(target)
	defer unlock()

	if _, err := resolveUnder(target, d.cfg.PodsRoot); err != nil {
		log.Warn("publish refused", "err", err)
		return status.Error(resolveCode(err), err.Error())
	}
	src := d.cfg.SocketDir
	if fi, err := os.Stat(src); err != nil || !fi.IsDir() {
		err = fmt.Errorf("workload API socket dir %s is missing (is the signet agent running on this node?): %v", src, err)
		log.Warn("publish failed", "err", err)
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	created, err := ensureTargetDir(target)
	if errors.Is(err, errNotDir) {
		log.Warn("publish refused", "err", err)
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if err != nil {
		log.Warn("publish failed", "err", err)
		return status.Error(codes.Internal, err.Error())
	}
	mounted, err := d.mnt.isMountPoint(target)
	if err != nil {
		d.removeIfCreated(target, created)
		return status.Errorf(codes.Internal, "check mounts at %s: %v", target, err)
	}
	if mounted {
		same, err := sameDirReadOnly(src, target)
		if err != nil {
			return status.Errorf(codes.Internal, "inspect existing mount at %s: %v", target, err)
		}
		if !same {
			err := fmt.Errorf("target %s already holds a different mount; unpublish it first", target)
			log.Warn("publish failed", "err", err)
			return status.Error(codes.FailedPrecondition, err.Error())
		}
		log.Info("volume already published")
		return nil
	}
	if err := d.mnt.bindReadOnly(src, target); err != nil {
		d.removeIfCreated(target, created)
		log.Error("publish failed", "err", err)
		return status.Error(codes.Internal, err.Error())
	}
	log.Info("volume published", "source", src)
	return nil
}

// Unpublish unmounts the target and removes the directory. A target that is
// gone, or present but not mounted (after a reboot, or unmounted behind our
// back), is success.
func (d *Driver) Unpublish(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) error {
	target := req.GetTargetPath()
	log := d.log.With("volume_id", req.GetVolumeId(), "target", target,
		"pod_uid", podUIDFromTarget(target, d.cfg.PodsRoot))
	if err := ValidateUnpublishRequest(req, d.cfg.PodsRoot); err != nil {
		log.Warn("unpublish refused", "err", err)
		return status.Error(codes.InvalidArgument, err.Error())
	}
	unlock := d.locks.lock(target)
	defer unlock()

	fi, err := os.Lstat(target)
	if errors.Is(err, fs.ErrNotExist) {
		log.Info("volume already unpublished: target is gone")
		return nil
	}
	if err != nil && !isCorrupted(err) {
		return status.Errorf(codes.Internal, "stat target %s: %v", target, err)
	}
	if _, err := resolveUnder(target, d.cfg.PodsRoot); err != nil {
		log.Warn("unpublish refused", "err", err)
		return status.Error(resolveCode(err), err.Error())
	}
	// Never follow a symlink at the target into an unmount elsewhere.
	if fi == nil || fi.Mode().Type() != fs.ModeSymlink {
		n, err := d.unmountAll(target)
		if err != nil {
			log.Error("unpublish failed", "err", err)
			return status.Error(codes.Internal, err.Error())
		}
		if n == 0 {
			log.Info("target was not mounted")
		}
	}
	// Remove, not RemoveAll: if the unmount silently did not happen, the
	// agent's socket dir must not be emptied through the target.
	if err := os.Remove(target); err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.Error("unpublish failed", "err", err)
		return status.Errorf(codes.Internal, "remove target %s: %v", target, err)
	}
	log.Info("volume unpublished")
	return nil
}

// unmountAll unmounts target until it is no longer a mount point and
// returns how many mounts it removed.
func (d *Driver) unmountAll(target string) (int, error) {
	for n := 0; n < maxUnmounts; n++ {
		mounted, err := d.mnt.isMountPoint(target)
		if errors.Is(err, fs.ErrNotExist) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("check mounts at %s: %w", target, err)
		}
		if !mounted {
			return n, nil
		}
		if err := d.mnt.unmount(target); err != nil {
			return n, err
		}
	}
	return maxUnmounts, fmt.Errorf("%s is still a mount point after %d unmounts", target, maxUnmounts)
}

// ensureTargetDir creates target (and missing parents) and reports whether
// the target itself was created; an existing target must be a real
// directory, not a symlink.
func ensureTargetDir(target string) (created bool, err error) {
	fi, err := os.Lstat(target)
	switch {
	case err == nil && fi.IsDir():
		return false, nil
	case err == nil:
		return false, fmt.Errorf("target %s: %w (it is %s)", target, errNotDir, fi.Mode().Type())
	case isCorrupted(err):
		return false, nil // a stale mount; the mount check below handles it
	case !errors.Is(err, fs.ErrNotExist):
		return false, fmt.Errorf("stat target %s: %w", target, err)
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return false, fmt.Errorf("create target dir: %w", err)
	}
	return true, nil
}

func (d *Driver) removeIfCreated(target string, created bool) {
	if created {
		if err := os.Remove(target); err != nil {
			d.log.Warn("could not remove target dir after failed publish", "target", target, "err", err)
		}
	}
}

// resolveCode maps a resolveUnder error: a bad target is the caller's
// problem, a missing pods root is the node's.
func resolveCode(err error) codes.Code {
	if errors.Is(err, errPodsRoot) {
		return codes.FailedPrecondition
	}
	return codes.InvalidArgument
}
