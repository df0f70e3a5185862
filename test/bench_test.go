package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// rssMiB reads a process's resident set size.
func rssMiB(tb testing.TB, pid int) float64 {
	tb.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				tb.Fatal(err)
			}
			return float64(kb) / 1024
		}
	}
	tb.Fatal("no VmRSS")
	return 0
}

// BenchmarkAgentRSS reports the real `signet agent run` process's resident
// memory when idle (attested, one SVID) and with 1000 more SVIDs cached. One
// op is the whole scenario; ns/op means nothing here.
func BenchmarkAgentRSS(b *testing.B) {
	want := callerID(b)
	n := startNode(b)
	if _, err := n.server.cli(b, "server", "entry", "create", "--parent-id", nodeAgentID, "--spiffe-id", want.String(), "--selector", "unix:uid:0"); err != nil {
		b.Fatal(err)
	}
	waitForID(b, n, want)
	time.Sleep(2 * time.Second) // let start-up garbage be collected
	idle := rssMiB(b, n.agent.cmd.Process.Pid)

	type sel struct{ Type, Value string }
	type entry struct {
		SPIFFEID  string `json:"spiffe_id"`
		ParentID  string `json:"parent_id"`
		Selectors []sel  `json:"selectors"`
	}
	var doc struct {
		Entries []entry `json:"entries"`
	}
	for i := range 1000 {
		// uid 4242 matches no caller: the agent signs and caches them all.
		doc.Entries = append(doc.Entries, entry{fmt.Sprintf("spiffe://example.org/svc/%d", i), nodeAgentID, []sel{{"unix", "uid:4242"}}})
	}
	data, _ := json.Marshal(doc)
	file := filepath.Join(b.TempDir(), "entries.json")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		b.Fatal(err)
	}
	if _, err := n.server.cli(b, "server", "entry", "create", "--data", file); err != nil {
		b.Fatal(err)
	}
	n.agent.waitLine(b, "count=1000", 60*time.Second)
	time.Sleep(2 * time.Second)
	full := rssMiB(b, n.agent.cmd.Process.Pid)
	b.ReportMetric(idle, "idle-RSS-MiB")
	b.ReportMetric(full, "1000-SVIDs-RSS-MiB")
}

// BenchmarkFetchX509SVIDFreshConnection measures one-shot FetchX509SVID
// calls, each on a new connection (attestation included), against the real
// agent process, and reports the p50 and p99 latency.
func BenchmarkFetchX509SVIDFreshConnection(b *testing.B) {
	want := callerID(b)
	n := startNode(b)
	if _, err := n.server.cli(b, "server", "entry", "create", "--parent-id", nodeAgentID, "--spiffe-id", want.String(), "--selector", "unix:uid:0"); err != nil {
		b.Fatal(err)
	}
	waitForID(b, n, want)
	addr := workloadapi.WithAddr("unix://" + n.socket)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := workloadapi.FetchX509SVID(ctx, addr)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
