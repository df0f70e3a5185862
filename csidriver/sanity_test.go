package csidriver

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"
)

// TestSanity runs the kubernetes-csi sanity suite (Identity and Node parts)
// against an in-process driver. Signet has no controller, so:
//   - the "[Controller Server]" and GroupController suites are skipped;
//   - "NodeUnpublishVolume should remove target path" is skipped: it needs
//     CreateVolume and publishes read-write, which Signet refuses by design
//     (read-only ephemeral volumes only); TestUnpublishTwice and
//     TestUnpublishAfterMountVanished cover "unpublish removes the target"
//     with real mounts;
//   - the full lifecycle specs skip themselves without a controller.
//
// The Identity specs, NodeGetCapabilities, NodeGetInfo and the
// NodePublishVolume/NodeUnpublishVolume argument checks run for real.
func TestSanity(t *testing.T) {
	e := newTestEnv(t)
	conn := serveDriver(t, e.d)

	cfg := sanity.NewTestConfig()
	cfg.Address = conn.Target()
	// Target and staging dirs live under the pods root, as kubelet's do,
	// so requests pass the path check and fail only where the spec wants.
	cfg.TargetPath = filepath.Join(e.podsRoot, "sanity-pod", "volumes", "kubernetes.io~csi", "target")
	cfg.StagingPath = filepath.Join(e.podsRoot, "sanity-pod", "volumes", "kubernetes.io~csi", "staging")
	mkdir := func(p string) (string, error) { return p, os.MkdirAll(p, 0o750) }
	cfg.CreateTargetDir, cfg.CreateStagingDir = mkdir, mkdir
	cfg.RemoveTargetPath, cfg.RemoveStagingPath = os.RemoveAll, os.RemoveAll
	// Kubelet's volume context for an inline volume; used by any spec that
	// builds volumes from TestVolumeParameters.
	cfg.TestVolumeParameters = map[string]string{ctxEphemeral: "true"}
	cfg.IDGen = &sanity.DefaultIDGenerator{}

	sc := sanity.GinkgoTest(&cfg)
	defer sc.Finalize()
	gomega.RegisterFailHandler(ginkgo.Fail)
	suite, reporter := ginkgo.GinkgoConfiguration()
	suite.SkipStrings = []string{`Controller Server`, `GroupController`, `NodeUnpublishVolume should remove target path`}
	reporter.Succinct, reporter.NoColor = true, true
	if !ginkgo.RunSpecs(t, "Signet CSI sanity", suite, reporter) {
		t.Fatal("sanity suite failed")
	}
}
