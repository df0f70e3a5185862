// Package logging builds the slog.Logger every Signet role logs with.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// New returns a logger writing format ("text" or "json") at level ("debug",
// "info", "warn", "error") to w, and the level it logs at, which may be
// changed while it runs (the server's logger admin commands).
func New(w io.Writer, format, level string) (*slog.Logger, *slog.LevelVar, error) {
	lvl, err := ParseLevel(level)
	if err != nil {
		return nil, nil, err
	}
	v := new(slog.LevelVar)
	v.Set(lvl)
	opts := &slog.HandlerOptions{Level: v}
	switch strings.ToLower(format) {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), v, nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), v, nil
	default:
		return nil, nil, fmt.Errorf("log format %q: want text or json", format)
	}
}

// ParseLevel parses debug, info, warn or error (any case). SPIRE's trace
// is read as debug, Signet's finest level, so a SPIRE config or script
// that asks for it works.
func ParseLevel(level string) (slog.Level, error) {
	if strings.EqualFold(level, "trace") {
		return slog.LevelDebug, nil
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil || strings.ContainsAny(level, "+-") {
		return 0, fmt.Errorf("log level %q: want debug (or trace), info, warn or error", level)
	}
	return lvl, nil
}
