package peercred

import (
	"errors"
	"os"
	"testing"
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
