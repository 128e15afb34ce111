package broker

import (
	"log/slog"
	"time"
)

// deadLetter is a message on its way to a dead-letter exchange. They are
// collected under a queue's lock and routed after it is released.
type deadLetter struct {
	exchange string
	msg      *Message
}

type deadLetters []deadLetter

// deadLetterLocked removes e from the queue for good: to the queue's
// dead-letter exchange when it has one, else dropped. Lock should be held.
func (q *queue) deadLetterLocked(e entry, why removal, dls *deadLetters) {
	q.removed[why]++
	if !q.qa.hasDLX {
		return
	}
	*dls = append(*dls, deadLetter{
		exchange: q.qa.dlx,
		msg:      q.deadLettered(e.msg, removalReasons[why], time.Now()),
	})
}

// deadLettered returns the message that q dead-letters for m, with
// RabbitMQ's x-death header: a list of tables, newest first, one per
// (queue, reason), each with count, reason, queue, time, exchange,
// routing-keys and, when m had one, original-expiration. The per-message
// expiration is removed so that the dead letter does not expire again. The
// body is shared with m, not copied.
func (q *queue) deadLettered(m *Message, reason string, now time.Time) *Message {
	var props Properties
	if p := m.props(); p != nil {
		props = *p
	}
	h := props.Headers.clone()
	deaths, _ := h["x-death"].([]any)
	now = now.UTC().Truncate(time.Second) // AMQP timestamps are seconds
	found := -1
	for i, d := range deaths {
		t, ok := d.(Table)
		if !ok {
			continue
		}
		tq, _ := asString(t["queue"])
		tr, _ := asString(t["reason"])
		if tq == q.name && tr == reason {
			found = i
			break
		}
	}
	if found >= 0 {
		t := deaths[found].(Table)
		n, _ := asInt(t["count"])
		t["count"] = n + 1
		t["time"] = now
		deaths = append(append([]any{t}, deaths[:found]...), deaths[found+1:]...)
	} else {
		t := Table{
			"count":        int64(1),
			"reason":       reason,
			"queue":        q.name,
			"time":         now,
			"exchange":     m.Exchange(),
			"routing-keys": []any{m.RoutingKey()},
		}
		if props.Expiration != "" {
			t["original-expiration"] = props.Expiration
		}
		deaths = append([]any{t}, deaths...)
	}
	h["x-death"] = deaths
	if _, ok := h["x-first-death-reason"]; !ok {
		h["x-first-death-reason"] = reason
		h["x-first-death-queue"] = q.name
		h["x-first-death-exchange"] = m.Exchange()
	}
	props.Expiration = ""
	props.Headers = h
	key := m.RoutingKey()
	if q.qa.hasDLK {
		key = q.qa.dlk
	}
	return newMessage(q.qa.dlx, key, &props, m.Body)
}

// deadLetterCycle reports whether delivering a dead letter to the queue
// named qname closes a cycle with no rejection in it. As RabbitMQ's
// rabbit_dead_letter:is_cycle, only the deaths since the message last died
// in qname count (x-death is newest first): a rejection long ago does not
// make a loop of expiries legitimate. RabbitMQ drops such messages rather
// than let them circulate for ever.
func deadLetterCycle(m *Message, qname string) bool {
	deaths, _ := m.Properties().Headers["x-death"].([]any)
	for _, d := range deaths {
		t, ok := d.(Table)
		if !ok {
			continue
		}
		if r, _ := asString(t["reason"]); r == "rejected" {
			return false
		}
		if tq, _ := asString(t["queue"]); tq == qname {
			return true
		}
	}
	return false
}

// flush routes dead letters to their exchanges. Dead-lettering can cascade
// (a dead-letter queue that overflows dead-letters in turn); each round
// handles the letters the previous one produced. Cycles end because a
// letter is never delivered to a queue it already died in without a
// rejection on the way.
func (vh *vhost) flush(dls deadLetters) {
	for len(dls) > 0 {
		var next deadLetters
		vh.mu.RLock()
		for _, dl := range dls {
			x, ok := vh.exchanges[dl.exchange]
			if !ok {
				vh.b.opts.logger.Debug("dead letter dropped: no such exchange",
					slog.String("vhost", vh.name), slog.String("exchange", dl.exchange))
				continue
			}
			var buf [8]*queue
			for _, q := range vh.route(x, dl.msg, buf[:0]) {
				if !deadLetterCycle(dl.msg, q.name) {
					q.enqueue(dl.msg, &next)
				}
			}
		}
		vh.mu.RUnlock()
		dls = next
	}
}
