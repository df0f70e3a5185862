package cache

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// fill1000 returns 1000 entries (each its own uid, all sharing gid 0, as
// services on one node do) and a real SVID for each.
func fill1000(tb testing.TB, ca *testCA) ([]Entry, map[string]*x509svid.SVID) {
	entries := make([]Entry, 1000)
	svids := make(map[string]*x509svid.SVID, 1000)
	for i := range entries {
		e := entry(tb, fmt.Sprintf("entry-%04d", i), fmt.Sprintf("/svc/%d", i), t0.Add(time.Duration(i)*time.Second),
			"unix:gid:0", fmt.Sprintf("unix:uid:%d", 10000+i))
		entries[i] = e
		svids[e.ID] = ca.svid(tb, e.SPIFFEID.Path(), time.Now().Add(-time.Minute), time.Hour)
	}
	return entries, svids
}

// BenchmarkAgentMemory reports the Go heap and the process RSS with an
// empty cache (idle) and with 1000 real X509-SVIDs (with keys) cached. RSS is
// the whole test process, so it is an upper bound for the agent's own.
func BenchmarkAgentMemory(b *testing.B) {
	runtime.GC()
	idleHeap, idleRSS := heapBytes(), rssBytes()
	ca := newTestCA(b, td)
	entries, svids := fill1000(b, ca)
	var c *Cache
	for b.Loop() {
		if c != nil {
			c.Close()
		}
		var err error
		if c, err = New(Options{TrustDomain: td}); err != nil {
			b.Fatal(err)
		}
		c.SetBundles(ca.bundle(), nil)
		c.SetEntries(entries)
		c.PutSVIDs(svids)
	}
	entries, svids = nil, nil
	runtime.GC()
	if c.Stats().SVIDs != 1000 {
		b.Fatalf("cache holds %d SVIDs, want 1000", c.Stats().SVIDs)
	}
	b.ReportMetric(float64(idleHeap)/(1<<20), "heap-idle-MiB")
	b.ReportMetric(float64(heapBytes())/(1<<20), "heap-1000svids-MiB")
	b.ReportMetric(float64(idleRSS)/(1<<20), "rss-idle-MiB")
	b.ReportMetric(float64(rssBytes())/(1<<20), "rss-1000svids-MiB")
	runtime.KeepAlive(c)
	c.Close()
}

// BenchmarkSubscribe measures a new Workload API stream's first state with
// 1000 entries cached (they all share one selector with the workload).
func BenchmarkSubscribe(b *testing.B) {
	ca := newTestCA(b, td)
	entries, svids := fill1000(b, ca)
	c, _ := newTestCache(b, "")
	c.opts.Now = time.Now
	c.SetBundles(ca.bundle(), nil)
	c.SetEntries(entries)
	c.PutSVIDs(svids)
	w := sels(b, "unix:gid:0", "unix:uid:10500", "unix:user:svc500")
	for b.Loop() {
		sub := c.Subscribe(w)
		if st := <-sub.Updates(); len(st.SVIDs) != 1 {
			b.Fatalf("got %d SVIDs, want 1", len(st.SVIDs))
		}
		sub.Close()
	}
}

// BenchmarkRotateWith1000Subscribers measures one SVID rotation with 1000
// entries and 1000 open streams (one per workload): only the one matching
// subscriber is recomputed.
func BenchmarkRotateWith1000Subscribers(b *testing.B) {
	ca := newTestCA(b, td)
	entries, svids := fill1000(b, ca)
	c, _ := newTestCache(b, "")
	c.opts.Now = time.Now
	c.SetBundles(ca.bundle(), nil)
	c.SetEntries(entries)
	c.PutSVIDs(svids)
	for i := range 1000 {
		c.Subscribe(sels(b, "unix:gid:0", fmt.Sprintf("unix:uid:%d", 10000+i)))
	}
	one := map[string]*x509svid.SVID{"entry-0500": svids["entry-0500"]}
	for b.Loop() {
		c.PutSVIDs(one)
	}
}

func heapBytes() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// rssBytes reads VmRSS from /proc (0 where there is none).
func rssBytes() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}
