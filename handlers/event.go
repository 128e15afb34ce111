package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Event is a typed event. Its name is its routing key: lower-case,
// dot-separated, versioned when its shape changes ("order.placed",
// "order.placed.v2"). EventName must return the same name for every value
// of the type, including its zero value.
type Event interface{ EventName() string }

// Handler handles events of one type.
type Handler[E Event] interface {
	Handle(ctx context.Context, e E) error
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc[E Event] func(ctx context.Context, e E) error

// Handle calls f.
func (f HandlerFunc[E]) Handle(ctx context.Context, e E) error { return f(ctx, e) }

var eventNameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*$`)

// EventName returns the name of event type E, checked.
func EventName[E Event]() (string, error) {
	var zero E
	return checkEventName(zero.EventName())
}

func checkEventName(name string) (string, error) {
	if !eventNameRE.MatchString(name) {
		return "", fmt.Errorf("handlers: event name %q is not lower-case words separated by dots", name)
	}
	return name, nil
}

// Codec encodes event payloads. JSON is the default.
type Codec interface {
	// ContentType names the encoding, e.g. "application/json".
	ContentType() string
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSON is the default Codec.
type JSON struct{}

// ContentType returns "application/json".
func (JSON) ContentType() string { return "application/json" }

// Marshal encodes v as JSON.
func (JSON) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal decodes JSON data into v, refusing trailing data.
func (JSON) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// PermanentError marks an error that no retry can fix: the message goes to
// the dead-letter queue at once. Make one with Permanent.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent marks err as permanent; nil stays nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// sqlStateError is a database error with an SQLSTATE code (pgx's
// *pgconn.PgError, for one).
type sqlStateError interface {
	error
	SQLState() string
}

// IsPermanent reports whether err is, or wraps, a PermanentError, or a
// database's data exception: an error with an SQLSTATE of class 22
// (PostgreSQL's "invalid byte sequence", "value too long", "numeric value
// out of range"...), which the same message meets again at every retry.
func IsPermanent(err error) bool {
	if _, ok := errors.AsType[*PermanentError](err); ok {
		return true
	}
	s, ok := errors.AsType[sqlStateError](err)
	return ok && strings.HasPrefix(s.SQLState(), "22")
}

// DecodeError is a payload that the codec could not decode into the
// handler's event type. It is permanent: a retry would fail the same way.
type DecodeError struct {
	Event string
	Err   error
}

func (e *DecodeError) Error() string { return fmt.Sprintf("decode %s: %v", e.Event, e.Err) }
func (e *DecodeError) Unwrap() error { return e.Err }
