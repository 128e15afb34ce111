// Package wmlog adapts slog to Watermill's logger for Troupe's routers and
// subscribers.
package wmlog

import (
	"context"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill"
)

// New returns Watermill's slog adapter for logger (slog.Default when nil),
// except that a record below logger's level costs nothing: Watermill's
// own adapter turns a record's fields into attributes before slog drops
// it, and its router logs several trace records per message.
func New(logger *slog.Logger) watermill.LoggerAdapter {
	if logger == nil {
		logger = slog.Default()
	}
	return adapter{logger: logger, inner: watermill.NewSlogLogger(logger)}
}

type adapter struct {
	logger *slog.Logger // for Enabled, which attributes do not change
	inner  watermill.LoggerAdapter
}

func (a adapter) on(level slog.Level) bool { return a.logger.Enabled(context.Background(), level) }

func (a adapter) Error(msg string, err error, fields watermill.LogFields) {
	if a.on(slog.LevelError) {
		a.inner.Error(msg, err, fields)
	}
}

func (a adapter) Info(msg string, fields watermill.LogFields) {
	if a.on(slog.LevelInfo) {
		a.inner.Info(msg, fields)
	}
}

func (a adapter) Debug(msg string, fields watermill.LogFields) {
	if a.on(slog.LevelDebug) {
		a.inner.Debug(msg, fields)
	}
}

func (a adapter) Trace(msg string, fields watermill.LogFields) {
	if a.on(watermill.LevelTrace) {
		a.inner.Trace(msg, fields)
	}
}

func (a adapter) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return adapter{logger: a.logger, inner: a.inner.With(fields)}
}
