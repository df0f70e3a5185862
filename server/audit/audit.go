package audit

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"sync"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/internal/peercred"
)

// Message is the message of every audit record (SPIRE's).
const Message = "API accessed"

// The fields every record has. Type marks a record as an audit record.
const (
	TypeKey = "type"
	Type    = "audit"
)

// Logger emits audit records to a slog.Logger, at INFO.
type Logger struct {
	log *slog.Logger
}

// New returns a Logger writing to log. The log must be enabled at INFO, or
// the records are lost: the server refuses to start so.
func New(log *slog.Logger) *Logger { return &Logger{log: log} }

// Options say how a service's calls are described.
type Options struct {
	// Fields returns the identifying fields of a call from its request and,
	// when a unary call succeeded, its response (nil otherwise); for a
	// stream, from its first request message. It must never return a
	// secret.
	Fields func(req, resp any) []slog.Attr
	// Skip reports the methods not audited (nil: none).
	Skip func(fullMethod string) bool
}

// Record is the audit record of one call, filled by the handler through
// FromContext. A nil Record does nothing.
type Record struct {
	mu    sync.Mutex
	attrs []slog.Attr
	items []item
}

// item is one operation of a batch call: it gets its own record.
type item struct {
	attrs []slog.Attr
	err   error
}

type recordKey struct{}

// FromContext returns the call's record; nil when the call is not audited.
func FromContext(ctx context.Context) *Record {
	r, _ := ctx.Value(recordKey{}).(*Record)
	return r
}

// Add adds fields to the call's record (to every item's, for a batch).
func (r *Record) Add(attrs ...slog.Attr) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.attrs = append(r.attrs, attrs...)
	r.mu.Unlock()
}

// AddItem records one operation of a batch call, which then gets one
// record per item instead of one for the call. err is the item's own
// verdict; an item with none shares the call's: success, or the call's
// error code with "the call failed: " before its message (the item was
// not done because of another, or of the call).
func (r *Record) AddItem(err error, attrs ...slog.Attr) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.items = append(r.items, item{attrs: attrs, err: err})
	r.mu.Unlock()
}

// UnaryInterceptor audits every unary call: it belongs before any
// authorization interceptor, so that refused callers are audited too.
func (l *Logger) UnaryInterceptor(o Options) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if o.Skip != nil && o.Skip(info.FullMethod) {
			return handler(ctx, req)
		}
		r := &Record{}
		resp, err := handler(context.WithValue(ctx, recordKey{}, r), req)
		if o.Fields != nil {
			// A failed handler's resp is a typed nil: pass a plain one.
			var out any
			if err == nil {
				out = resp
			}
			r.Add(o.Fields(req, out)...)
		}
		l.emit(ctx, info.FullMethod, r, err)
		return resp, err
	}
}

// StreamInterceptor audits every streaming call when it ends, with the
// fields of its first request message.
func (l *Logger) StreamInterceptor(o Options) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if o.Skip != nil && o.Skip(info.FullMethod) {
			return handler(srv, ss)
		}
		r := &Record{}
		ws := &stream{ServerStream: ss, ctx: context.WithValue(ss.Context(), recordKey{}, r), rec: r, fields: o.Fields}
		err := handler(srv, ws)
		l.emit(ss.Context(), info.FullMethod, r, err)
		return err
	}
}

// stream carries the record in its context and takes the call's fields
// from the first message received.
type stream struct {
	grpc.ServerStream
	ctx      context.Context
	rec      *Record
	fields   func(req, resp any) []slog.Attr
	received bool
}

func (s *stream) Context() context.Context { return s.ctx }

func (s *stream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil && !s.received {
		s.received = true
		if s.fields != nil {
			s.rec.Add(s.fields(m, nil)...)
		}
	}
	return err
}

// emit writes the call's record, or one per item.
func (l *Logger) emit(ctx context.Context, method string, r *Record, err error) {
	base := append([]slog.Attr{
		slog.String(TypeKey, Type),
		slog.String("request_id", uuid.NewString()),
		slog.String("method", method),
	}, callerAttrs(ctx)...)
	r.mu.Lock()
	defer r.mu.Unlock()
	base = append(base, r.attrs...)
	if len(r.items) == 0 {
		l.log.LogAttrs(ctx, slog.LevelInfo, Message, append(base, statusAttrs(err, "")...)...)
		return
	}
	for _, it := range r.items {
		verdict := statusAttrs(it.err, "")
		if it.err == nil {
			verdict = statusAttrs(err, "the call failed: ")
		}
		attrs := append(append(append([]slog.Attr(nil), base...), it.attrs...), verdict...)
		l.log.LogAttrs(ctx, slog.LevelInfo, Message, attrs...)
	}
}

// statusAttrs are SPIRE's status fields; status_message (after prefix)
// only on error.
func statusAttrs(err error, prefix string) []slog.Attr {
	st := status.Convert(err)
	if err == nil {
		return []slog.Attr{slog.String("status", "success"), slog.String("status_code", st.Code().String())}
	}
	return []slog.Attr{slog.String("status", "error"), slog.String("status_code", st.Code().String()),
		slog.String("status_message", prefix+st.Message())}
}

// callerAttrs name the caller: its kernel credentials on a Unix socket
// (peercred), else its address.
func callerAttrs(ctx context.Context) []slog.Attr {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	pc, ok := p.AuthInfo.(peercred.Info)
	if !ok {
		if p.Addr == nil {
			return nil
		}
		return []slog.Attr{slog.String("caller_addr", p.Addr.String())}
	}
	attrs := []slog.Attr{
		slog.Uint64("caller_uid", uint64(pc.UID)),
		slog.Uint64("caller_gid", uint64(pc.GID)),
		slog.Int64("caller_pid", int64(pc.PID)),
	}
	if path, ok := callerPath(pc); ok {
		attrs = append(attrs, slog.String("caller_path", path))
	}
	return attrs
}

// callerPath is the caller's executable, when it can be read and the PID
// is still the caller's (checked after reading: a reused PID would name
// another program).
func callerPath(pc peercred.Info) (string, bool) {
	if pc.PID <= 0 {
		return "", false
	}
	path, err := os.Readlink("/proc/" + strconv.Itoa(int(pc.PID)) + "/exe")
	if err != nil || pc.SameProcess() != nil {
		return "", false
	}
	return path, true
}
