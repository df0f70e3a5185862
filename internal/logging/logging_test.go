package logging

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestParseLevel(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want slog.Level
		err  bool
	}{
		{"debug", slog.LevelDebug, false},
		{"INFO", slog.LevelInfo, false},
		{"Warn", slog.LevelWarn, false},
		{"error", slog.LevelError, false},
		{"TRACE", slog.LevelDebug, false}, // SPIRE's finest level
		{"info+2", 0, true},               // slog's offsets are not a level name
		{"debug-4", 0, true},
		{"fatal", 0, true},
		{"", 0, true},
	} {
		got, err := ParseLevel(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestNewLogsAtLevel(t *testing.T) {
	var buf bytes.Buffer
	l, lvl, err := New(&buf, "json", "warn")
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hidden")
	l.Warn("shown")
	if strings.Contains(buf.String(), "hidden") || !strings.Contains(buf.String(), `"msg":"shown"`) {
		t.Fatalf("at warn, log = %q", buf.String())
	}
	lvl.Set(slog.LevelDebug)
	l.Debug("now shown")
	if !strings.Contains(buf.String(), "now shown") {
		t.Fatalf("after lowering the level, log = %q", buf.String())
	}
	if _, _, err := New(&buf, "xml", "info"); err == nil {
		t.Fatal("format xml accepted")
	}
}
