package helper

import (
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// reaper does what PID 1 must do: in a container whose entrypoint is
// `signet helper -- app`, processes the app orphans are reparented to the
// helper and stay zombies until it waits for them. It waits for any child
// (wait4(-1)), which would steal the status exec.Cmd.Wait waits for, so the
// commands the helper starts itself go through [reaper.start] and get their
// status from it.
type reaper struct {
	log  *slog.Logger
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	waiters map[int]chan unix.WaitStatus
}

// startReaper reaps children on every SIGCHLD until stop is called.
func startReaper(log *slog.Logger) (*reaper, func()) {
	r := &reaper{log: log, stop: make(chan struct{}), done: make(chan struct{}), waiters: map[int]chan unix.WaitStatus{}}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGCHLD)
	go func() {
		defer close(r.done)
		defer signal.Stop(sigs)
		for {
			// One SIGCHLD may stand for many exits: reap until none is left.
			r.reap()
			select {
			case <-r.stop:
				return
			case <-sigs:
			}
		}
	}()
	return r, func() { close(r.stop); <-r.done }
}

func (r *reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return // ECHILD: no children; 0: none has exited
		}
		if ch, ok := r.waiters[pid]; ok {
			delete(r.waiters, pid)
			ch <- ws
			continue
		}
		r.log.Debug("reaped orphaned process", "pid", pid, "status", waitStatusCode(ws))
	}
}

// start starts cmd; its wait status arrives on the returned channel.
func (r *reaper) start(cmd *exec.Cmd) (<-chan unix.WaitStatus, error) {
	// Holding mu across Start keeps reap from collecting the process before
	// its pid is registered.
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := make(chan unix.WaitStatus, 1)
	r.waiters[cmd.Process.Pid] = ch
	return ch, nil
}

// waitStatusCode is a shell's $?: the exit status, or 128+n when killed by
// signal n.
func waitStatusCode(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}
