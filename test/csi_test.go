package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestCSIEndToEnd runs `signet dev` and `signet csi` as real processes,
// publishes a volume through a real CSI client, fetches an SVID through the
// bind-mounted socket, and checks the same mounted path keeps working after
// the agent and then the driver are killed and restarted.
func TestCSIEndToEnd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the CSI driver makes real bind mounts (CI runs as root)")
	}
	const spiffeID = "spiffe://example.org/csi-test"
	d := startDev(t)
	d.createEntry(t, "--parent-id", d.AgentID, "--spiffe-id", spiffeID, "--selector", "unix:uid:0")
	socketDir := filepath.Dir(d.Socket)

	// Short paths: the socket is dialled at <target>/agent.sock, and unix
	// socket paths must fit in 108 bytes.
	base, err := os.MkdirTemp("", "csie2e")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	podsRoot := filepath.Join(base, "pods")
	if err := os.MkdirAll(podsRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(podsRoot, "pod1", "volumes", "kubernetes.io~csi", "spiffe", "mount")
	// Never leave a mount behind, whatever happens (runs before RemoveAll).
	t.Cleanup(func() { _ = unix.Unmount(target, unix.MNT_DETACH) })
	endpoint := "unix://" + filepath.Join(base, "plugin", "csi.sock")

	csiArgs := []string{"csi", "--endpoint", endpoint, "--workload-api-socket-dir", socketDir,
		"--node-id", "e2e-node", "--kubelet-pods-root", podsRoot}
	driver := startSignet(t, nil, csiArgs...)
	driver.waitLine(t, "CSI driver serving", 30*time.Second)

	node := csiClient(t, endpoint)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pub := &csi.NodePublishVolumeRequest{
		VolumeId:   "csi-e2e-volume",
		TargetPath: target,
		VolumeCapability: &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY},
		},
		Readonly: true,
		VolumeContext: map[string]string{
			"csi.storage.k8s.io/ephemeral":     "true",
			"csi.storage.k8s.io/pod.uid":       "pod1",
			"csi.storage.k8s.io/pod.name":      "e2e",
			"csi.storage.k8s.io/pod.namespace": "default",
		},
	}
	if _, err := node.NodePublishVolume(ctx, pub, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("NodePublishVolume: %v", err)
	}
	addr := "unix://" + filepath.Join(target, "agent.sock")
	fetchThrough(t, ctx, addr, spiffeID)

	t.Log("killing and restarting signet dev with the same data dir")
	d.proc.Kill()
	dev2 := startSignet(t, nil, "dev", "--data-dir", d.Dir, "--socket", d.Socket, "--admin-socket", d.AdminSocket)
	dev2.waitLine(t, "SPIFFE_ENDPOINT_SOCKET=", 60*time.Second)
	fetchThrough(t, ctx, addr, spiffeID)

	t.Log("killing and restarting signet csi: mounts must survive, the stale endpoint must not block it")
	driver.Kill()
	fetchThrough(t, ctx, addr, spiffeID)
	driver2 := startSignet(t, nil, csiArgs...)
	driver2.waitLine(t, "CSI driver serving", 30*time.Second)
	node = csiClient(t, endpoint)
	if _, err := node.NodePublishVolume(ctx, pub, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("NodePublishVolume again after driver restart: %v", err)
	}
	for i := range 2 {
		if _, err := node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: pub.VolumeId, TargetPath: target}); err != nil {
			t.Fatalf("NodeUnpublishVolume #%d: %v", i+1, err)
		}
	}
	if _, err := os.Lstat(target); !os.IsNotExist(err) {
		t.Fatalf("target still there after unpublish: %v", err)
	}
	if _, err := os.Stat(d.Socket); err != nil {
		t.Fatalf("agent socket gone after unpublish: %v", err)
	}
}

func csiClient(t *testing.T, endpoint string) csi.NodeClient {
	t.Helper()
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return csi.NewNodeClient(conn)
}

// fetchThrough fetches the X509-SVIDs at addr with go-spiffe, retrying
// while the agent starts or the entry propagates, and checks that wantID is
// among them (`signet dev` also registers the caller under its own ID).
func fetchThrough(t *testing.T, ctx context.Context, addr, wantID string) {
	t.Helper()
	var lastErr error
	for ctx.Err() == nil {
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var svids []*x509svid.SVID
		svids, lastErr = workloadapi.FetchX509SVIDs(fctx, workloadapi.WithAddr(addr))
		cancel()
		if lastErr == nil {
			var ids []string
			for _, s := range svids {
				if s.ID.String() == wantID {
					return
				}
				ids = append(ids, s.ID.String())
			}
			lastErr = fmt.Errorf("got SVIDs %v, none is %s", ids, wantID)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no SVID for %s through %s: %v", wantID, addr, lastErr)
}
