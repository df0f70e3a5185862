package attestor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/signetid/signet/internal/peercred"
	"github.com/signetid/signet/internal/selector"
)

// UnixOptions configure the Unix attestor. The zero value is usable.
type UnixOptions struct {
	// ProcRoot is where procfs is mounted. Default "/proc".
	ProcRoot string
	// MaxHashSize is the largest executable hashed for unix:sha256; a larger
	// one gets no sha256 selector (so entries requiring one never match).
	// Default 1 GiB.
	MaxHashSize int64
	// HashCacheSize bounds how many executable digests are remembered.
	// Default 1024.
	HashCacheSize int
	// Logger receives debug messages. Default slog.Default().
	Logger *slog.Logger
}

// Unix attests a process from /proc: unix:uid, unix:gid (real ids),
// unix:user, unix:group (names, when known), unix:supplementary_gid (each),
// unix:path (the executable) and unix:sha256 (its digest).
type Unix struct {
	hostRoot    string // where the host's "/" is, for unix:path
	procRoot    string
	maxHashSize int64
	log         *slog.Logger
	hashes      *hashCache
}

// NewUnix returns a Unix attestor.
func NewUnix(opts UnixOptions) *Unix {
	if opts.ProcRoot == "" {
		opts.ProcRoot = "/proc"
	}
	if opts.MaxHashSize <= 0 {
		opts.MaxHashSize = 1 << 30
	}
	if opts.HashCacheSize <= 0 {
		opts.HashCacheSize = 1024
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	// The host's root, as PID 1 sees it: the agent may run in a container
	// of its own (hostPID), where "/" is its image. Where PID 1's root is
	// out of reach, the agent's own root stands in.
	hostRoot := filepath.Join(opts.ProcRoot, "1", "root")
	if _, err := os.Stat(hostRoot + "/"); err != nil {
		hostRoot = "/"
	}
	return &Unix{
		procRoot:    opts.ProcRoot,
		hostRoot:    hostRoot,
		maxHashSize: opts.MaxHashSize,
		log:         opts.Logger,
		hashes:      &hashCache{max: opts.HashCacheSize, m: map[fileKey]string{}},
	}
}

// Attest implements Attestor. It fails when the process exits or its PID is
// reused while it is being observed: the start time read before and after
// must agree, so selectors of two different processes are never mixed.
func (u *Unix) Attest(ctx context.Context, pid int32) ([]selector.Selector, error) {
	sels, err := observeProcess(u.procRoot, pid, func(dir string) ([]selector.Selector, error) {
		return u.observe(ctx, dir)
	})
	if err != nil {
		return nil, fmt.Errorf("unix attestor: %w", err)
	}
	return selector.Sort(sels), nil
}

func (u *Unix) observe(ctx context.Context, dir string) ([]selector.Selector, error) {
	st, err := readStatus(dir)
	if err != nil {
		return nil, err
	}
	sels := []selector.Selector{
		{Type: "unix", Value: "uid:" + st.uid},
		{Type: "unix", Value: "gid:" + st.gid},
	}
	if usr, err := user.LookupId(st.uid); err == nil && usr.Username != "" {
		sels = append(sels, selector.Selector{Type: "unix", Value: "user:" + usr.Username})
	}
	if grp, err := user.LookupGroupId(st.gid); err == nil && grp.Name != "" {
		sels = append(sels, selector.Selector{Type: "unix", Value: "group:" + grp.Name})
	}
	for _, g := range st.groups {
		sels = append(sels, selector.Selector{Type: "unix", Value: "supplementary_gid:" + g})
	}

	exe := filepath.Join(dir, "exe")
	path, err := os.Readlink(exe)
	if err != nil {
		return nil, fmt.Errorf("read executable path: %w", err)
	}
	// Opening /proc/PID/exe opens the very file the process runs, even if
	// its path was since replaced or lives in another mount namespace.
	f, err := os.Open(exe)
	if err != nil {
		return nil, fmt.Errorf("open executable: %w", err)
	}
	defer f.Close()
	key, err := statKey(f)
	if err != nil {
		return nil, err
	}
	if samePath(u.hostRoot, path, key) {
		sels = append(sels, selector.Selector{Type: "unix", Value: "path:" + path})
	} else {
		u.log.DebugContext(ctx, "executable is not the file at its path on this host (another mount namespace, or replaced); no unix:path selector", "path", path)
	}

	sum, err := u.hash(ctx, f, key)
	if err != nil {
		return nil, err
	}
	if sum != "" {
		sels = append(sels, selector.Selector{Type: "unix", Value: "sha256:" + sum})
	}
	return sels, nil
}

// samePath reports whether the host, seen through hostRoot, has the
// process's executable at path. The link text is the path as the process's
// mount namespace sees it: any user can unshare a namespace and run their own
// binary at /usr/sbin/nginx, so the path counts only when it leads to the
// same file on the host.
func samePath(hostRoot, path string, exe fileKey) bool {
	fi, err := os.Stat(filepath.Join(hostRoot, path))
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && uint64(st.Dev) == exe.dev && st.Ino == exe.ino
}

// hash returns the hex SHA-256 of the executable f, whose stat is key, or ""
// when it is too large to hash.
func (u *Unix) hash(ctx context.Context, f *os.File, key fileKey) (string, error) {
	if sum, ok := u.hashes.get(key); ok {
		return sum, nil
	}
	if key.size > u.maxHashSize {
		u.log.DebugContext(ctx, "executable too large to hash; no unix:sha256 selector", "path", f.Name(), "size", key.size, "max", u.maxHashSize)
		return "", nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash executable: %w", err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	// Cache only if the file did not change while it was read.
	if after, err := statKey(f); err == nil && after == key {
		u.hashes.put(key, sum)
	}
	return sum, nil
}

// fileKey identifies one version of one file: a changed executable has a new
// ctime (or inode, if replaced), so it is hashed again. The owner of a file
// can set its mtime back after rewriting it; only the kernel sets ctime.
type fileKey struct {
	dev, ino uint64
	ctimeNs  int64
	mtimeNs  int64
	size     int64
}

func statKey(f *os.File) (fileKey, error) {
	fi, err := f.Stat()
	if err != nil {
		return fileKey{}, fmt.Errorf("stat executable: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileKey{}, fmt.Errorf("stat executable: no device and inode")
	}
	return fileKey{dev: uint64(st.Dev), ino: st.Ino, ctimeNs: st.Ctim.Nano(), mtimeNs: fi.ModTime().UnixNano(), size: fi.Size()}, nil
}

type hashCache struct {
	mu  sync.Mutex
	max int
	m   map[fileKey]string
}

func (c *hashCache) get(k fileKey) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[k]
	return v, ok
}

func (c *hashCache) put(k fileKey, v string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		// Evict an arbitrary entry: executables are few, and a miss only
		// costs one re-hash.
		for old := range c.m {
			delete(c.m, old)
			break
		}
	}
	c.m[k] = v
}

// observeProcess calls observe with process pid's directory under procRoot
// and fails when the process exits or its PID is reused meanwhile: the start
// time read before and after must agree, so what observe read belongs to one
// process, the one that held the PID when the attestation began.
func observeProcess[T any](procRoot string, pid int32, observe func(dir string) (T, error)) (T, error) {
	var none T
	if pid <= 0 {
		return none, fmt.Errorf("invalid pid %d (is the caller in another PID namespace?)", pid)
	}
	dir := filepath.Join(procRoot, strconv.Itoa(int(pid)))
	before, err := startTime(dir)
	if err != nil {
		return none, fmt.Errorf("pid %d: %w", pid, err)
	}
	v, err := observe(dir)
	if err != nil {
		return none, fmt.Errorf("pid %d: %w", pid, err)
	}
	after, err := startTime(dir)
	if err != nil {
		return none, fmt.Errorf("pid %d exited during attestation: %w", pid, err)
	}
	if after != before {
		return none, fmt.Errorf("pid %d was reused during attestation (start time %d, then %d)", pid, before, after)
	}
	return v, nil
}

// startTime returns field 22 of /proc/PID/stat: the process start time in
// clock ticks since boot, which differs between two processes that share a
// PID.
func startTime(dir string) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return 0, fmt.Errorf("read stat: %w", err)
	}
	return peercred.ParseStartTime(b)
}

type status struct {
	uid, gid string
	groups   []string
}

// readStatus reads the real uid and gid and the supplementary groups from
// /proc/PID/status.
func readStatus(dir string) (status, error) {
	b, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return status{}, fmt.Errorf("read status: %w", err)
	}
	var st status
	for line := range strings.Lines(string(b)) {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		fields := strings.Fields(val)
		switch key {
		case "Uid":
			if len(fields) > 0 {
				st.uid = fields[0]
			}
		case "Gid":
			if len(fields) > 0 {
				st.gid = fields[0]
			}
		case "Groups":
			st.groups = fields
		}
	}
	if st.uid == "" || st.gid == "" {
		return status{}, fmt.Errorf("parse status: no Uid or Gid line")
	}
	return st, nil
}
