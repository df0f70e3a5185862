package k8sreg

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Defaults of LeaderElection: client-go's and controller-runtime's.
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// LeaderElection makes the servers that run a controller for one cluster
// elect one through a Lease, so that one of them watches and reconciles
// and the others stand by. It saves the API server and the store the
// others' work; correctness never depends on it: entries are deterministic
// and every write is idempotent, so the short overlap at a handover is
// harmless.
type LeaderElection struct {
	// Namespace and Name locate the coordination.k8s.io Lease.
	Namespace, Name string
	// Client reaches the API server for the Lease: a client of its own,
	// so that the controller's requests never hold up a renewal in the
	// client's rate limiter. Default: the controller's.
	Client kubernetes.Interface
	// Identity names this server in the Lease; default hostname_uuid.
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod are client-go's; zero
	// takes the Default ones.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

func (le *LeaderElection) check() error {
	for what, v := range map[string]string{"namespace": le.Namespace, "name": le.Name} {
		if errs := validation.IsDNS1123Subdomain(v); len(errs) > 0 {
			return fmt.Errorf("leader election lease %s %q: %s", what, v, strings.Join(errs, "; "))
		}
	}
	if le.Identity == "" {
		host, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("leader election identity: %w", err)
		}
		le.Identity = host + "_" + uuid.NewString()
	}
	le.LeaseDuration = or(le.LeaseDuration, DefaultLeaseDuration)
	le.RenewDeadline = or(le.RenewDeadline, DefaultRenewDeadline)
	le.RetryPeriod = or(le.RetryPeriod, DefaultRetryPeriod)
	if le.LeaseDuration <= le.RenewDeadline || le.RenewDeadline <= le.RetryPeriod {
		return fmt.Errorf("leader election: want lease duration (%v) > renew deadline (%v) > retry period (%v)",
			le.LeaseDuration, le.RenewDeadline, le.RetryPeriod)
	}
	return nil
}

func or(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// runElected campaigns for the Lease until ctx ends, running the
// controller while this server holds it. A lost Lease (the API server
// unreachable past the renew deadline) stops the controller; the server
// then campaigns again.
func (c *Controller) runElected(ctx context.Context) error {
	le := c.opts.LeaderElection
	log := c.opts.Logger.With("lease", le.Namespace+"/"+le.Name, "identity", le.Identity)
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: le.Namespace, Name: le.Name},
		Client:     le.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: le.Identity},
	}
	for {
		// client-go starts OnStartedLeading on a goroutine of its own,
		// which may begin after Run has returned; stopped and running
		// make sure no run outlives this round.
		var (
			mu      sync.Mutex
			stopped bool
			running sync.WaitGroup
			runErr  error
		)
		elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:          lock,
			Name:          le.Name,
			LeaseDuration: le.LeaseDuration,
			RenewDeadline: le.RenewDeadline,
			RetryPeriod:   le.RetryPeriod,
			// A server shutting down hands over at once, not after a
			// lease duration.
			ReleaseOnCancel: true,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(lctx context.Context) {
					mu.Lock()
					if stopped {
						mu.Unlock()
						return
					}
					running.Add(1)
					mu.Unlock()
					defer running.Done()
					log.Info("kubernetes controller: leading")
					c.leading.Store(true)
					defer c.leading.Store(false)
					runErr = c.run(lctx)
				},
				OnStoppedLeading: func() {},
				OnNewLeader: func(id string) {
					if id != le.Identity {
						log.Info("kubernetes controller: standing by", "leader", id)
					}
				},
			},
		})
		if err != nil {
			return fmt.Errorf("kubernetes controller: leader election: %w", err)
		}
		elector.Run(ctx)
		mu.Lock()
		stopped = true
		mu.Unlock()
		running.Wait()
		switch {
		case runErr != nil:
			return runErr
		case ctx.Err() != nil:
			return nil
		}
		log.Warn("kubernetes controller: lost the lease; standing by")
	}
}
