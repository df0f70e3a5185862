package peercred

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSameProcess(t *testing.T) {
	gone := errors.New("no such process")
	for _, tc := range []struct {
		name   string
		info   Info
		now    uint64
		nowErr error
		ok     bool
	}{
		{"same start time", Info{PID: 7, StartTime: 100}, 100, nil, true},
		{"pid reused", Info{PID: 7, StartTime: 100}, 250, nil, false},
		{"process gone", Info{PID: 7, StartTime: 100}, 0, gone, false},
		{"unknown at accept", Info{PID: 7, StartTimeErr: gone}, 100, nil, false},
		{"unknown at accept, even if equal", Info{PID: 7, StartTimeErr: gone}, 0, nil, false},
	} {
		err := sameProcess(tc.info, tc.now, tc.nowErr)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestSameProcessOfThisProcess(t *testing.T) {
	st, err := ProcStartTime(int32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	if err := (Info{PID: int32(os.Getpid()), StartTime: st}).SameProcess(); err != nil {
		t.Errorf("SameProcess of this process: %v", err)
	}
	if err := (Info{PID: int32(os.Getpid()), StartTime: st + 1}).SameProcess(); err == nil {
		t.Error("SameProcess with another start time: no error")
	}
}

func TestParseStartTime(t *testing.T) {
	// A command name with spaces and parentheses; field 22 is 4242.
	stat := []byte("12 (a) b) (c) S 1 12 12 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 4242 1000 10 18446744073709551615")
	if v, err := ParseStartTime(stat); err != nil || v != 4242 {
		t.Errorf("ParseStartTime = %d, %v; want 4242", v, err)
	}
	if _, err := ParseStartTime([]byte("12 (a) S 1")); err == nil {
		t.Error("short stat: no error")
	}
}

// Only a kernel without SO_PEERPIDFD falls back to the start time; a peer
// the kernel reports gone, or any other failure, is refused.
func TestPeerPidfd(t *testing.T) {
	for _, tc := range []struct {
		name     string
		fd       int
		err      error
		wantFD   bool
		fallback bool // no pidfd, no error: the start time check remains
	}{
		{"pidfd", 9, nil, true, false},
		{"kernel before 6.5", -1, unix.ENOPROTOOPT, false, true},
		{"peer reaped, 6.5 to 6.14", -1, unix.EINVAL, false, false},
		{"peer reaped, 6.15", -1, unix.ESRCH, false, false},
		{"out of descriptors", -1, unix.EMFILE, false, false},
		{"no peer pid", -1, unix.ENODATA, false, false},
		{"seccomp", -1, unix.EPERM, false, false},
		{"wrapped ENOPROTOOPT", -1, fmt.Errorf("getsockopt: %w", unix.ENOPROTOOPT), false, true},
		{"negative descriptor without error", -1, nil, false, false},
	} {
		p, err := peerPidfd(tc.fd, tc.err)
		if got := p != nil; got != tc.wantFD {
			t.Errorf("%s: pidfd %v, want %v", tc.name, got, tc.wantFD)
		}
		if p != nil && p.fd != tc.fd {
			t.Errorf("%s: fd %d, want %d", tc.name, p.fd, tc.fd)
		}
		if fallback := p == nil && err == nil; fallback != tc.fallback {
			t.Errorf("%s: start time fallback %v, want %v (err %v)", tc.name, fallback, tc.fallback, err)
		}
		if tc.err != nil && err != nil && !errors.Is(err, tc.err) {
			t.Errorf("%s: err %v does not wrap %v", tc.name, err, tc.err)
		}
	}
}

// A peer the kernel reported gone at accept is refused even when a process
// with its PID and start time lives now: that is the race the pidfd closes.
func TestSameProcessRefusesWhenPidfdSaidGone(t *testing.T) {
	pid := int32(os.Getpid())
	st, err := ProcStartTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	_, gone := peerPidfd(-1, unix.EINVAL)
	if err := (Info{PID: pid, StartTime: st, pidfdErr: gone}).SameProcess(); err == nil {
		t.Error("SameProcess accepted a peer whose pidfd the kernel refused as reaped")
	}
}
