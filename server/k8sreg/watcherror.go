package k8sreg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/cache"
)

// watchErrorHandler reports why an informer cannot list or watch resource,
// with what the operator can do about it. Without it the product that
// reads resource only waits for its cache, and the cause is buried in
// client-go's own log.
// The informer retries by itself (with backoff), so a fix applied later (the
// CRD installed, RBAC granted) takes effect without a restart.
func watchErrorHandler(logger *slog.Logger, resource string) cache.WatchErrorHandlerWithContext {
	return func(_ context.Context, _ *cache.Reflector, err error) {
		if errors.Is(err, io.EOF) {
			return // the API server closed a watch, as it does routinely
		}
		msg, level := watchErrorHint(resource, err)
		logger.Log(context.Background(), level, msg, "resource", resource, "error", err)
	}
}

// crdKind is the kind of resource if it is one of the custom resources the
// controller watches, else "".
func crdKind(resource string) string {
	switch resource {
	case Resource:
		return Kind
	case StaticEntryResource:
		return StaticEntryKind
	case FederatedTrustDomainResource:
		return FederatedTrustDomainKind
	}
	return ""
}

// crdMissing reports whether err says that the API server serves no such
// resource because its CRD is not installed.
func crdMissing(resource string, err error) bool {
	return apierrors.IsNotFound(err) && crdKind(resource) != ""
}

// watchErrorHint names the likely cause of an informer's failure to list or
// watch resource, and the level to log it at.
func watchErrorHint(resource string, err error) (string, slog.Level) {
	switch {
	case apierrors.IsResourceExpired(err) || apierrors.IsGone(err) || errors.Is(err, io.ErrUnexpectedEOF):
		return "kubernetes controller: watch restarted", slog.LevelDebug
	case crdMissing(resource, err):
		kind := crdKind(resource)
		return fmt.Sprintf("kubernetes controller: the API server has no %s.%s/%s: install the %s CRD (deploy/base/crd-%s.yaml, or the Helm chart's crds/); its resources are reconciled once it exists, and nothing else waits for it",
			resource, Group, Version, kind, strings.ToLower(kind)), slog.LevelError
	case apierrors.IsForbidden(err):
		return fmt.Sprintf("kubernetes controller: the server's Kubernetes identity may not list and watch %s: grant list and watch on them (deploy/base/server-rbac.yaml)", resource), slog.LevelError
	case apierrors.IsUnauthorized(err):
		return "kubernetes controller: the API server does not accept the server's credentials (kubeconfig or service account token)", slog.LevelError
	default:
		return fmt.Sprintf("kubernetes controller: cannot list or watch %s; retrying", resource), slog.LevelWarn
	}
}
