package csidriver

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
	mount "k8s.io/mount-utils"
)

// mounter wraps k8s.io/mount-utils with the few operations the driver needs.
type mounter struct {
	m mount.Interface
}

func newMounter() *mounter {
	// No systemd-run scope: the plugin runs in a container without systemd,
	// and a bind mount holds no FUSE daemon that a scope would protect.
	return &mounter{m: mount.NewWithoutSystemd("")}
}

// isMountPoint reports whether path is a mount point, consulting
// /proc/self/mountinfo when a stat cannot tell (bind mounts on one device).
func (mt *mounter) isMountPoint(path string) (bool, error) {
	ok, err := mt.m.IsMountPoint(path)
	if err != nil && mount.IsCorruptedMnt(err) {
		// A stale mount still needs unmounting.
		return true, nil
	}
	return ok, err
}

// bindReadOnly bind-mounts source on target, then remounts it read-only
// (mount-utils splits "bind,ro" into those two mount calls, since the kernel
// ignores MS_RDONLY on the first bind). If the remount fails the bind is
// undone, so a failure never leaves a writable mount behind.
func (mt *mounter) bindReadOnly(source, target string) error {
	if err := mt.m.Mount(source, target, "", []string{"bind", "ro"}); err != nil {
		if mounted, _ := mt.isMountPoint(target); mounted {
			_ = mt.m.Unmount(target)
		}
		return fmt.Errorf("bind-mount %s read-only on %s: %w", source, target, err)
	}
	return nil
}

func (mt *mounter) unmount(target string) error {
	if err := mt.m.Unmount(target); err != nil {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}

// sameDirReadOnly reports whether target shows the directory source
// (same device and inode, which a bind mount preserves) read-only.
func sameDirReadOnly(source, target string) (bool, error) {
	var s, t unix.Stat_t
	if err := unix.Stat(source, &s); err != nil {
		return false, fmt.Errorf("stat %s: %w", source, err)
	}
	if err := unix.Stat(target, &t); err != nil {
		return false, fmt.Errorf("stat %s: %w", target, err)
	}
	if s.Dev != t.Dev || s.Ino != t.Ino {
		return false, nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil {
		return false, fmt.Errorf("statfs %s: %w", target, err)
	}
	return st.Flags&unix.ST_RDONLY != 0, nil
}

// resolveUnder resolves symlinks in the deepest existing ancestor of target
// and checks the result stays inside root (itself resolved), so a symlink
// planted under the pods dir cannot redirect a mount or unmount elsewhere.
// It returns target with that ancestor replaced by its resolved form.
func resolveUnder(target, root string) (string, error) {
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return "", fmt.Errorf("%w: %w", errPodsRoot, err)
	}
	existing, rest := target, ""
	for {
		if _, err := os.Lstat(existing); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("stat %s: %w", existing, err)
		}
		parent := filepath.Dir(existing)
		if parent == existing {
			break
		}
		rest = filepath.Join(filepath.Base(existing), rest)
		existing = parent
	}
	// The target itself may be a symlink only if we would not follow it:
	// resolve its parent and keep the last element as is.
	if rest == "" {
		real, err := filepath.EvalSymlinks(filepath.Dir(existing))
		if err != nil {
			return "", fmt.Errorf("resolve %s: %w", filepath.Dir(existing), err)
		}
		existing, rest = real, filepath.Base(existing)
	} else {
		real, err := filepath.EvalSymlinks(existing)
		if err != nil {
			return "", fmt.Errorf("resolve %s: %w", existing, err)
		}
		existing = real
	}
	resolved := filepath.Join(existing, rest)
	if resolved == realRoot || !isUnder(resolved, realRoot) {
		return "", fmt.Errorf("target path %s resolves to %s, outside the kubelet pods root %s", target, resolved, realRoot)
	}
	return resolved, nil
}

// errPodsRoot marks a driver-side problem (the pods root is missing or
// unreadable), as opposed to a bad target path.
var errPodsRoot = errors.New("cannot resolve the kubelet pods root (check --kubelet-pods-root)")

func isUnder(p, root string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != "." && rel != ".." && !filepath.IsAbs(rel) && !startsWithDotDot(rel)
}

func startsWithDotDot(rel string) bool {
	return len(rel) >= 3 && rel[:3] == "../"
}

// keyedMutex serialises work per key (target path): kubelet may retry a
// publish while the first attempt is still mounting.
type keyedMutex struct {
	mu   sync.Mutex
	held map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.held == nil {
		k.held = map[string]*keyedEntry{}
	}
	e := k.held[key]
	if e == nil {
		e = &keyedEntry{}
		k.held[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.held, key)
		}
		k.mu.Unlock()
	}
}

// isCorrupted reports errors from stat-ing a mount whose backing is gone
// (ENOTCONN, ESTALE, ...): such a target still needs unmounting.
func isCorrupted(err error) bool { return mount.IsCorruptedMnt(err) }
