package web

import (
	"context"
	"log/slog"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// zapHandler is a slog.Handler writing to a zap.Logger: exporter-toolkit logs
// through log/slog, the detector through zap. It is the few lines needed for
// that library's messages, not a general bridge (groups become field prefixes).
type zapHandler struct {
	log    *zap.Logger
	prefix string
}

func newSlogger(log *zap.Logger) *slog.Logger { return slog.New(&zapHandler{log: log}) }

func (h *zapHandler) Enabled(_ context.Context, l slog.Level) bool {
	return h.log.Core().Enabled(zapLevel(l))
}

func (h *zapHandler) Handle(_ context.Context, r slog.Record) error {
	fields := make([]zap.Field, 0, r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool {
		fields = append(fields, h.field(a))
		return true
	})
	if ce := h.log.Check(zapLevel(r.Level), r.Message); ce != nil {
		ce.Write(fields...)
	}
	return nil
}

func (h *zapHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	fields := make([]zap.Field, len(attrs))
	for i, a := range attrs {
		fields[i] = h.field(a)
	}
	return &zapHandler{log: h.log.With(fields...), prefix: h.prefix}
}

func (h *zapHandler) WithGroup(name string) slog.Handler {
	return &zapHandler{log: h.log, prefix: h.prefix + name + "."}
}

func (h *zapHandler) field(a slog.Attr) zap.Field {
	v := a.Value.Resolve()
	key := h.prefix + a.Key
	switch v.Kind() {
	case slog.KindString:
		return zap.String(key, v.String())
	case slog.KindBool:
		return zap.Bool(key, v.Bool())
	case slog.KindInt64:
		return zap.Int64(key, v.Int64())
	case slog.KindDuration:
		return zap.Duration(key, v.Duration())
	default:
		return zap.Any(key, v.Any())
	}
}

func zapLevel(l slog.Level) zapcore.Level {
	switch {
	case l >= slog.LevelError:
		return zapcore.ErrorLevel
	case l >= slog.LevelWarn:
		return zapcore.WarnLevel
	case l >= slog.LevelInfo:
		return zapcore.InfoLevel
	default:
		return zapcore.DebugLevel
	}
}
