package logtest

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestWaitForSeesLaterWrites(t *testing.T) {
	var b Buffer
	go func() {
		for i := range 50 {
			fmt.Fprintf(&b, "line %d\n", i)
			time.Sleep(time.Millisecond)
		}
		b.Logger().Info("done writing", "lines", 50)
	}()
	b.WaitFor(t, `msg="done writing" lines=50`, 10*time.Second)
	if !strings.Contains(b.String(), "line 49\n") {
		t.Errorf("buffer lost a write:\n%s", b.String())
	}
}

func TestWaitForFailsOnTimeout(t *testing.T) {
	ft := &fatalRecorder{TB: t}
	var b Buffer
	b.Write([]byte("something else"))
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.WaitFor(ft, "never written", 20*time.Millisecond)
	}()
	<-done
	if !strings.Contains(ft.msg, `"never written"`) || !strings.Contains(ft.msg, "something else") {
		t.Errorf("timeout message %q names neither the awaited text nor what was there", ft.msg)
	}
}

// fatalRecorder records Fatalf instead of failing the test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}
func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit() // as t.Fatalf does
}
