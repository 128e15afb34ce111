package broker

import "log/slog"

const (
	maxNameLen = 255 // AMQP shortstr

	defaultMaxMessageSize = 128 << 20 // RabbitMQ's default max_message_size
	defaultConsumerWindow = 1024
)

type options struct {
	logger         *slog.Logger
	maxMessageSize int
	consumerWindow int
}

func defaultOptions() options {
	return options{
		logger:         slog.New(slog.DiscardHandler),
		maxMessageSize: defaultMaxMessageSize,
		consumerWindow: defaultConsumerWindow,
	}
}

// Option configures a Broker.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithLogger sets the logger for events nobody else is told of (a
// dead letter dropped because its exchange is missing, ...). Default: none.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) {
		if l != nil {
			o.logger = l
		}
	})
}

// WithMaxMessageSize caps a message body; a larger one is refused with 406
// PRECONDITION_FAILED. Default 128 MiB, as RabbitMQ.
func WithMaxMessageSize(n int) Option {
	return optionFunc(func(o *options) {
		if n > 0 {
			o.maxMessageSize = n
		}
	})
}

// WithConsumerWindow bounds how many deliveries may wait in a consumer's
// buffer before the consumer receives them (flow control for consumers
// without a prefetch limit or in no-ack mode). Default 1024.
func WithConsumerWindow(n int) Option {
	return optionFunc(func(o *options) {
		if n > 0 {
			o.consumerWindow = n
		}
	})
}
