package store

import (
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		in      string
		kind    backendKind
		path    string
		url     string
		wantErr string // substring; "" means success
	}{
		{in: "sqlite:///var/lib/signet/signet.db", kind: sqliteBackend, path: "/var/lib/signet/signet.db"},
		{in: "SQLITE:///a/b.db", kind: sqliteBackend, path: "/a/b.db"},
		{in: "sqlite:///a//b/../c.db", kind: sqliteBackend, path: "/a/c.db"},
		{in: "  sqlite:///a.db \n", kind: sqliteBackend, path: "/a.db"},
		{in: "/var/lib/signet/signet.db", kind: sqliteBackend, path: "/var/lib/signet/signet.db"},
		{in: "data/signet.db", kind: sqliteBackend, path: "data/signet.db"},
		{in: "./signet.db", kind: sqliteBackend, path: "signet.db"},
		{in: "postgres://signet:secret@db:5432/signet?sslmode=disable", kind: postgresBackend, url: "postgres://signet:secret@db:5432/signet?sslmode=disable"},
		{in: "postgresql://localhost/signet", kind: postgresBackend, url: "postgresql://localhost/signet"},
		{in: "", wantErr: "empty"},
		{in: "   ", wantErr: "empty"},
		{in: "sqlite://relative.db", wantErr: "absolute path"},
		{in: "sqlite://", wantErr: "absolute path"},
		{in: "sqlite:/a.db", wantErr: "missing"},
		{in: "postgres:", wantErr: "missing"},
		{in: "postgres://", wantErr: "names no host"},
		{in: "mysql://root@db/signet", wantErr: `unsupported datastore URL scheme "mysql"`},
		{in: "http://x", wantErr: "postgres://"},
		{in: "sqlite:///a.db?_pragma=x", wantErr: "must not contain ?"},
		{in: "/a\x00b", wantErr: "NUL"},
		{in: "sqlite:///var/lib/", wantErr: "directory"},
		{in: "/var/lib/signet/..", wantErr: "directory"},
		{in: ".", wantErr: "directory"},
		{in: ":memory:", wantErr: "in-memory"},
		{in: "file:/a.db", wantErr: "not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseURL(tt.in)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("parseURL(%q) = %+v, want error containing %q", tt.in, got, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseURL(%q) error %q, want it to contain %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseURL(%q): %v", tt.in, err)
			}
			want := target{kind: tt.kind, path: tt.path, url: tt.url}
			if got != want {
				t.Fatalf("parseURL(%q) = %+v, want %+v", tt.in, got, want)
			}
		})
	}
}

func TestParseURLErrorHidesPassword(t *testing.T) {
	_, err := parseURL("mysql://root:hunter2@db/signet")
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error %v: want an error that does not repeat the password", err)
	}
}

func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"sqlite:///a/b.db", "/a/b.db", "rel.db", "postgres://u:p@h/db", "postgresql://h",
		"mysql://x", "sqlite://x", "", ":memory:", "a?b", "sqlite:///", "x://y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := parseURL(in)
		if err != nil {
			if got != (target{}) {
				t.Fatalf("parseURL(%q) returned %+v with error %v", in, got, err)
			}
			return
		}
		switch got.kind {
		case sqliteBackend:
			if got.path == "" || got.url != "" || strings.ContainsAny(got.path, "?#\x00") {
				t.Fatalf("parseURL(%q) = %+v: bad sqlite target", in, got)
			}
			// A sqlite:// URL names an absolute path; a plain (relative)
			// path may hold "sqlite://" anywhere else ("0/sqlite://0").
			if strings.HasPrefix(strings.ToLower(in), "sqlite://") && !strings.HasPrefix(got.path, "/") {
				t.Fatalf("parseURL(%q) = %+v: sqlite URL gave a relative path", in, got)
			}
		case postgresBackend:
			low := strings.ToLower(got.url)
			if got.path != "" || !(strings.HasPrefix(low, "postgres://") || strings.HasPrefix(low, "postgresql://")) {
				t.Fatalf("parseURL(%q) = %+v: bad postgres target", in, got)
			}
		default:
			t.Fatalf("parseURL(%q) = %+v: no backend and no error", in, got)
		}
	})
}
