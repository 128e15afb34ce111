package bus

import (
	"context"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/transport/envelope"
)

// FailedCopy is the copy of msg, which failed on queue, to publish to a
// retry or dead-letter queue: without the headers the broker owns
// (BrokerKeys), with the error and its kind ("transient", "permanent",
// "decode"), the queue, and the time of the last failure (and of the first,
// unless msg carries one from an earlier failure). It carries ctx.
func FailedCopy(ctx context.Context, msg *message.Message, queue, kind string, cause error, now time.Time) *message.Message {
	out := msg.Copy()
	out.SetContext(ctx)
	for _, k := range BrokerKeys {
		delete(out.Metadata, k)
	}
	at := now.UTC().Format(time.RFC3339Nano)
	md := out.Metadata
	md.Set(envelope.ErrorKey, cause.Error())
	md.Set(envelope.ErrorKindKey, kind)
	md.Set(envelope.QueueKey, queue)
	md.Set(envelope.LastFailureKey, at)
	if md.Get(envelope.FirstFailureKey) == "" {
		md.Set(envelope.FirstFailureKey, at)
	}
	return out
}
