package bus

import (
	"context"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// BatchSubscriber is a subscriber that can also hand out a queue's
// messages in batches, through one consumer: the in-process transport's.
// A consumer that settles many messages at once (the saga tracker records
// a batch in one transaction) then needs one subscription instead of one
// per message it holds, and each message costs no goroutine hand-offs of
// its own. Check for it with a type assertion on a transport's subscriber.
type BatchSubscriber interface {
	// SubscribeBatches consumes the topic's queue (declared first, as
	// Subscribe does) and hands out its messages in batches: the first
	// message ready, then whatever else arrives within cfg.Linger, up to
	// cfg.Max. Every message of a batch must be acked or nacked (a nack
	// requeues it); the next batch comes once all are. The channel closes
	// when ctx is done or the subscriber is closed; messages not settled by
	// then are requeued.
	SubscribeBatches(ctx context.Context, topic string, cfg BatchConfig) (<-chan []*message.Message, error)
}

// BatchConfig shapes the batches of BatchSubscriber.SubscribeBatches.
type BatchConfig struct {
	// Max bounds the messages of a batch; at least 1.
	Max int
	// Linger is how long a batch waits after its first message for more;
	// 0 takes only the messages already there.
	Linger time.Duration
}
