package handlers

import (
	"context"
	"sync"
)

// IdempotencyStore records which (consumer, key) pairs were handled. The
// durable stores (SQLite, PostgreSQL) come with the outbox, where the record
// commits in the same transaction as the handler's effects; MemoryStore is
// for tests and for handlers whose effects are idempotent by themselves.
type IdempotencyStore interface {
	// Seen reports whether key was recorded for consumer.
	Seen(ctx context.Context, consumer, key string) (bool, error)
	// Record records key for consumer; recording twice is harmless.
	Record(ctx context.Context, consumer, key string) error
}

// MemoryStore is an in-memory IdempotencyStore. It forgets everything when
// the process ends: use it in tests. Safe for concurrent use.
type MemoryStore struct {
	mu   sync.Mutex
	seen map[[2]string]struct{}
}

var _ IdempotencyStore = (*MemoryStore)(nil)

// Seen implements IdempotencyStore.
func (s *MemoryStore) Seen(_ context.Context, consumer, key string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.seen[[2]string{consumer, key}]
	return ok, nil
}

// Record implements IdempotencyStore.
func (s *MemoryStore) Record(_ context.Context, consumer, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = make(map[[2]string]struct{})
	}
	s.seen[[2]string{consumer, key}] = struct{}{}
	return nil
}
