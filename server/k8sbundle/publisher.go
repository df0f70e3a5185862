package k8sbundle

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// DefaultKey is the ConfigMap key the bundle is written under.
const DefaultKey = "bundle.pem"

// Config names the ConfigMap to keep current.
type Config struct {
	Client    kubernetes.Interface
	Namespace string
	Name      string
	// Key is the data key; default DefaultKey.
	Key    string
	Logger *slog.Logger
}

// Publisher writes the bundle into the ConfigMap.
type Publisher struct {
	cfg Config
}

// New checks cfg and returns a Publisher.
func New(cfg Config) (*Publisher, error) {
	if cfg.Client == nil {
		return nil, errors.New("k8s bundle publisher: no Kubernetes client")
	}
	if cfg.Namespace == "" || cfg.Name == "" {
		return nil, errors.New("k8s bundle publisher: namespace and config_map are required")
	}
	if cfg.Key == "" {
		cfg.Key = DefaultKey
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Publisher{cfg: cfg}, nil
}

// Publish makes the ConfigMap hold bundle under the key, creating it if
// needed and leaving its other keys alone. A concurrent writer (another
// server of the same trust domain) makes it read and try again.
func (p *Publisher) Publish(ctx context.Context, bundle []byte) error {
	cms := p.cfg.Client.CoreV1().ConfigMaps(p.cfg.Namespace)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cm, err := cms.Get(ctx, p.cfg.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = cms.Create(ctx, &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Namespace: p.cfg.Namespace, Name: p.cfg.Name},
				Data:       map[string]string{p.cfg.Key: string(bundle)},
			}, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				// Created meanwhile: retry as an update.
				return apierrors.NewConflict(corev1.Resource("configmaps"), p.cfg.Name, err)
			}
			return err
		}
		if err != nil {
			return err
		}
		if cm.Data[p.cfg.Key] == string(bundle) {
			return nil
		}
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[p.cfg.Key] = string(bundle)
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		return err
	})
}

// Run publishes the bundle current() returns, again whenever the channel it
// returns with it closes, until ctx ends. Failures are retried with backoff;
// they never stop the server.
func (p *Publisher) Run(ctx context.Context, current func() ([]byte, <-chan struct{})) error {
	var published []byte
	for {
		bundle, changed := current()
		if len(bundle) > 0 && !bytes.Equal(bundle, published) {
			err := backoff.RetryNotify(func() error {
				return p.Publish(ctx, bundle)
			}, backoff.WithContext(backoff.NewExponentialBackOff(
				backoff.WithInitialInterval(time.Second),
				backoff.WithMaxInterval(time.Minute),
				backoff.WithMaxElapsedTime(0),
			), ctx), func(err error, next time.Duration) {
				p.cfg.Logger.Warn("publish the trust bundle to the ConfigMap failed; retrying", "configmap", p.cfg.Namespace+"/"+p.cfg.Name, "error", err, "retry_in", next.Round(time.Millisecond))
			})
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				return fmt.Errorf("publish trust bundle to ConfigMap %s/%s: %w", p.cfg.Namespace, p.cfg.Name, err)
			}
			published = bundle
			p.cfg.Logger.Info("trust bundle published", "configmap", p.cfg.Namespace+"/"+p.cfg.Name, "key", p.cfg.Key)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}
