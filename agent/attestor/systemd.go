package attestor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/signetid/signet/internal/selector"
)

// SystemdOptions configure the systemd attestor. The zero value is usable.
type SystemdOptions struct {
	// ProcRoot is where procfs is mounted. Default "/proc".
	ProcRoot string
	// CgroupFS is where the cgroup hierarchies are mounted; their kinds
	// tell which line of /proc/PID/cgroup is systemd's. Default
	// "/sys/fs/cgroup".
	CgroupFS string
	// Logger receives debug messages. Default slog.Default().
	Logger *slog.Logger
}

// Systemd attests the systemd unit a process runs in, systemd:id:<unit>
// (SPIRE's selector), without asking systemd: it reads the unit from the
// process's cgroup in systemd's hierarchy as systemd's own sd_pid_get_unit
// does. The first path component that is not a slice names the unit, so
// nothing a unit creates below its own cgroup (a service with Delegate=yes,
// a user's manager user@UID.service) changes which unit it is in. A process
// in no unit gets no selectors.
//
// SPIRE's systemd:fragment_path (the unit file) needs systemd's D-Bus API
// and is not provided.
type Systemd struct {
	procRoot string
	legacy   bool   // systemd's hierarchy is the v1 name=systemd one
	root     string // the host's systemd's cgroup, which paths are relative to
	log      *slog.Logger
}

// NewSystemd returns a systemd attestor for the cgroup layout mounted at
// opts.CgroupFS; it fails when there is no systemd hierarchy to read.
func NewSystemd(opts SystemdOptions) (*Systemd, error) {
	if opts.ProcRoot == "" {
		opts.ProcRoot = "/proc"
	}
	if opts.CgroupFS == "" {
		opts.CgroupFS = "/sys/fs/cgroup"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	layout, err := cgroupLayout(opts.CgroupFS)
	if err != nil {
		return nil, fmt.Errorf("systemd attestor: %w", err)
	}
	s := &Systemd{procRoot: opts.ProcRoot, legacy: layout == "legacy", log: opts.Logger}
	// In a cgroup namespace of its own, the agent reads its callers' paths
	// relative to its own cgroup: units outside it read as "/../x.service"
	// and units below it as top-level ones.
	self, errSelf := os.Readlink(filepath.Join(opts.ProcRoot, "self", "ns", "cgroup"))
	host, errInit := os.Readlink(filepath.Join(opts.ProcRoot, "1", "ns", "cgroup"))
	if errSelf == nil && errInit == nil && self != host {
		return nil, fmt.Errorf("systemd attestor: the agent runs in a cgroup namespace of its own (%s, PID 1's is %s), where units cannot be read; run it in the host's (systemd ProtectControlGroups= off, or a pod without a private cgroup namespace)", self, host)
	}
	// PID 1 is the host's systemd (or whatever init the host has): a
	// systemd in a container without a cgroup namespace sits below the
	// host's units, and its units' paths are read relative to it
	// (cg_shift_path, which fails too when it cannot read this).
	pid1, err := os.ReadFile(filepath.Join(opts.ProcRoot, "1", "cgroup"))
	if err != nil {
		return nil, fmt.Errorf("systemd attestor: read PID 1's cgroup, which unit paths are relative to: %w", err)
	}
	s.root = managerRoot(pid1, s.legacy)
	s.log.Debug("systemd attestor: reading units from cgroups", "layout", layout, "cgroup_fs", opts.CgroupFS, "manager_root", s.root)
	return s, nil
}

// Attest implements Attestor. It fails only when the process is gone or
// its PID was reused during the attestation; a cgroup that names no unit
// gives no selectors.
func (s *Systemd) Attest(ctx context.Context, pid int32) ([]selector.Selector, error) {
	data, err := observeProcess(s.procRoot, pid, func(dir string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, "cgroup"))
		if err != nil {
			return nil, fmt.Errorf("read cgroup: %w", err)
		}
		return b, nil
	})
	if err != nil {
		return nil, fmt.Errorf("systemd attestor: %w", err)
	}
	unit := systemdUnit(data, s.legacy, s.root)
	if unit == "" {
		s.log.DebugContext(ctx, "systemd attestor: the process is in no unit; no systemd selectors", "pid", pid)
		return nil, nil
	}
	return []selector.Selector{{Type: "systemd", Value: "id:" + unit}}, nil
}

// cgroupLayout tells how the cgroup hierarchies at dir are laid out, as
// systemd judges it (cg_unified_cached): "unified" (cgroup2 at dir),
// "hybrid" (a tmpfs with cgroup2 at dir/unified, or systemd v232's at
// dir/systemd) or "legacy" (a tmpfs with the v1 name=systemd hierarchy at
// dir/systemd). On hybrid hosts systemd tracks units in the cgroup2
// hierarchy; its name=systemd tree is a copy kept for older tools.
func cgroupLayout(dir string) (string, error) {
	fsType := func(path string) (int64, error) {
		var st unix.Statfs_t
		if err := unix.Statfs(path, &st); err != nil {
			return 0, &fs.PathError{Op: "statfs", Path: path, Err: err}
		}
		return int64(st.Type), nil
	}
	t, err := fsType(dir)
	switch {
	case err != nil:
		return "", err
	case t == unix.CGROUP2_SUPER_MAGIC:
		return "unified", nil
	case t != unix.TMPFS_MAGIC:
		return "", fmt.Errorf("%s is neither cgroup2 nor a tmpfs holding cgroup hierarchies (filesystem type %#x)", dir, t)
	}
	if t, err := fsType(filepath.Join(dir, "unified")); err == nil && t == unix.CGROUP2_SUPER_MAGIC {
		return "hybrid", nil
	}
	t, err = fsType(filepath.Join(dir, "systemd"))
	switch {
	case errors.Is(err, unix.ENOENT):
		return "", fmt.Errorf("%s has no systemd hierarchy (neither unified/ nor systemd/)", dir)
	case err != nil:
		return "", err
	case t == unix.CGROUP2_SUPER_MAGIC:
		return "hybrid", nil
	}
	return "legacy", nil
}

// systemdPath returns the process's cgroup in systemd's hierarchy from its
// /proc/PID/cgroup: the v2 line ("0::"), or the name=systemd line on a
// legacy host. ok is false when there is none.
func systemdPath(data []byte, legacy bool) (path string, ok bool) {
	for line, err := range cgroupLines(data) {
		if err != nil {
			continue
		}
		if legacy && slices.Contains(strings.Split(line.controllers, ","), "name=systemd") || !legacy && line.hierarchy == "0" {
			// On the v2 hierarchy, a process whose cgroup was removed
			// reads " (deleted)" (systemd strips it too).
			return strings.TrimSuffix(line.path, " (deleted)"), true
		}
	}
	return "", false
}

// managerRoot returns the cgroup the host's systemd manages, from PID 1's
// /proc/PID/cgroup (cg_get_root_path): PID 1's cgroup without its own unit,
// "" for the top.
func managerRoot(pid1 []byte, legacy bool) string {
	path, ok := systemdPath(pid1, legacy)
	if !ok {
		return ""
	}
	// init.scope; the older system.slice and system.
	for _, own := range []string{"/init.scope", "/system.slice", "/system"} {
		if root, ok := strings.CutSuffix(path, own); ok {
			return root
		}
	}
	return path
}

// systemdUnit returns the unit that a /proc/PID/cgroup file puts the
// process in, or "" when it names none (sd_pid_get_unit: cg_pid_get_unit).
// root is the cgroup systemd manages; paths below it are read relative to
// it.
func systemdUnit(data []byte, legacy bool, root string) string {
	path, ok := systemdPath(data, legacy)
	if !ok {
		return ""
	}
	// cg_shift_path: a prefix of whole components.
	if root = strings.TrimSuffix(root, "/"); root != "" {
		if path == root {
			path = "/"
		} else if rest, ok := strings.CutPrefix(path, root+"/"); ok {
			path = "/" + rest
		}
	}
	return unitOfPath(path)
}

// unitOfPath reads a unit from a cgroup path as systemd does
// (cg_path_get_unit): slices are skipped, and the next component must be a
// unit, else the path names none. Below that unit, anything goes: it is the
// unit's own (delegated) tree.
func unitOfPath(path string) string {
	for seg := range strings.SplitSeq(path, "/") {
		if seg == "" {
			continue
		}
		// cg_escape prefixes "_" to names that could clash with the
		// kernel's files (cpu.service -> _cpu.service).
		name := strings.TrimPrefix(seg, "_")
		valid := selector.CheckSystemdUnitName(name) == nil
		isSlice := strings.HasSuffix(name, ".slice")
		switch {
		case valid && isSlice && !strings.Contains(name, "@"):
			continue
		case valid && !isSlice:
			return name
		}
		return ""
	}
	return ""
}
