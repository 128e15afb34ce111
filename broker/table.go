package broker

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Table is an AMQP 0-9-1 field table: message headers and the arguments of
// declarations and bindings. Values are one of: nil, bool, int8, int16,
// int32, int64, int, uint8, uint16, uint32, uint64, float32, float64, string,
// []byte, time.Time, Decimal, Table, []any (of these types).
//
// A Table handed to the broker must not be modified afterwards: the broker
// keeps it and shares it between queues.
type Table map[string]any

// Decimal is the AMQP decimal value: Value / 10^Scale.
type Decimal struct {
	Scale uint8
	Value int32
}

// Validate reports the first value whose type a Table cannot hold.
func (t Table) Validate() error {
	for k, v := range t {
		if err := validateValue(v); err != nil {
			return fmt.Errorf("table key %q: %w", k, err)
		}
	}
	return nil
}

func validateValue(v any) error {
	switch v := v.(type) {
	case nil, bool, int8, int16, int32, int64, int, uint8, uint16, uint32, uint64,
		float32, float64, string, []byte, time.Time, Decimal:
		return nil
	case Table:
		return v.Validate()
	case []any:
		for i, e := range v {
			if err := validateValue(e); err != nil {
				return fmt.Errorf("array index %d: %w", i, err)
			}
		}
		return nil
	default:
		return fmt.Errorf("unsupported field value type %T", v)
	}
}

// clone returns a copy of t that can be changed without touching t. Nested
// tables and arrays are copied too.
func (t Table) clone() Table {
	if t == nil {
		return Table{}
	}
	c := make(Table, len(t)+2)
	for k, v := range t {
		c[k] = cloneValue(v)
	}
	return c
}

func cloneValue(v any) any {
	switch v := v.(type) {
	case Table:
		return v.clone()
	case []any:
		c := make([]any, len(v))
		for i, e := range v {
			c[i] = cloneValue(e)
		}
		return c
	default:
		return v
	}
}

// canonical is a deterministic text form of t: equal tables give equal
// strings. Bindings are identified by it.
func (t Table) canonical() string {
	if len(t) == 0 {
		return ""
	}
	var b strings.Builder
	writeCanonical(&b, t)
	return b.String()
}

func writeCanonical(b *strings.Builder, v any) {
	switch v := v.(type) {
	case Table:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b.WriteByte('{')
		for _, k := range keys {
			b.WriteString(strconv.Quote(k))
			b.WriteByte(':')
			writeCanonical(b, v[k])
			b.WriteByte(',')
		}
		b.WriteByte('}')
	case []any:
		b.WriteByte('[')
		for _, e := range v {
			writeCanonical(b, e)
			b.WriteByte(',')
		}
		b.WriteByte(']')
	case string:
		b.WriteString("s" + strconv.Quote(v))
	case []byte:
		b.WriteString("x" + strconv.Quote(string(v)))
	default:
		fmt.Fprintf(b, "%T(%v)", v, v)
	}
}

// valuesEqual compares two field values the way RabbitMQ compares header
// values and arguments: integers by value whatever their width, floats by
// value, strings and byte arrays by bytes, tables and arrays deeply.
func valuesEqual(a, b any) bool {
	if ai, ok := asInt(a); ok {
		bi, ok := asInt(b)
		return ok && ai == bi
	}
	if af, ok := asFloat(a); ok {
		bf, ok := asFloat(b)
		return ok && af == bf
	}
	if as, ok := asBytes(a); ok {
		bs, ok := asBytes(b)
		return ok && bytes.Equal(as, bs)
	}
	switch a := a.(type) {
	case nil:
		return b == nil
	case bool:
		bb, ok := b.(bool)
		return ok && a == bb
	case time.Time:
		bt, ok := b.(time.Time)
		return ok && a.Equal(bt)
	case Decimal:
		bd, ok := b.(Decimal)
		return ok && a == bd
	case Table:
		bt, ok := b.(Table)
		return ok && tablesEqual(a, bt)
	case []any:
		ba, ok := b.([]any)
		return ok && slices.EqualFunc(a, ba, valuesEqual)
	}
	return false
}

func tablesEqual(a, b Table) bool {
	if len(a) != len(b) {
		return false
	}
	for k, av := range a {
		bv, ok := b[k]
		if !ok || !valuesEqual(av, bv) {
			return false
		}
	}
	return true
}

// asInt returns an integer value of any width as int64. Unsigned values
// above math.MaxInt64 are not integers for this purpose.
func asInt(v any) (int64, bool) {
	switch v := v.(type) {
	case int8:
		return int64(v), true
	case int16:
		return int64(v), true
	case int32:
		return int64(v), true
	case int64:
		return v, true
	case int:
		return int64(v), true
	case uint8:
		return int64(v), true
	case uint16:
		return int64(v), true
	case uint32:
		return int64(v), true
	case uint64:
		if v > math.MaxInt64 {
			return 0, false
		}
		return int64(v), true
	}
	return 0, false
}

func asFloat(v any) (float64, bool) {
	switch v := v.(type) {
	case float32:
		return float64(v), true
	case float64:
		return v, true
	}
	return 0, false
}

func asBytes(v any) ([]byte, bool) {
	switch v := v.(type) {
	case string:
		return []byte(v), true
	case []byte:
		return v, true
	}
	return nil, false
}

func asString(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case []byte:
		return string(v), true
	}
	return "", false
}
