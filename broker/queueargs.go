package broker

import (
	"math"
	"time"
)

// Overflow is a queue's x-overflow behaviour when x-max-length or
// x-max-length-bytes is reached.
type Overflow uint8

// Overflow behaviours, as RabbitMQ's.
const (
	// DropHead drops (or dead-letters) the oldest ready messages.
	DropHead Overflow = iota + 1
	// RejectPublish refuses new messages: a publisher in confirm mode gets
	// a nack.
	RejectPublish
	// RejectPublishDLX refuses new messages and dead-letters them.
	RejectPublishDLX
)

var overflowNames = map[string]Overflow{
	"drop-head":          DropHead,
	"reject-publish":     RejectPublish,
	"reject-publish-dlx": RejectPublishDLX,
}

// queueArgs is the parsed form of a queue's x- arguments.
type queueArgs struct {
	ttl       time.Duration // message TTL; valid when hasTTL
	hasTTL    bool
	expires   time.Duration // 0: never
	maxLen    int64         // -1: none
	maxBytes  int64         // -1: none
	overflow  Overflow
	dlx       string
	hasDLX    bool
	dlk       string
	hasDLK    bool
	sac       bool
	queueType string
}

// checkedArgs lists the arguments compared when a queue is redeclared.
var checkedArgs = []string{
	"x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes",
	"x-overflow", "x-dead-letter-exchange", "x-dead-letter-routing-key",
	"x-single-active-consumer", "x-queue-mode", "x-queue-type",
}

func parseQueueArgs(vh, name string, opts QueueOptions) (queueArgs, error) {
	a := queueArgs{maxLen: -1, maxBytes: -1, overflow: DropHead, queueType: "classic"}
	args := opts.Args
	if err := args.Validate(); err != nil {
		return a, newError(PreconditionFailed, "invalid arguments for %s: %v", vhostQueue(vh, name), err)
	}
	bad := func(arg string, v any, why string) error {
		return newError(PreconditionFailed, "invalid arg '%s' for %s: %v %s", arg, vhostQueue(vh, name), v, why)
	}
	var err error
	intArg := func(key string, min int64, max int64) (int64, bool) {
		v, ok := args[key]
		if !ok || err != nil {
			return 0, false
		}
		n, isInt := asInt(v)
		if !isInt || n < min || n > max {
			err = bad(key, v, "is not an integer in range")
			return 0, false
		}
		return n, true
	}
	if n, ok := intArg("x-message-ttl", 0, math.MaxUint32); ok {
		a.ttl, a.hasTTL = time.Duration(n)*time.Millisecond, true
	}
	if n, ok := intArg("x-expires", 1, math.MaxUint32); ok {
		a.expires = time.Duration(n) * time.Millisecond
	}
	if n, ok := intArg("x-max-length", 0, math.MaxInt64); ok {
		a.maxLen = n
	}
	if n, ok := intArg("x-max-length-bytes", 0, math.MaxInt64); ok {
		a.maxBytes = n
	}
	if err != nil {
		return a, err
	}
	if v, ok := args["x-overflow"]; ok {
		s, _ := asString(v)
		if a.overflow, ok = overflowNames[s]; !ok {
			return a, bad("x-overflow", v, "is not drop-head, reject-publish or reject-publish-dlx")
		}
	}
	if v, ok := args["x-dead-letter-exchange"]; ok {
		if a.dlx, a.hasDLX = asString(v); !a.hasDLX {
			return a, bad("x-dead-letter-exchange", v, "is not a string")
		}
	}
	if v, ok := args["x-dead-letter-routing-key"]; ok {
		if a.dlk, a.hasDLK = asString(v); !a.hasDLK {
			return a, bad("x-dead-letter-routing-key", v, "is not a string")
		}
		if !a.hasDLX {
			return a, bad("x-dead-letter-routing-key", v, "requires x-dead-letter-exchange")
		}
	}
	if v, ok := args["x-single-active-consumer"]; ok {
		if a.sac, ok = v.(bool); !ok {
			return a, bad("x-single-active-consumer", v, "is not a boolean")
		}
	}
	if v, ok := args["x-queue-mode"]; ok {
		if s, _ := asString(v); s != "default" && s != "lazy" {
			return a, bad("x-queue-mode", v, "is not default or lazy")
		}
	}
	return a, parseQueueType(&a, args, opts, bad)
}

// parseQueueType accepts x-queue-type classic and quorum as hints: both are
// served by the same queue here, but quorum keeps RabbitMQ's constraints.
func parseQueueType(a *queueArgs, args Table, opts QueueOptions, bad func(string, any, string) error) error {
	v, ok := args["x-queue-type"]
	if !ok {
		return nil
	}
	s, _ := asString(v)
	switch s {
	case "classic":
	case "quorum":
		if !opts.Durable || opts.Exclusive || opts.AutoDelete {
			return bad("x-queue-type", v, "requires a durable, non-exclusive, non-auto-delete queue")
		}
	default:
		return bad("x-queue-type", v, "is not classic or quorum")
	}
	a.queueType = s
	return nil
}
