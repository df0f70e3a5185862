package audittest

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/signetid/signet/server/audit"
)

// Record is one audit record: its JSON fields.
type Record map[string]any

// Get returns field key as text ("" when absent); lists are joined by ",".
func (r Record) Get(key string) string {
	switch v := r[key].(type) {
	case nil:
		return ""
	case string:
		return v
	case []any:
		parts := make([]string, len(v))
		for i, p := range v {
			parts[i] = fmt.Sprint(p)
		}
		return strings.Join(parts, ",")
	default:
		return fmt.Sprint(v)
	}
}

// Logger is a JSON logger at INFO, as a server runs with, writing to w.
func Logger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// Records returns the audit records of a JSON log, in order; a line that
// is not JSON fails the test.
func Records(t testing.TB, log string) []Record {
	t.Helper()
	var out []Record
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		if line == "" {
			continue
		}
		var r Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("log line is not JSON: %v\n%s", err, line)
		}
		if r[audit.TypeKey] == audit.Type {
			if r["msg"] != audit.Message || r["level"] != "INFO" {
				t.Errorf("audit record with msg %v, level %v: %s", r["msg"], r["level"], line)
			}
			out = append(out, r)
		}
	}
	return out
}

// Filter returns the records whose fields hold the given values (as Get
// renders them).
func Filter(records []Record, fields map[string]string) []Record {
	var out []Record
next:
	for _, r := range records {
		for k, v := range fields {
			if r.Get(k) != v {
				continue next
			}
		}
		out = append(out, r)
	}
	return out
}

// One returns the one record whose fields hold want, and fails the test
// (showing the log) unless exactly one does.
func One(t testing.TB, log string, want map[string]string) Record {
	t.Helper()
	got := Filter(Records(t, log), want)
	if len(got) != 1 {
		t.Fatalf("%d audit records with %v in:\n%s", len(got), want, log)
	}
	return got[0]
}
