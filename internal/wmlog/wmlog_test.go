package wmlog

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
)

// TestLevels: records at or above the handler's level come through with
// their fields (and With's), the others do not.
func TestLevels(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))).
		With(watermill.LogFields{"router": "r1"})
	l.Trace("trace record", watermill.LogFields{"n": 1})
	l.Debug("debug record", nil)
	l.Info("info record", watermill.LogFields{"n": 2})
	l.Error("error record", errors.New("boom"), nil)
	out := buf.String()
	for _, want := range []string{`msg="info record" router=r1 n=2`, `msg="error record" router=r1 error=boom`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "trace record") || strings.Contains(out, "debug record") {
		t.Errorf("records below the level came through:\n%s", out)
	}
	buf.Reset()
	New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: watermill.LevelTrace}))).Trace("trace record", nil)
	if !strings.Contains(buf.String(), "trace record") {
		t.Errorf("a trace record at trace level was dropped: %q", buf.String())
	}
}
