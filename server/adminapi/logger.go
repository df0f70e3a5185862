package adminapi

import (
	"context"
	"log/slog"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/internal/logging"
	"github.com/signetid/signet/server/api"
)

// GetLogger returns the server's log level now and at launch.
func (s *Service) GetLogger(context.Context, *api.GetLoggerRequest) (*api.Logger, error) {
	if s.cfg.LogLevel == nil {
		return nil, status.Error(codes.FailedPrecondition, "logger: this server's log level is fixed")
	}
	return s.logger(), nil
}

// SetLogLevel changes the server's log level until the next change, reset
// or restart. With the audit log on, the level cannot go above info:
// audit records are written at info.
func (s *Service) SetLogLevel(_ context.Context, req *api.SetLogLevelRequest) (*api.Logger, error) {
	if s.cfg.LogLevel == nil {
		return nil, status.Error(codes.FailedPrecondition, "logger: this server's log level is fixed")
	}
	lvl, err := logging.ParseLevel(req.Level)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "logger: %v", err)
	}
	if s.cfg.Audit != nil && lvl > slog.LevelInfo {
		return nil, status.Errorf(codes.FailedPrecondition, "logger: level %s would drop the audit records, which are written at info; with audit_log_enabled the level goes no higher than info", levelName(lvl))
	}
	return s.setLevel(lvl), nil
}

// ResetLogLevel returns to the level the server started with.
func (s *Service) ResetLogLevel(context.Context, *api.ResetLogLevelRequest) (*api.Logger, error) {
	if s.cfg.LogLevel == nil {
		return nil, status.Error(codes.FailedPrecondition, "logger: this server's log level is fixed")
	}
	return s.setLevel(s.launchLevel), nil
}

func (s *Service) setLevel(lvl slog.Level) *api.Logger {
	old := s.cfg.LogLevel.Level()
	s.cfg.LogLevel.Set(lvl)
	// Logged at the louder of the two levels, so that the change shows
	// in the log on either side of it.
	s.cfg.Logger.Log(context.Background(), max(old, lvl, slog.LevelInfo), "log level changed", "from", levelName(old), "to", levelName(lvl))
	return s.logger()
}

func (s *Service) logger() *api.Logger {
	return &api.Logger{CurrentLevel: levelName(s.cfg.LogLevel.Level()), LaunchLevel: levelName(s.launchLevel)}
}

func levelName(l slog.Level) string { return strings.ToLower(l.String()) }
