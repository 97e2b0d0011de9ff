package localratelimit

import (
	"sync"
	"time"
)

// TokenBucket is envoy.type.v3.TokenBucket: the bucket holds at most
// MaxTokens and starts full; every whole FillInterval since the last fill
// adds TokensPerFill. Each request takes one token.
type TokenBucket struct {
	MaxTokens     uint32        // > 0
	TokensPerFill uint32        // > 0; Envoy's default is 1
	FillInterval  time.Duration // >= 50ms, as Envoy requires
}

// bucket is the state of one TokenBucket. Refills are computed from the
// clock when a token is taken, so no goroutine or timer exists. It is safe
// for concurrent use; mu is held for a few arithmetic operations only.
type bucket struct {
	tb  TokenBucket
	now func() time.Time

	// mu guards the fields below.
	mu       sync.Mutex
	tokens   uint32
	lastFill time.Time // the fill boundary tokens was last brought up to
}

func newBucket(tb TokenBucket, now func() time.Time) *bucket {
	return &bucket{tb: tb, now: now, tokens: tb.MaxTokens, lastFill: now()}
}

// take consumes one token. When none is left it returns false and the
// time until the next fill (at least 1ns).
func (b *bucket) take() (ok bool, wait time.Duration) {
	t := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if el := t.Sub(b.lastFill); el >= b.tb.FillInterval {
		n := uint64(el / b.tb.FillInterval)
		b.lastFill = b.lastFill.Add(time.Duration(n) * b.tb.FillInterval)
		add := n * uint64(b.tb.TokensPerFill)
		if room := uint64(b.tb.MaxTokens - b.tokens); add > room {
			add = room
		}
		b.tokens += uint32(add)
	}
	if b.tokens > 0 {
		b.tokens--
		return true, 0
	}
	wait = b.tb.FillInterval - t.Sub(b.lastFill)
	if wait <= 0 {
		wait = 1
	}
	return false, wait
}
