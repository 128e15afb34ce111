// Package envelope maps watermill messages to broker messages and back, the
// same way for the bundled broker and for RabbitMQ, so that a message
// published by one transport reads the same through the other.
//
// A watermill message's UUID travels in the header "_watermill_message_uuid"
// (watermill-amqp's convention) and in the AMQP message-id property; its
// metadata travels as string headers. Headers that are not strings — the
// broker's own x-death list, numbers, timestamps — come back as metadata
// rendered as text (numbers in decimal, times in RFC 3339, tables and lists
// in JSON), never as an error: a message a consumer cannot read would
// otherwise loop or be lost.
package envelope

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// UUIDHeader carries the watermill message UUID.
const UUIDHeader = "_watermill_message_uuid"

// Headers returns the AMQP headers for msg: its metadata plus its UUID.
func Headers(msg *message.Message) map[string]any {
	h := make(map[string]any, len(msg.Metadata)+1)
	for k, v := range msg.Metadata {
		h[k] = v
	}
	h[UUIDHeader] = msg.UUID
	return h
}

// Message rebuilds a watermill message from AMQP headers, the message-id
// property and the body. The UUID comes from UUIDHeader, else from
// messageID.
func Message(headers map[string]any, messageID string, body []byte) *message.Message {
	uuid, _ := headers[UUIDHeader].(string)
	if uuid == "" {
		uuid = messageID
	}
	msg := message.NewMessage(uuid, body)
	if _, ok := headers[UUIDHeader]; !ok || len(headers) > 2 {
		// NewMessage's empty map takes one entry without growing; size it
		// for more.
		msg.Metadata = make(message.Metadata, len(headers))
	}
	for k, v := range headers {
		if k == UUIDHeader {
			continue
		}
		msg.Metadata[k] = Text(v)
	}
	return msg
}

// Text renders an AMQP field value as metadata text.
func Text(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case []byte:
		return string(v)
	case bool:
		return strconv.FormatBool(v)
	case time.Time:
		return v.UTC().Format(time.RFC3339)
	case int8, int16, int32, int64, int, uint8, uint16, uint32, uint64:
		return fmt.Sprint(v)
	case float32:
		return strconv.FormatFloat(float64(v), 'g', -1, 32)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
	b, err := json.Marshal(jsonable(v))
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// jsonable turns AMQP tables and arrays (of any named map or slice type)
// into plain maps and slices with text leaves where JSON would lose them.
func jsonable(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = jsonable(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = jsonable(e)
		}
		return out
	case time.Time:
		return v.UTC().Format(time.RFC3339)
	case []byte:
		return string(v)
	}
	if m, ok := asMap(v); ok {
		return jsonable(m)
	}
	if s, ok := asSlice(v); ok {
		return jsonable(s)
	}
	return v
}

// Death is one entry of the broker's x-death header: the message died in
// Queue for Reason Count times.
type Death struct {
	Queue       string    `json:"queue"`
	Reason      string    `json:"reason"`
	Count       int64     `json:"count"`
	Exchange    string    `json:"exchange"`
	RoutingKeys []string  `json:"routing-keys"`
	Time        time.Time `json:"time"`
}

// Deaths parses the x-death metadata of a message received through a
// transport; nil when there is none.
func Deaths(msg *message.Message) ([]Death, error) {
	raw := msg.Metadata.Get("x-death")
	if raw == "" {
		return nil, nil
	}
	var ds []Death
	if err := json.Unmarshal([]byte(raw), &ds); err != nil {
		return nil, fmt.Errorf("envelope: x-death metadata: %w", err)
	}
	return ds, nil
}
