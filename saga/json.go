package saga

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
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
	if dec.More() {
		return nil, errors.New("saga: declaration: data after the JSON object")
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
