package broker

import (
	"fmt"
	"slices"
	"strings"

	"github.com/troupehq/troupe/broker/internal/topic"
)

// ExchangeKind is an exchange type. The zero value is invalid.
type ExchangeKind uint8

// Exchange types of AMQP 0-9-1 and RabbitMQ.
const (
	Direct ExchangeKind = iota + 1
	Fanout
	Topic
	Headers
)

var kindNames = [...]string{Direct: "direct", Fanout: "fanout", Topic: "topic", Headers: "headers"}

func (k ExchangeKind) String() string {
	if k >= Direct && k <= Headers {
		return kindNames[k]
	}
	return fmt.Sprintf("ExchangeKind(%d)", uint8(k))
}

func (k ExchangeKind) valid() bool { return k >= Direct && k <= Headers }

// ParseExchangeKind parses "direct", "fanout", "topic" or "headers"; any
// other name is a 503 COMMAND_INVALID error, as RabbitMQ answers an unknown
// exchange type.
func ParseExchangeKind(s string) (ExchangeKind, error) {
	for k := Direct; k <= Headers; k++ {
		if kindNames[k] == s {
			return k, nil
		}
	}
	return 0, newError(CommandInvalid, "unknown exchange type '%s'", s)
}

// dest is a binding's destination: a queue or an exchange.
type dest struct {
	q *queue
	x *exchange
}

func (d dest) String() string {
	if d.q != nil {
		return "queue '" + d.q.name + "'"
	}
	return "exchange '" + d.x.name + "'"
}

// binding is one AMQP binding; its id is unique in its vhost.
type binding struct {
	id   string
	src  *exchange
	dst  dest
	key  string
	args Table
}

func bindingID(src string, d dest, key string, args Table) string {
	kind := "q"
	name := ""
	if d.q != nil {
		name = d.q.name
	} else {
		kind, name = "x", d.x.name
	}
	return fmt.Sprintf("%q>%s%q:%q%s", src, kind, name, key, args.canonical())
}

type routeKey struct {
	key string
	d   dest
}

// exchange routes messages to its bindings' destinations. Every field is
// guarded by the vhost's mu.
type exchange struct {
	name       string
	kind       ExchangeKind
	durable    bool
	autoDelete bool
	internal   bool
	args       Table
	alternate  string
	isDefault  bool

	out         map[string]*binding // bindings with this exchange as source
	in          map[string]*binding // bindings with this exchange as destination
	hadBindings bool

	// Routing indexes, by kind. refs counts the bindings behind one
	// (key, dest) route, so that bindings differing only by arguments
	// route once and unbind cleanly.
	refs    map[routeKey]int
	direct  map[string][]dest
	fanout  []dest
	topic   topic.Trie[dest]
	headers []*headersBinding
}

func newExchange(name string, kind ExchangeKind, opts ExchangeOptions) *exchange {
	x := &exchange{
		name:       name,
		kind:       kind,
		durable:    opts.Durable,
		autoDelete: opts.AutoDelete,
		internal:   opts.Internal,
		args:       opts.Args,
		out:        make(map[string]*binding),
		in:         make(map[string]*binding),
		refs:       make(map[routeKey]int),
	}
	x.alternate, _ = asString(opts.Args["alternate-exchange"])
	if kind == Direct {
		x.direct = make(map[string][]dest)
	}
	return x
}

func (x *exchange) validateArgs() error {
	if v, ok := x.args["alternate-exchange"]; ok {
		if _, ok := asString(v); !ok {
			return newError(PreconditionFailed, "invalid arg 'alternate-exchange' for %s: not a string", vhostExchange("", x.name))
		}
	}
	return nil
}

// equivalent checks a redeclaration against x, as RabbitMQ does.
func (x *exchange) equivalent(vh string, kind ExchangeKind, opts ExchangeOptions) error {
	where := vhostExchange(vh, x.name)
	switch {
	case kind != x.kind:
		return newError(PreconditionFailed, "inequivalent arg 'type' for %s: received '%s' but current is '%s'", where, kind, x.kind)
	case opts.Durable != x.durable:
		return newError(PreconditionFailed, "inequivalent arg 'durable' for %s: received '%t' but current is '%t'", where, opts.Durable, x.durable)
	case opts.AutoDelete != x.autoDelete:
		return newError(PreconditionFailed, "inequivalent arg 'auto_delete' for %s: received '%t' but current is '%t'", where, opts.AutoDelete, x.autoDelete)
	case opts.Internal != x.internal:
		return newError(PreconditionFailed, "inequivalent arg 'internal' for %s: received '%t' but current is '%t'", where, opts.Internal, x.internal)
	}
	a, aok := opts.Args["alternate-exchange"]
	b, bok := x.args["alternate-exchange"]
	if aok != bok || (aok && !valuesEqual(a, b)) {
		return newError(PreconditionFailed, "inequivalent arg 'alternate-exchange' for %s: received '%v' but current is '%v'", where, a, b)
	}
	return nil
}

// addRoute indexes b for routing. Lock should be held (vhost.mu).
func (x *exchange) addRoute(b *binding) error {
	if x.kind == Headers {
		hb, err := newHeadersBinding(b)
		if err != nil {
			return err
		}
		x.headers = append(x.headers, hb)
		return nil
	}
	rk := x.routeKey(b)
	x.refs[rk]++
	if x.refs[rk] > 1 {
		return nil
	}
	switch x.kind {
	case Direct:
		x.direct[rk.key] = append(x.direct[rk.key], rk.d)
	case Fanout:
		x.fanout = append(x.fanout, rk.d)
	case Topic:
		x.topic.Add(rk.key, rk.d)
	}
	return nil
}

// removeRoute undoes addRoute. Lock should be held (vhost.mu).
func (x *exchange) removeRoute(b *binding) {
	if x.kind == Headers {
		x.headers = slices.DeleteFunc(x.headers, func(h *headersBinding) bool { return h.b == b })
		return
	}
	rk := x.routeKey(b)
	x.refs[rk]--
	if x.refs[rk] > 0 {
		return
	}
	delete(x.refs, rk)
	isD := func(d dest) bool { return d == rk.d }
	switch x.kind {
	case Direct:
		ds := slices.DeleteFunc(x.direct[rk.key], isD)
		if len(ds) == 0 {
			delete(x.direct, rk.key)
		} else {
			x.direct[rk.key] = ds
		}
	case Fanout:
		x.fanout = slices.DeleteFunc(x.fanout, isD)
	case Topic:
		x.topic.Remove(rk.key, rk.d)
	}
}

func (x *exchange) routeKey(b *binding) routeKey {
	if x.kind == Fanout {
		return routeKey{d: b.dst}
	}
	return routeKey{key: b.key, d: b.dst}
}

// match calls fn for each destination whose binding matches the message.
// Lock should be held (vhost.mu, read).
func (x *exchange) match(key string, headers Table, fn func(dest)) {
	switch x.kind {
	case Direct:
		for _, d := range x.direct[key] {
			fn(d)
		}
	case Fanout:
		for _, d := range x.fanout {
			fn(d)
		}
	case Topic:
		x.topic.Match(key, fn)
	case Headers:
		for _, h := range x.headers {
			if h.matches(headers) {
				fn(h.b.dst)
			}
		}
	}
}

// headersMode is a headers binding's x-match.
type headersMode uint8

const (
	matchAll headersMode = iota + 1
	matchAny
	matchAllWithX
	matchAnyWithX
)

type headersBinding struct {
	b    *binding
	mode headersMode
	// args are the binding arguments that take part in matching.
	args Table
}

func newHeadersBinding(b *binding) (*headersBinding, error) {
	h := &headersBinding{b: b, mode: matchAll, args: Table{}}
	if v, ok := b.args["x-match"]; ok {
		s, _ := asString(v)
		switch s {
		case "all":
			h.mode = matchAll
		case "any":
			h.mode = matchAny
		case "all-with-x":
			h.mode = matchAllWithX
		case "any-with-x":
			h.mode = matchAnyWithX
		default:
			return nil, newError(PreconditionFailed, "invalid x-match field value %v; expected all, any, all-with-x, or any-with-x", v)
		}
	}
	withX := h.mode == matchAllWithX || h.mode == matchAnyWithX
	for k, v := range b.args {
		if k == "x-match" || (!withX && strings.HasPrefix(k, "x-")) {
			continue
		}
		h.args[k] = v
	}
	return h, nil
}

// matches implements RabbitMQ's headers exchange: a binding argument whose
// value is void (nil) matches on the header's presence alone.
func (h *headersBinding) matches(headers Table) bool {
	all := h.mode == matchAll || h.mode == matchAllWithX
	if len(h.args) == 0 {
		return all
	}
	for k, want := range h.args {
		got, ok := headers[k]
		hit := ok && (want == nil || valuesEqual(want, got))
		if all && !hit {
			return false
		}
		if !all && hit {
			return true
		}
	}
	return all
}
