package broker

import (
	"errors"
	"fmt"
)

// ReplyCode is an AMQP 0-9-1 reply code (spec section 1.9, "Constants").
// Every error that the broker returns for a protocol-level failure carries
// one, so the AMQP wire server maps it to channel.close or connection.close
// one to one.
type ReplyCode uint16

// Reply codes of AMQP 0-9-1. Soft errors (3xx, 4xx) close the channel; hard
// errors (5xx) close the connection.
const (
	ContentTooLarge    ReplyCode = 311
	NoRoute            ReplyCode = 312
	NoConsumers        ReplyCode = 313
	ConnectionForced   ReplyCode = 320
	InvalidPath        ReplyCode = 402
	AccessRefused      ReplyCode = 403
	NotFound           ReplyCode = 404
	ResourceLocked     ReplyCode = 405
	PreconditionFailed ReplyCode = 406
	FrameError         ReplyCode = 501
	SyntaxError        ReplyCode = 502
	CommandInvalid     ReplyCode = 503
	ChannelError       ReplyCode = 504
	UnexpectedFrame    ReplyCode = 505
	ResourceError      ReplyCode = 506
	NotAllowed         ReplyCode = 530
	NotImplemented     ReplyCode = 540
	InternalError      ReplyCode = 541
)

var replyNames = map[ReplyCode]string{
	ContentTooLarge:    "CONTENT_TOO_LARGE",
	NoRoute:            "NO_ROUTE",
	NoConsumers:        "NO_CONSUMERS",
	ConnectionForced:   "CONNECTION_FORCED",
	InvalidPath:        "INVALID_PATH",
	AccessRefused:      "ACCESS_REFUSED",
	NotFound:           "NOT_FOUND",
	ResourceLocked:     "RESOURCE_LOCKED",
	PreconditionFailed: "PRECONDITION_FAILED",
	FrameError:         "FRAME_ERROR",
	SyntaxError:        "SYNTAX_ERROR",
	CommandInvalid:     "COMMAND_INVALID",
	ChannelError:       "CHANNEL_ERROR",
	UnexpectedFrame:    "UNEXPECTED_FRAME",
	ResourceError:      "RESOURCE_ERROR",
	NotAllowed:         "NOT_ALLOWED",
	NotImplemented:     "NOT_IMPLEMENTED",
	InternalError:      "INTERNAL_ERROR",
}

// String returns the spec's name of the code, e.g. "NOT_FOUND".
func (c ReplyCode) String() string {
	if n, ok := replyNames[c]; ok {
		return n
	}
	return fmt.Sprintf("REPLY_%d", uint16(c))
}

// Hard reports whether the code is a connection-level error.
func (c ReplyCode) Hard() bool { return c >= 500 }

// Error is a protocol-level failure: the AMQP reply code and the reply text
// that RabbitMQ would send, e.g. 404 "NOT_FOUND - no queue 'q' in vhost '/'".
// Match it with errors.AsType[*broker.Error] or with [Code].
type Error struct {
	Code ReplyCode
	Text string
}

func (e *Error) Error() string {
	return fmt.Sprintf("broker: %d %s", uint16(e.Code), e.Text)
}

func newError(code ReplyCode, format string, args ...any) *Error {
	return &Error{Code: code, Text: code.String() + " - " + fmt.Sprintf(format, args...)}
}

// Code returns the reply code carried by err, or 0 when err carries none.
func Code(err error) ReplyCode {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Code
	}
	return 0
}

// ErrClosed is returned by every method of a closed Channel, Conn or
// Consumer. When a protocol error closed it, the returned error also wraps
// that *Error, so errors.AsType still finds the reply code.
var ErrClosed = errors.New("broker: closed")

type closedError struct{ cause error }

func (e closedError) Error() string {
	if e.cause == nil {
		return ErrClosed.Error()
	}
	return ErrClosed.Error() + ": " + e.cause.Error()
}

func (e closedError) Unwrap() []error {
	if e.cause == nil {
		return []error{ErrClosed}
	}
	return []error{ErrClosed, e.cause}
}

// ErrCancelled is returned by Consumer.Receive once the consumer was
// cancelled (by its owner, by the deletion of its queue, or by the closing
// of its channel) and every delivery buffered before that was received.
var ErrCancelled = errors.New("broker: consumer cancelled")

func vhostQueue(vh, q string) string {
	return fmt.Sprintf("queue '%s' in vhost '%s'", q, vh)
}

func vhostExchange(vh, x string) string {
	return fmt.Sprintf("exchange '%s' in vhost '%s'", x, vh)
}
