package saga

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/troupehq/troupe/internal/strictjson"
)

// ParseJSON decodes a declaration from its JSON form (the Saga type's
// field tags: "name", "start", "steps", ...) strictly, rejecting unknown
// fields and trailing data, and validates it: a declaration file that
// loads is a valid one. Safe for concurrent use.
func ParseJSON(data []byte) (*Saga, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var s Saga
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("saga: declaration: %w", err)
	}
	if err := strictjson.End(dec); err != nil {
		return nil, fmt.Errorf("saga: declaration: %w", err)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// ReadFile reads and parses a declaration file (see ParseJSON).
func ReadFile(path string) (*Saga, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, err := ParseJSON(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// MarshalIndent returns the declaration's JSON form, indented, with a
// final newline: the content of a declaration file. Read-only.
func (s *Saga) MarshalIndent() ([]byte, error) {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// The JSON form writes deadlines as Go durations ("2m0s"), not as
// nanoseconds.

// MarshalJSON encodes the saga with its deadline as a duration string.
func (s Saga) MarshalJSON() ([]byte, error) {
	type plain Saga
	return json.Marshal(struct {
		plain
		Deadline string `json:"deadline,omitempty"`
	}{plain(s), durationText(s.Deadline)})
}

// UnmarshalJSON decodes a saga strictly (unknown fields are errors), its
// deadline written as a duration string ("2m", "90s").
func (s *Saga) UnmarshalJSON(b []byte) error {
	type plain Saga
	aux := struct {
		*plain
		Deadline string `json:"deadline,omitempty"`
	}{plain: (*plain)(s)}
	if err := strictJSON(b, &aux); err != nil {
		return err
	}
	return parseDuration(aux.Deadline, &s.Deadline)
}

// MarshalJSON encodes the step with its deadline as a duration string.
func (st Step) MarshalJSON() ([]byte, error) {
	type plain Step
	return json.Marshal(struct {
		plain
		Deadline string `json:"deadline,omitempty"`
	}{plain(st), durationText(st.Deadline)})
}

// UnmarshalJSON decodes a step strictly, its deadline a duration string.
func (st *Step) UnmarshalJSON(b []byte) error {
	type plain Step
	aux := struct {
		*plain
		Deadline string `json:"deadline,omitempty"`
	}{plain: (*plain)(st)}
	if err := strictJSON(b, &aux); err != nil {
		return err
	}
	return parseDuration(aux.Deadline, &st.Deadline)
}

func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func durationText(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

func parseDuration(s string, d *time.Duration) error {
	if s == "" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("deadline: %w", err)
	}
	*d = v
	return nil
}
