package delegatedidentity

import (
	"context"
	"errors"

	"golang.org/x/sys/unix"
)

// workloadProcess is a pidfd on the process a delegate named by PID. The
// agent attests the process through it and ends the delegate's stream when
// the process exits, so a PID reused later never gets the SVIDs of the
// process that had it.
type workloadProcess struct{ fd int }

func openProcess(pid int32) (*workloadProcess, error) {
	fd, err := unix.PidfdOpen(int(pid), 0)
	if err != nil {
		return nil, err
	}
	return &workloadProcess{fd: fd}, nil
}

// alive asks the kernel whether the process still runs (EPERM: another
// user's process, alive).
func (p *workloadProcess) alive() bool {
	err := unix.PidfdSendSignal(p.fd, 0, nil, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

func (p *workloadProcess) close() { unix.Close(p.fd) }

// watchExit returns a channel closed when the process exits; it takes the
// descriptor over and closes it once the process has exited or ctx ends.
func (p *workloadProcess) watchExit(ctx context.Context) <-chan struct{} {
	exited := make(chan struct{})
	go func() {
		defer p.close()
		// A pidfd polls readable when its process exits; the timeout lets
		// the loop notice the stream's end.
		fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
		for ctx.Err() == nil {
			n, err := unix.Poll(fds, 250)
			if errors.Is(err, unix.EINTR) || err == nil && n == 0 {
				continue
			}
			close(exited)
			return
		}
	}()
	return exited
}
